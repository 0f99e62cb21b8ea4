"""`--task`, `--robot` and `--action-space`: the task, the arm and its action space for the commands that build
one (demos, train, eval, bench learn, demo), as the config file and its overrides."""
from __future__ import annotations

import argparse

from tdmpc_ros.config import Config


def add_arm_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--task", default=None,
                        help="task.name (reach, push or package.module:Class); without --config a bundled "
                             "config/<task>.yaml is used where there is one")
    parser.add_argument("--robot", default=None, help="the arm: kuka_iiwa, panda, xarm6 or a URDF file (task.robot; "
                                                       "joints, limits and home from its URDF; default: the config's)")
    parser.add_argument("--action-space", choices=["joint", "cartesian"], default=None,
                        help="task.action_space: joint-position or end-effector-position deltas (default: config's)")


def arm_overrides(args: argparse.Namespace, overrides: dict | None = None) -> dict:
    """`overrides` with the arm of --robot (its joints, end effector and home from its URDF, not the config's
    previous arm) and --action-space applied."""
    from tdmpc_ros.kinematics import robot_overrides

    out = {section: dict(values) for section, values in (overrides or {}).items()}
    if getattr(args, "robot", None):
        for section, values in robot_overrides(args.robot).items():
            out.setdefault(section, {}).update(values)
    if getattr(args, "action_space", None):
        out.setdefault("task", {})["action_space"] = args.action_space
    return out


def arm_config(args: argparse.Namespace, overrides: dict | None = None) -> Config:
    """The config of --config and --task (tasks.task_config) with `overrides`, --robot and --action-space applied."""
    from tdmpc_ros.tasks import task_config

    return task_config(args.task, args.config or None, arm_overrides(args, overrides))
