"""`tdmpc-ros` entry point. Subcommand modules import torch and rclpy inside run(), so `--help` stays fast."""
from __future__ import annotations

import argparse
import importlib
import sys

from tdmpc_ros.errors import InputError

# name -> (module, one-line help). `bench` has its own sub-commands (tdmpc_ros.cli.bench).
COMMANDS: dict[str, tuple[str, str]] = {
    "info": ("tdmpc_ros.cli.info", "world-model parameter counts for a preset and observation/action sizes"),
    "bench": ("tdmpc_ros.cli.bench", "benchmarks printing JSON figures"),
    "launch": ("tdmpc_ros.cli.launch", "start the node set of arm.launch.py without launch_ros"),
    "demo": ("tdmpc_ros.cli.demo", "the main job: learn to reach on the PyBullet arm with sim + controller + learner"),
    "demos": ("tdmpc_ros.cli.demos", "record scripted-expert demonstration bags on the PyBullet arm"),
    "train": ("tdmpc_ros.cli.train", "train a model offline from demo (and online) bags"),
    "export-onnx": ("tdmpc_ros.cli.export_onnx", "write a checkpoint's whole MPPI plan call as one ONNX graph"),
    "eval": ("tdmpc_ros.cli.eval", "success rate, return and plan latency of a checkpoint's eval-mode planner on ArmEnv"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tdmpc-ros", description="TD-MPC2 world-model MPC for ROS 2 arms")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an input error")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (module, help_text) in COMMANDS.items():
        command = sub.add_parser(name, help=help_text, description=help_text)
        command.set_defaults(_module=module)
        importlib.import_module(module).add_arguments(command)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run a sub-command. Bad input (a config value, a damaged file, an argument out of range, a path that
    cannot be read or written) prints one line and exits 2, as argparse does; --debug shows the traceback."""
    args = build_parser().parse_args(argv)
    try:
        return importlib.import_module(args._module).run(args) or 0
    except (InputError, OSError) as exc:
        if args.debug:
            raise
        print(f"tdmpc-ros {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
