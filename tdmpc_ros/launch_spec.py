"""The node set of `arm.launch.py`, described once.

`launch/arm.launch.py` (launch_ros) and `tdmpc-ros launch arm` both build their processes from `NODES` and
`LAUNCH_ARGUMENTS`, so the two can not drift apart: the launch file turns each node's `condition` into an
IfCondition and each `from_arguments` entry into a typed ParameterValue of a LaunchConfiguration; the CLI
launcher resolves the same entries itself (`node_launches`). Pure Python: no launch or rclpy import.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

PACKAGE = "tdmpc_ros"
BOOL_CHOICES = ("true", "false")


@dataclass(frozen=True)
class LaunchArgument:
    default: str
    description: str
    choices: tuple[str, ...] = ()


# Values arrive as strings (`name:=value`), as launch arguments do. Launch arguments set their parameters
# over the config file's values; their defaults are the config's defaults.
LAUNCH_ARGUMENTS: dict[str, LaunchArgument] = {
    "use_sim": LaunchArgument("true", "start the embedded PyBullet arm; false talks to a real arm's controllers",
                              BOOL_CHOICES),
    "device": LaunchArgument("cpu", "planner and learner device", ("cpu", "cuda")),
    "backend": LaunchArgument("torch", "planner backend", ("torch", "onnx")),
    "demos": LaunchArgument("demos", "directory of demo bags for the learner (learner.demos; a relative path is "
                                     "under $ROS_HOME, default ~/.ros)"),
    "model": LaunchArgument("", "checkpoint the controller starts from (controller.model_path; empty: none until "
                                "the learner publishes one)"),
    "learn": LaunchArgument("true", "start the learner; false runs control only", BOOL_CHOICES),
    "namespace": LaunchArgument("", "namespace for every node and topic (one per arm)"),
    "config": LaunchArgument("", "parameter file (empty: share/tdmpc_ros/config/arm.yaml)"),
    "lockstep": LaunchArgument("false", "sim advances one control period per command (reproducible, faster than "
                                        "real time)", BOOL_CHOICES),
    "run_dir": LaunchArgument("runs/arm", "learner run folder (learner.run_dir; a relative path is under "
                                          "$ROS_HOME, default ~/.ros)"),
}


@dataclass
class NodeLaunch:
    """One node process: which executable, under what name, when, and with which parameters."""

    name: str
    executable: str
    required: bool
    """The launch ends when this node exits (launch_ros `on_exit=Shutdown()`)."""
    parameters: dict[str, Any] = field(default_factory=dict)
    """`section.field` parameters on top of the config file (for the CLI launcher: resolved ones included)."""
    condition: str = ""
    """A true/false launch argument that must be true for the node to start; empty: always."""
    from_arguments: dict[str, tuple[str, str]] = field(default_factory=dict)
    """Parameter -> (launch argument, kind: str, bool or list[str]) whose value it takes."""


# In lockstep the sim arm publishes /clock, one control period per command, and the nodes run on it
# (use_sim_time), so stamps and bags follow simulated time (timers that must tick while the world is held run on
# steady time).
SIM_TIME = {"sim.lockstep": ("lockstep", "bool"), "use_sim_time": ("lockstep", "bool")}
NODES: tuple[NodeLaunch, ...] = (
    NodeLaunch("arm", "arm_node", required=True, condition="use_sim", from_arguments=dict(SIM_TIME)),
    NodeLaunch("controller", "controller_node", required=True,
               from_arguments={**SIM_TIME, "planner.device": ("device", "str"),
                               "planner.backend": ("backend", "str"), "controller.model_path": ("model", "str")}),
    NodeLaunch("learner", "learner_node", required=False, condition="learn",
               from_arguments={**SIM_TIME, "agent.device": ("device", "str"),
                               "learner.demos": ("demos", "list[str]"), "learner.run_dir": ("run_dir", "str")}),
)


def parse_bool(name: str, text: str) -> bool:
    word = str(text).strip().lower()
    if word not in BOOL_CHOICES:
        raise ValueError(f"launch argument {name}:={text!r} is not one of {list(BOOL_CHOICES)}")
    return word == "true"


def resolve_arguments(given: dict[str, str]) -> dict[str, str]:
    """Defaults filled in; unknown names and values outside an argument's choices are errors that name them."""
    unknown = set(given) - set(LAUNCH_ARGUMENTS)
    if unknown:
        raise ValueError(f"unknown launch argument(s) {sorted(unknown)}; known: {sorted(LAUNCH_ARGUMENTS)}")
    values = {name: str(given.get(name, arg.default)) for name, arg in LAUNCH_ARGUMENTS.items()}
    for name, arg in LAUNCH_ARGUMENTS.items():
        if arg.choices and values[name].strip().lower() not in arg.choices:
            raise ValueError(f"launch argument {name}:={values[name]!r} must be one of {list(arg.choices)}")
    return values


def argument_value(name: str, text: str, kind: str) -> Any:
    """A launch argument's text as the parameter value launch_ros's typed ParameterValue makes of it."""
    return {"bool": lambda: parse_bool(name, text), "list[str]": lambda: [text], "str": lambda: text}[kind]()


def node_launches(given: dict[str, str]) -> list[NodeLaunch]:
    """The nodes to start for these launch arguments, their argument-driven parameters resolved."""
    args = resolve_arguments(given)
    return [dataclasses.replace(spec, parameters={**spec.parameters, **{
                parameter: argument_value(argument, args[argument], kind)
                for parameter, (argument, kind) in spec.from_arguments.items()}})
            for spec in NODES if not spec.condition or parse_bool(spec.condition, args[spec.condition])]
