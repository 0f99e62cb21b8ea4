"""The node set of `arm.launch.py`, described once.

`launch/arm.launch.py` (launch_ros) and `tdmpc-ros launch arm` both build their processes from
`node_launches()`, so the two can not drift apart. Pure Python: no launch or rclpy import.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

PACKAGE = "tdmpc_ros"

# name -> (default, description); values arrive as strings (`name:=value`), as launch arguments do.
LAUNCH_ARGUMENTS: dict[str, tuple[str, str]] = {
    "use_sim": ("true", "start the embedded PyBullet arm; false talks to a real arm's controllers"),
    "device": ("cpu", "planner and learner device: cpu or cuda"),
    "backend": ("torch", "planner backend: torch or onnx"),
    "demos": ("", "directory of demo bags for the learner (empty keeps learner.demos from the config)"),
    "model": ("", "checkpoint the controller starts from (empty: none until the learner publishes one)"),
    "learn": ("true", "start the learner; false runs control only"),
    "namespace": ("", "namespace for every node and topic (one per arm)"),
    "config": ("", "parameter file (empty: share/tdmpc_ros/config/arm.yaml)"),
    "lockstep": ("false", "sim advances one control period per command (reproducible, faster than real time)"),
    "run_dir": ("", "learner run folder (empty keeps learner.run_dir from the config)"),
}

TRUE_WORDS = {"true", "1", "yes", "on"}
FALSE_WORDS = {"false", "0", "no", "off"}


@dataclass
class NodeLaunch:
    """One node process: which executable, under what name, with which parameter overrides."""

    name: str
    executable: str
    required: bool
    """The launch ends when this node exits (launch_ros `on_exit=Shutdown()`)."""
    parameters: dict[str, Any] = field(default_factory=dict)
    """Overrides of `section.field` parameters on top of the config file."""


def parse_bool(name: str, text: str) -> bool:
    word = str(text).strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise ValueError(f"launch argument {name}:={text!r} is not true/false")


def resolve_arguments(given: dict[str, str]) -> dict[str, str]:
    """Defaults filled in; unknown names are errors that list the known ones."""
    unknown = set(given) - set(LAUNCH_ARGUMENTS)
    if unknown:
        raise ValueError(f"unknown launch argument(s) {sorted(unknown)}; known: {sorted(LAUNCH_ARGUMENTS)}")
    return {name: str(given.get(name, default)) for name, (default, _) in LAUNCH_ARGUMENTS.items()}


def node_launches(given: dict[str, str]) -> list[NodeLaunch]:
    """The nodes to start for these launch arguments."""
    args = resolve_arguments(given)
    if args["device"] not in ("cpu", "cuda"):
        raise ValueError(f"launch argument device:={args['device']!r} must be cpu or cuda")
    if args["backend"] not in ("torch", "onnx"):
        raise ValueError(f"launch argument backend:={args['backend']!r} must be torch or onnx")
    common: dict[str, Any] = {"sim.lockstep": parse_bool("lockstep", args["lockstep"])}
    controller: dict[str, Any] = {"planner.device": args["device"], "planner.backend": args["backend"]}
    if args["model"]:
        controller["controller.model_path"] = args["model"]
    learner: dict[str, Any] = {"agent.device": args["device"]}
    if args["demos"]:
        learner["learner.demos"] = [args["demos"]]
    if args["run_dir"]:
        learner["learner.run_dir"] = args["run_dir"]

    nodes = []
    if parse_bool("use_sim", args["use_sim"]):
        nodes.append(NodeLaunch("arm", "arm_node", required=True, parameters=dict(common)))
    nodes.append(NodeLaunch("controller", "controller_node", required=True, parameters={**common, **controller}))
    if parse_bool("learn", args["learn"]):
        nodes.append(NodeLaunch("learner", "learner_node", required=False, parameters={**common, **learner}))
    return nodes
