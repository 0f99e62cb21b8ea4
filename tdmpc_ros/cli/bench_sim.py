"""`tdmpc-ros bench sim`: ArmEnv steps/s, the scripted expert's success rate, and the arm node's
/joint_states rate measured from the header stamps at a subscriber in this process."""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--env-seconds", type=float, default=5.0, help="time stepping ArmEnv with random actions")
    parser.add_argument("--episodes", type=int, default=100, help="scripted-expert episodes (noise 0.1)")
    parser.add_argument("--node-seconds", type=float, default=10.0, help="time measuring /joint_states (0: skip)")
    parser.add_argument("--rate", type=float, default=100.0, help="sim.joint_state_rate_hz for the node")


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from tdmpc_ros.config import load_config
    from tdmpc_ros.sim.expert import expert_episodes
    from tdmpc_ros.sim.env import ArmEnv

    cfg = load_config()
    env = ArmEnv(cfg)
    rng = np.random.default_rng(0)
    env.reset(seed=0)
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < args.env_seconds:
        _, _, terminated, truncated, _ = env.step(rng.uniform(-1, 1, cfg.task.action_dim))
        steps += 1
        if terminated or truncated:
            env.reset()
    env_rate = steps / (time.perf_counter() - start)

    episodes = list(expert_episodes(env, args.episodes, noise=0.1, seed=1))
    env.close()
    result = {"env_steps_per_s": round(env_rate, 1), "physics_steps_per_s": round(env_rate * env.arm.n_substeps),
              "expert_episodes": args.episodes,
              "expert_success_rate": float(np.mean([e.success for e in episodes])),
              "expert_mean_return": round(float(np.mean([e.episode_return for e in episodes])), 3),
              "expert_mean_steps": round(float(np.mean([len(e) for e in episodes])), 1)}
    if args.node_seconds > 0:
        result.update(joint_state_rate(args.rate, args.node_seconds))
    print(json.dumps(result))
    return 0


def joint_state_rate(rate_hz: float, seconds: float) -> dict:
    """Start the arm node in real time and measure its /joint_states from their header stamps."""
    import numpy as np
    import rclpy
    from domain_coordinator import domain_id
    from sensor_msgs.msg import JointState

    from tdmpc_ros import topics
    from tdmpc_ros.config import default_config_path
    from tdmpc_ros.nodes import qos

    with domain_id() as domain:
        env = dict(os.environ, ROS_DOMAIN_ID=str(domain), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST")
        proc = subprocess.Popen([sys.executable, "-m", "tdmpc_ros.nodes.arm_node", "--ros-args", "--params-file",
                                 str(default_config_path()), "-p", f"sim.joint_state_rate_hz:={rate_hz}"],
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        stamps: list[float] = []
        try:
            with rclpy.init(domain_id=domain):
                node = rclpy.create_node("bench_sim")
                node.create_subscription(JointState, topics.JOINT_STATES, lambda m: stamps.append(
                    m.header.stamp.sec + 1e-9 * m.header.stamp.nanosec), qos.STATE)
                deadline = time.monotonic() + 30.0
                while not stamps and time.monotonic() < deadline:
                    rclpy.spin_once(node, timeout_sec=0.1)
                stamps.clear()
                end = time.monotonic() + seconds
                while time.monotonic() < end:
                    rclpy.spin_once(node, timeout_sec=0.05)
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(10)
    if len(stamps) < 2:
        raise SystemExit("bench sim: no /joint_states from the arm node")
    gaps = np.diff(stamps)
    measured = (len(stamps) - 1) / (stamps[-1] - stamps[0])
    return {"joint_states_configured_hz": rate_hz, "joint_states_hz": round(measured, 3),
            "joint_states_rate_error_pct": round(100 * (measured - rate_hz) / rate_hz, 3),
            "joint_states_gap_p50_ms": round(1e3 * float(np.median(gaps)), 3),
            "joint_states_gap_p99_ms": round(1e3 * float(np.percentile(gaps, 99)), 3)}
