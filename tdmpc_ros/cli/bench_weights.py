"""`tdmpc-ros bench weights`: a checkpoint's hand-off over DDS (model_weights), from publish to verified bytes.

Per preset: an agent's checkpoint after one update (optimiser moments filled: the size a learner writes) is sent
`--repeats` times by a publisher process of its own (the learner node's WeightsPublisher, the same code path) to this
process, which reassembles it with WeightsAssembler as a controller does. Reported: the file's size and pieces;
per model the time from the publish call (file read included) to this process holding the size- and
sha256-verified bytes, the first model (its writer matched on the way) apart from the rest; how long the publish
call blocks its caller (the learner's trainer thread) and until DDS has every piece acknowledged; a late
joiner's wait (a new participant after the last publish, served from the writer's history); the time
checkpoint_from_bytes takes on the bytes; the publisher's resident memory (its writer keeps the newest model).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--presets", nargs="+", default=["small", "5m"], help="model size presets")
    parser.add_argument("--repeats", type=int, default=5, help="models sent per preset (versions 1..N)")
    parser.add_argument("--chunk-bytes", type=int, default=0, help="piece size (0: learner.weights_chunk_bytes)")
    parser.add_argument("--pause", type=float, default=0.5, help="seconds between models")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def publisher_main(argv: list[str]) -> None:
    """The child: sends FILE as versions 1..repeats, one JSON line each; exits when its stdin closes."""
    import rclpy
    from rclpy.duration import Duration

    from tdmpc_ros import topics
    from tdmpc_ros.cli.bench_soak import rss_mb
    from tdmpc_ros.learning.learner import Published
    from tdmpc_ros.nodes.learner_node import WeightsPublisher

    path, sha256, chunk_bytes, repeats, pause = argv[0], argv[1], int(argv[2]), int(argv[3]), float(argv[4])
    rclpy.init()
    node = rclpy.create_node("bench_weights_learner")
    weights = WeightsPublisher(node, chunk_bytes)
    while node.count_subscribers(topics.MODEL_WEIGHTS) == 0:
        time.sleep(0.01)
    for version in range(1, repeats + 1):
        started = time.time()
        weights.publish(Published(version, path, sha256, 0, 0))
        returned = time.time()
        acked = weights.pub.wait_for_all_acked(Duration(seconds=120))
        print(json.dumps({"version": version, "started": started, "publish_s": returned - started,
                          "acked_s": time.time() - started if acked else None, "rss_mb": rss_mb(os.getpid())}),
              flush=True)
        time.sleep(pause)
    sys.stdin.read()
    rclpy.try_shutdown()


class _Receiver:
    """A controller's side: model_weights into a WeightsAssembler; the time each verified model was held."""

    def __init__(self, context, name: str, cfg, depth: int):
        import rclpy
        from rclpy.executors import SingleThreadedExecutor

        from tdmpc_ros import topics
        from tdmpc_ros.learning.weights import WeightsAssembler
        from tdmpc_ros.msg import ModelWeights
        from tdmpc_ros.nodes import qos

        self.assembler = WeightsAssembler(cfg.controller.max_checkpoint_bytes, cfg.controller.weights_timeout_s)
        self.held: dict[int, float] = {}
        self.problems: list[str] = []
        self.model = None
        self.node = rclpy.create_node(name, context=context)
        self.node.create_subscription(ModelWeights, topics.MODEL_WEIGHTS, self.on_piece, qos.model_weights(depth))
        self.executor = SingleThreadedExecutor(context=context)
        self.executor.add_node(self.node)
        threading.Thread(target=self.executor.spin, daemon=True).start()

    def on_piece(self, msg) -> None:
        added = self.assembler.add(msg.version, msg.sha256, msg.total_bytes, msg.chunk_index, msg.chunk_count,
                                   msg.data, time.monotonic())
        self.problems += [added.refused] * bool(added.refused) + list(added.dropped)
        if added.model:
            self.held[added.model.version] = time.time()
            self.model = added.model

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()


def _batch(cfg, horizon: int = 3) -> dict:
    import torch

    b, m = cfg.agent.batch_size, cfg.model
    return {"obs": torch.randn(horizon + 1, b, m.obs_dim), "action": torch.rand(horizon, b, m.action_dim) * 2 - 1,
            "reward": -torch.rand(horizon, b, 1), "terminated": torch.zeros(horizon, b, 1)}


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(1000 * seconds, 1)


def _summary(seconds: list[float | None]) -> dict:
    """p50 and max in ms of the measured ones; `missing` counts those that never completed."""
    done = [s for s in seconds if s is not None]
    return {"p50": _ms(statistics.median(done)) if done else None, "max": _ms(max(done)) if done else None,
            "missing": len(seconds) - len(done)}


def _bench_preset(preset: str, args: argparse.Namespace, cfg, domain: int, folder: Path) -> dict:
    import rclpy

    from tdmpc_ros import topics
    from tdmpc_ros.config import load_config
    from tdmpc_ros.learning.agent import Agent
    from tdmpc_ros.learning.checkpoint import checkpoint_from_bytes, save_checkpoint
    from tdmpc_ros.nodes import qos

    path = folder / f"{preset}.pt"
    agent = Agent(load_config(overrides={"model": {"preset": preset}, "agent": {"compile": False, "batch_size": 8}}))
    agent.update(_batch(agent.cfg))  # the optimisers' moments exist from the first update on: a learner's size
    sha256 = save_checkpoint(path, agent)
    del agent
    size = path.stat().st_size
    chunk_bytes = args.chunk_bytes or cfg.learner.weights_chunk_bytes
    # as a controller would: deep enough for the largest model it accepts, in pieces of the configured size
    depth = min(qos.MAX_QUEUE_DEPTH, -(-cfg.controller.max_checkpoint_bytes // chunk_bytes))
    contexts, receivers = [], []

    def receiver(name: str) -> _Receiver:
        context = rclpy.Context()
        rclpy.init(context=context, domain_id=domain)
        contexts.append(context)
        receivers.append(_Receiver(context, name, cfg, depth))
        return receivers[-1]

    env = dict(os.environ, ROS_DOMAIN_ID=str(domain), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST")
    child = subprocess.Popen([sys.executable, "-m", __name__, str(path), sha256, str(chunk_bytes),
                              str(args.repeats), str(args.pause)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             env=env, text=True)
    try:
        first = receiver("bench_weights_controller")
        sent = [json.loads(child.stdout.readline()) for _ in range(args.repeats)]
        deadline = time.monotonic() + 60
        while len(first.held) < args.repeats and time.monotonic() < deadline:
            time.sleep(0.01)
        started, matched = time.time(), None
        late = receiver("bench_weights_late_controller")
        while late.model is None and time.monotonic() < deadline + 60:
            if matched is None and late.node.count_publishers(topics.MODEL_WEIGHTS):
                matched = time.time()
            time.sleep(0.01)
        late_s = time.time() - started if late.model else None
        late_matched_s = time.time() - (matched or started) if late.model else None
        decode_started = time.perf_counter()
        checkpoint_from_bytes(first.model.data, "model_weights", first.model.sha256,
                              cfg.controller.max_checkpoint_bytes)
        decode_s = time.perf_counter() - decode_started
    finally:
        child.stdin.close()
        child.wait(30)
        for r in receivers:
            r.close()
        for context in contexts:
            context.try_shutdown()
    latency = [first.held[s["version"]] - s["started"] if s["version"] in first.held else None for s in sent]
    return {"preset": preset, "bytes": size, "chunk_bytes": chunk_bytes, "pieces": -(-size // chunk_bytes),
            "reader_depth": depth, "models_sent": len(sent), "models_held": len(first.held),
            "first_ms": _ms(latency[0]), "handoff_ms": _summary(latency[1:]),
            "publish_call_ms": _summary([s["publish_s"] for s in sent]),
            "acked_ms": _summary([s["acked_s"] for s in sent]),
            "late_join_ms": _ms(late_s), "late_join_after_discovery_ms": _ms(late_matched_s),
            "checkpoint_from_bytes_ms": _ms(decode_s),
            "publisher_rss_mb": round(sent[-1]["rss_mb"], 1),
            "problems": first.problems + late.problems}


def run(args: argparse.Namespace) -> int:
    import torch
    from domain_coordinator import domain_id

    from tdmpc_ros.config import default_config_path, load_config

    torch.set_num_threads(1)
    cfg = load_config(default_config_path())
    with tempfile.TemporaryDirectory() as tmp, domain_id() as domain:
        results = [_bench_preset(preset, args, cfg, domain, Path(tmp)) for preset in args.presets]
    result = {"bench": "weights", "results": results, "load_avg_1m": round(os.getloadavg()[0], 2)}
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))
    return 0 if all(r["models_held"] == r["models_sent"] and r["late_join_ms"] and not r["problems"]
                    for r in results) else 1


if __name__ == "__main__":
    publisher_main(sys.argv[1:])
