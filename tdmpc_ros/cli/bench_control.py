"""`tdmpc-ros bench control`: the real controller node against the PyBullet arm node, measured from outside.

Tick period comes from the command messages' DDS timestamps at a subscriber: `publish_period` from their
source timestamps (when the controller handed each command to DDS: its tick period, not self-reported) and
`period` from their receive timestamps (adds delivery, which on a 2-core machine includes waking the
subscriber's DDS thread; the bench's own Python executor delay is in neither). Planning latency and
deadline misses come from the controller's PlannerStatus. The model is a freshly initialised checkpoint of
the chosen preset (planning cost does not depend on the weights). The run is one long episode (no success
radius to reach, no step limit within it): at an episode's end the controller withholds commands while the sim
arm resets, which would show as missing ticks here; this bench measures the tick itself.
"""
from __future__ import annotations

import argparse
import json
import math
import tempfile
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

    from tdmpc_ros.cli.harness import LaunchedGraph
    from tdmpc_ros.config import load_config
    from tdmpc_ros.learning.agent import Agent
    from tdmpc_ros.learning.checkpoint import save_checkpoint

    cfg = load_config(overrides={"model": {"preset": args.preset}})
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = Path(tmp) / "random.pt"
        save_checkpoint(checkpoint, Agent(cfg), {"updates": 0, "env_steps": 0})
        with LaunchedGraph({"model": str(checkpoint), "learn": "false", "backend": args.backend,
                            "device": args.device},
                           overrides={"task.control_rate_hz": args.rate, "model.preset": args.preset,
                                      "sim.physics_hz": physics_hz(cfg.sim.physics_hz, args.rate),
                                      "task.success_radius": 1e-9, "task.max_episode_steps": 10_000_000},
                           observer_name="bench_control") as graph:
            commands = graph.observer.record("commands")
            status = graph.observer.record("statuses", keep=False)
            graph.start()
            graph.wait_controlling(with_model=True, timeout=120.0)
            commands.samples.clear()
            first = status.last.msg
            graph.spin(args.seconds)
            last = status.last.msg
            codes = graph.shutdown()
    arrivals = [s.received_ns for s in commands.samples]  # DDS receive time at the subscriber
    sources = [s.published_ns for s in commands.samples]  # the controller's publish time

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
