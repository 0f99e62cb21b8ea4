"""`tdmpc-ros bench control`: the real controller node against the PyBullet arm node, measured from outside.

Tick period comes from the command messages' DDS timestamps at a subscriber: `publish_period` from their
source timestamps (when the controller handed each command to DDS: its tick period, not self-reported) and
`period` from their receive timestamps (adds delivery, which on a 2-core machine includes waking the
subscriber's DDS thread; the bench's own Python executor delay is in neither). Planning latency and
deadline misses come from the controller's PlannerStatus. The model is a freshly initialised checkpoint of
the chosen preset (planning cost does not depend on the weights).
"""
from __future__ import annotations

import argparse
import io
import json
import math
import os
import tempfile
import time
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rate", type=float, default=20.0, help="control rate (Hz)")
    parser.add_argument("--seconds", type=float, default=60.0, help="measurement time after warm-up")
    parser.add_argument("--preset", default="small")
    parser.add_argument("--backend", choices=["torch", "onnx"], default="torch")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def physics_hz(default: float, rate: float) -> float:
    """The sim steps a whole number of physics steps per control period: the nearest such rate >= default."""
    return rate * math.ceil(default / rate)


def run(args: argparse.Namespace) -> int:
    import numpy as np
    import rclpy
    from domain_coordinator import domain_id
    from std_msgs.msg import Float64MultiArray

    from tdmpc_ros import topics
    from tdmpc_ros.cli.launch import Launcher
    from tdmpc_ros.config import load_config
    from tdmpc_ros.learning.agent import Agent
    from tdmpc_ros.learning.checkpoint import save_checkpoint
    from tdmpc_ros.msg import PlannerStatus
    from tdmpc_ros.nodes import qos

    cfg = load_config(overrides={"model": {"preset": args.preset}})
    with tempfile.TemporaryDirectory() as tmp, domain_id() as domain:
        checkpoint = Path(tmp) / "random.pt"
        save_checkpoint(checkpoint, Agent(cfg), {"updates": 0, "env_steps": 0})
        os.environ.update(ROS_DOMAIN_ID=str(domain), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST")
        log = io.StringIO()
        launcher = Launcher({"model": str(checkpoint), "learn": "false", "backend": args.backend,
                             "device": args.device}, out=log,
                            overrides={"task.control_rate_hz": args.rate, "model.preset": args.preset,
                                       "sim.physics_hz": physics_hz(cfg.sim.physics_hz, args.rate)})
        arrivals: list[int] = []  # ns, DDS receive time at the subscriber
        sources: list[int] = []  # ns, the controller's publish time
        status: list[PlannerStatus] = []
        with rclpy.init(domain_id=domain):
            node = rclpy.create_node("bench_control")
            node.create_subscription(Float64MultiArray, topics.COMMAND_TOPICS["float64_multi_array"],
                                     lambda _msg, info: (arrivals.append(info["received_timestamp"]),
                                                         sources.append(info["source_timestamp"])), qos.STATE)
            node.create_subscription(PlannerStatus, topics.PLANNER_STATUS, status.append, 10)
            launcher.start()
            try:
                deadline = time.monotonic() + 120.0
                controlling = (PlannerStatus.MODE_PLANNING, PlannerStatus.MODE_POLICY_FALLBACK)
                while not (status and status[-1].mode in controlling and status[-1].model_version):
                    rclpy.spin_once(node, timeout_sec=0.1)
                    if time.monotonic() > deadline or launcher.exited_required():
                        raise RuntimeError("controller did not start controlling:\n" + log.getvalue()[-3000:])
                arrivals.clear()
                sources.clear()
                first = status[-1]
                end = time.monotonic() + args.seconds
                while time.monotonic() < end:
                    rclpy.spin_once(node, timeout_sec=0.05)
                last = status[-1]
            finally:
                codes = launcher.shutdown()
                node.destroy_node()

    def period_stats(stamps_ns: list[int]) -> tuple[dict, dict]:
        periods = np.diff(np.asarray(stamps_ns, np.int64)) * 1e-6
        error = np.abs(periods - 1e3 / args.rate)
        return ({"p50": float(np.percentile(periods, 50)), "p99": float(np.percentile(periods, 99)),
                 "max": float(periods.max())},
                {"p50": float(np.percentile(error, 50)), "p99": float(np.percentile(error, 99)),
                 "max": float(error.max())})

    period, error = period_stats(arrivals)
    publish_period, publish_error = period_stats(sources)
    result = {
        "rate_hz": args.rate, "seconds": args.seconds, "preset": args.preset, "backend": args.backend,
        "device": args.device, "ticks": len(arrivals),
        "period_ms": period, "period_error_ms": error,
        "publish_period_ms": publish_period, "publish_period_error_ms": publish_error,
        "plan_ms": {"p50": float(last.plan_ms_p50), "p99": float(last.plan_ms_p99)},
        "deadline_misses": int(last.deadline_misses - first.deadline_misses),
        "exit_codes": codes,
    }
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))
    return 0
