"""`tdmpc-ros bench soak`: the whole node set (arm + controller + learner) for M minutes, measured from outside.

Control period from the command messages' DDS receive timestamps at a subscriber, deadline misses from
PlannerStatus, learner updates/s from its /diagnostics, resident memory of every node process (VmRSS from
/proc, sampled over time) with its growth between the first and last third of the run, and transitions
published versus stored in the online bags (counted from the bags after a clean shutdown).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

SAMPLE_EVERY_S = 5.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--minutes", type=float, default=10.0, help="how long to run after the first model")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--lockstep", action="store_true", help="sim advances one period per command (default)")
    mode.add_argument("--realtime", action="store_true", help="sim and controller on the wall clock")
    parser.add_argument("--demo-episodes", type=int, default=5, help="scripted demos recorded for the learner")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def rss_mb(pid: int) -> float | None:
    """Resident set size of a process in MB (None once it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def memory_report(samples: list[tuple[float, dict[str, float | None]]]) -> dict[str, dict[str, float]]:
    """Per process: first/last/max RSS and growth (MB/min) between the means of the first and last thirds."""
    import numpy as np

    report = {}
    for name in samples[0][1]:
        points = [(t, s[name]) for t, s in samples if s.get(name) is not None]
        if len(points) < 3:
            continue
        t, mb = np.array(points).T
        third = len(points) // 3
        head, tail = slice(0, third), slice(len(points) - third, len(points))
        minutes = (t[tail].mean() - t[head].mean()) / 60.0
        report[name] = {"first_mb": round(float(mb[0]), 1), "last_mb": round(float(mb[-1]), 1),
                        "max_mb": round(float(mb.max()), 1),
                        "growth_mb_per_min": round(float((mb[tail].mean() - mb[head].mean()) / minutes), 3)}
    return report


def count_bag_messages(folder: Path) -> int:
    from rosbags.rosbag2 import Reader

    total = 0
    for bag in sorted(p.parent for p in folder.glob("*/metadata.yaml")):
        with Reader(bag) as reader:
            total += reader.message_count
    return total


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from tdmpc_ros.cli.demos import record_demos
    from tdmpc_ros.tasks import task_config
    from tdmpc_ros.cli.harness import LaunchedGraph, RequiredNodeExited
    from tdmpc_ros.config import load_config

    lockstep = not args.realtime
    rate = load_config().task.control_rate_hz
    arrivals: list[int] = []  # ns, DDS receive time of each command at the subscriber
    with tempfile.TemporaryDirectory() as tmp:
        demos_dir, run_dir = Path(tmp) / "demos", Path(tmp) / "run"
        record_demos(task_config(), demos_dir, args.demo_episodes)
        with LaunchedGraph({"lockstep": str(lockstep).lower(), "demos": str(demos_dir), "run_dir": str(run_dir)},
                           overrides={"learner.pretrain_updates": 100, "learner.publish_every": 100},
                           observer_name="bench_soak") as graph:
            # Counted, not kept: a soak receives hundreds of thousands of messages.
            graph.observer.record("commands", keep=False, on_message=lambda s: arrivals.append(s.received_ns))
            transitions = graph.observer.record("transitions", keep=False)
            status = graph.observer.record("statuses")
            learner = graph.observer.learner_values()
            graph.start()
            graph.wait_controlling(with_model=True, timeout=300.0)
            arrivals.clear()
            first, start = status.last.msg, time.monotonic()
            first_updates = int(learner.get("updates", 0))
            end, next_sample = start + 60.0 * args.minutes, start
            samples: list[tuple[float, dict[str, float | None]]] = []
            try:
                while (now := time.monotonic()) < end:
                    if now >= next_sample:
                        next_sample += SAMPLE_EVERY_S
                        samples.append((now - start,
                                        {name: rss_mb(p.pid) for name, p in graph.launcher.procs.items()}))
                    graph.spin(min(next_sample, end) - now)
            except RequiredNodeExited as exc:  # measured up to here; the exit codes say which node failed
                print(exc, file=sys.stderr)
            elapsed = time.monotonic() - start
            last = status.last.msg
            updates = int(learner.get("updates", 0)) - first_updates
            stored_live = int(learner.get("transitions_stored", 0))
            published = transitions.count
            codes = graph.shutdown(timeout=60.0)
        stored = count_bag_messages(run_dir / "online")
    periods = np.diff(np.asarray(arrivals, np.int64)) * 1e-6
    nominal = 1e3 / rate
    result = {
        "mode": "lockstep" if lockstep else "realtime", "minutes": round(elapsed / 60.0, 2),
        "commands": len(arrivals), "commands_per_s": round(len(arrivals) / elapsed, 2),
        "period_ms": {"p50": round(float(np.percentile(periods, 50)), 2),
                      "p99": round(float(np.percentile(periods, 99)), 2), "max": round(float(periods.max()), 2)},
        "late_periods": int((periods > 1.5 * nominal).sum()) if not lockstep else None,
        "deadline_misses": int(last.deadline_misses - first.deadline_misses),
        "controller_ticks": int(last.ticks - first.ticks),
        "plan_ms": {"p50": round(float(last.plan_ms_p50), 2), "p99": round(float(last.plan_ms_p99), 2)},
        "faults_seen": sorted({s.msg.fault.split(":")[0] for s in status.samples if s.msg.fault}),
        "model_versions": [int(first.model_version), int(last.model_version)],
        "learner_updates_per_s": round(updates / elapsed, 2),
        "learner_updates_per_s_reported": float(learner.get("updates_per_s", 0.0)),
        "rss": memory_report(samples),
        "transitions": {"published": published, "stored_live": stored_live, "stored_in_bags": stored,
                        "lost": published - stored},
        "exit_codes": codes,
    }
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))
    return 0 if all(code == 0 for code in codes.values()) else 1
