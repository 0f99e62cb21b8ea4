"""`tdmpc-ros bench intake`: the learner node's intake under a stream of transitions, measured from outside.

Starts a learner node (its own process) on synthetic demos of the chosen observation size, waits for its first
update so training runs throughout, then publishes `--rate` transitions/s for `--seconds` from `--arms`
publishers (one per simulated controller, each running its own episodes of `--episode-steps` steps) and
reports: transitions published; stored and lost as the learner counts them (LearnerProgress, /diagnostics for
the breakdown); messages in its bags after a clean shutdown; the learner's CPU (% of one core over the
stream, training included) and resident memory.
"""
from __future__ import annotations

import argparse
import array
import json
import os
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path

RSS_EVERY_S = 0.5
SETTLE_S = 30.0  # after the stream: how long the learner may take to work off its queue


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rate", type=float, default=1000.0, help="transitions/s, all arms together")
    parser.add_argument("--seconds", type=float, default=60.0, help="how long to stream")
    parser.add_argument("--obs-dim", type=int, default=0, help="observation size (0: the task's)")
    parser.add_argument("--arms", type=int, default=1, help="publishers, one per simulated controller")
    parser.add_argument("--episode-steps", type=int, default=50, help="steps per episode (the last truncated)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (s)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def synthetic_demos(folder: Path, obs_dim: int, action_dim: int, episodes: int = 4, steps: int = 50) -> None:
    """Random episodes of the right sizes: the learner trains on them, what they teach does not matter here."""
    import numpy as np

    from tdmpc_ros.data.bags import write_transition_bag
    from tdmpc_ros.data.episode import Episode

    rng = np.random.default_rng(0)
    for i in range(episodes):
        write_transition_bag(folder / f"demo_{i}", [Episode(
            i, rng.normal(size=(steps + 1, obs_dim)), rng.uniform(-1, 1, (steps, action_dim)),
            -rng.random(steps), truncated=True)])


def run(args: argparse.Namespace) -> int:
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from domain_coordinator import domain_id
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.subscription import RCLError

    from tdmpc_ros import topics
    from tdmpc_ros.cli.bench_soak import count_bag_messages, rss_mb
    from tdmpc_ros.cli.launch import node_command
    from tdmpc_ros.config import default_config_path, load_config
    from tdmpc_ros.launch_spec import NodeLaunch
    from tdmpc_ros.msg import LearnerProgress, Transition
    from tdmpc_ros.nodes import qos

    cfg = load_config(default_config_path())  # what the learner runs
    obs_dim, action_dim = args.obs_dim or cfg.task.obs_dim, cfg.task.action_dim
    if not 1 <= args.episode_steps <= cfg.task.max_episode_steps:
        raise SystemExit(f"--episode-steps must be within 1..task.max_episode_steps ({cfg.task.max_episode_steps})")
    with tempfile.TemporaryDirectory() as tmp, domain_id() as domain:
        demos, run_dir, log_path = Path(tmp) / "demos", Path(tmp) / "run", Path(tmp) / "learner.log"
        synthetic_demos(demos, obs_dim, action_dim)
        spec = NodeLaunch("learner", "learner_node", required=True, parameters={
            "model.obs_dim": obs_dim, "learner.run_dir": str(run_dir), "learner.demos": [str(demos)],
            "learner.pretrain_updates": 20, "learner.publish_every": 200})
        env = dict(os.environ, ROS_DOMAIN_ID=str(domain), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
                   PYTHONUNBUFFERED="1")
        with open(log_path, "w") as log:
            proc = subprocess.Popen(node_command(spec, str(default_config_path())), env=env, stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        progress: list[LearnerProgress] = []
        diag: dict[str, str] = {}

        def on_diag(msg) -> None:
            for item in msg.status:
                if item.name.endswith("tdmpc_learner"):
                    diag.clear()
                    diag.update({kv.key: kv.value for kv in item.values})

        def failed(what: str) -> RuntimeError:
            return RuntimeError(f"{what}; learner log:\n" + log_path.read_text()[-3000:])

        rclpy.init(domain_id=domain)
        node = rclpy.create_node("bench_intake")
        pubs = [node.create_publisher(Transition, topics.TRANSITIONS, qos.TRANSITIONS) for _ in range(args.arms)]
        node.create_subscription(LearnerProgress, topics.LEARNER_PROGRESS, progress.append, 10)
        node.create_subscription(DiagnosticArray, topics.DIAGNOSTICS, on_diag, 10)
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        spinner = threading.Thread(target=executor.spin, daemon=True)
        spinner.start()

        def wait_for(predicate, timeout: float) -> bool:
            deadline = time.monotonic() + timeout
            while not predicate():
                if proc.poll() is not None:
                    raise failed("the learner exited")
                if time.monotonic() > deadline:
                    return False
                time.sleep(0.05)
            return True

        code = None
        try:
            # the first update compiles (about a minute from a cold cache): stream once training runs
            if not wait_for(lambda: progress and progress[-1].updates > 0 and all(
                    p.get_subscription_count() for p in pubs), 600):
                raise failed("the learner never trained")
            updates0, cpu0, start = progress[-1].updates, cpu_seconds(proc.pid), time.monotonic()
            rss = [rss_mb(proc.pid)]
            published, refused, next_rss = 0, 0, start
            total = int(args.rate * args.seconds)
            messages = [Transition(observation=array.array("f", [0.1] * obs_dim),
                                   next_observation=array.array("f", [0.2] * obs_dim),
                                   action=array.array("f", [0.0] * action_dim), reward=-0.5)
                        for _ in range(args.arms)]  # one per arm, refilled for each step
            steps = [0] * args.arms
            episodes = [arm << 32 for arm in range(args.arms)]  # each arm its own ids: the bags stay readable
            while published + refused < total:
                now = time.monotonic()
                due = start + (published + refused) / args.rate
                if due > now:
                    time.sleep(due - now)
                arm = published % args.arms
                msg = messages[arm]
                msg.episode_id, msg.step = episodes[arm], steps[arm]
                msg.truncated = steps[arm] == args.episode_steps - 1
                msg.header.stamp = node.get_clock().now().to_msg()
                try:
                    pubs[arm].publish(msg)
                except RCLError:  # DDS backpressure: the learner acknowledged too late; it never got this one
                    refused += 1
                    continue
                published += 1
                steps[arm] += 1
                if msg.truncated:
                    steps[arm], episodes[arm] = 0, episodes[arm] + 1
                if now >= next_rss:
                    next_rss += RSS_EVERY_S
                    rss.append(rss_mb(proc.pid))
            streamed = time.monotonic() - start
            cpu = cpu_seconds(proc.pid) - cpu0
            updates = progress[-1].updates - updates0
            # (a loss at the very end would show only once a later message arrives: "unaccounted" then)
            wait_for(lambda: progress[-1].stored_transitions + progress[-1].lost_transitions >= published, SETTLE_S)
            settled = time.monotonic() - start - streamed
            rss.append(rss_mb(proc.pid))
            last = progress[-1]
            if not wait_for(lambda: int(diag.get("transitions_stored", -1)) == last.stored_transitions, 10):
                raise failed("no diagnostics after the stream")
            counts = {k: int(diag[f"transitions_{k}"]) for k in ("received", "missed", "rejected", "cut")}
            queue_depth = int(diag["queue_depth"])
        finally:
            executor.shutdown()
            node.destroy_node()
            rclpy.try_shutdown()
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
                try:
                    code = proc.wait(60)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        in_bags = count_bag_messages(run_dir / "online")
    rss = [r for r in rss if r is not None]
    result = {
        "rate": args.rate, "seconds": args.seconds, "obs_dim": obs_dim, "arms": args.arms,
        "episode_steps": args.episode_steps, "queue_depth": queue_depth,
        "published": published, "published_per_s": round(published / streamed, 1), "publish_refused": refused,
        "received": counts["received"], "stored": last.stored_transitions, "stored_in_bags": in_bags,
        "lost": last.lost_transitions, "lost_breakdown": {k: counts[k] for k in ("missed", "rejected", "cut")},
        "unaccounted": published - last.stored_transitions - last.lost_transitions,
        "settle_s": round(settled, 2),
        "learner_cpu_percent": round(100.0 * cpu / streamed, 1),
        "learner_updates_per_s": round(updates / streamed, 2),
        "learner_rss_mb": {"start": round(rss[0], 1), "max": round(max(rss), 1), "end": round(rss[-1], 1)},
        "exit_code": code,
    }
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))
    return 0 if code == 0 and in_bags == last.stored_transitions else 1
