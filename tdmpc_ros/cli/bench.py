"""`tdmpc-ros bench NAME`: benchmarks that print one JSON object of measured figures."""
from __future__ import annotations

import argparse
import importlib

# name -> (module with add_arguments/run, help)
BENCHES: dict[str, tuple[str, str]] = {
    "data": ("tdmpc_ros.cli.bench_data", "rosbag write/read throughput and replay sample cost vs buffer size"),
    "update": ("tdmpc_ros.cli.bench_update", "TD-MPC2 agent updates/s and peak memory on synthetic batches"),
    "control": ("tdmpc_ros.cli.bench_control", "controller node vs PyBullet arm: tick period, plan latency, misses"),
    "sim": ("tdmpc_ros.cli.bench_sim", "ArmEnv steps/s, scripted expert success rate, arm node /joint_states rate"),
    "plan": ("tdmpc_ros.cli.bench_plan", "MPPI plan-call latency (p50/p99) per preset, backend (torch/onnx) and device"),
    "intake": ("tdmpc_ros.cli.bench_intake", "learner node under R transitions/s: stored, lost, CPU, RSS"),
    "soak": ("tdmpc_ros.cli.bench_soak", "nodes for M minutes: period, misses, updates/s, RSS growth, data kept"),
    "learn": ("tdmpc_ros.cli.bench_learn", "demos + online MPPI on ArmEnv per seed: env steps to 90% success, curve PNG"),
    "action": ("tdmpc_ros.cli.bench_action", "the action rule per tick: joint vs cartesian (IK) with the workspace box"),
    "variants": ("tdmpc_ros.cli.bench_variants", "world-model variants (TD-MPC2, FSQ, decoder, MBPO, TD-MPC v1) "
                 "learning side by side: steps to 90%, wall, plan p50, updates/s, parameters"),
    "weights": ("tdmpc_ros.cli.bench_weights", "model hand-off over DDS: publish to verified bytes, late joiner"),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="bench", required=True)
    for name, (module, help_text) in BENCHES.items():
        bench = sub.add_parser(name, help=help_text, description=help_text)
        bench.set_defaults(_bench_module=module)
        importlib.import_module(module).add_arguments(bench)


def run(args: argparse.Namespace) -> int:
    return importlib.import_module(args._bench_module).run(args) or 0
