"""The node set of `arm.launch.py`, described once.

`launch/arm.launch.py` (launch_ros, through an OpaqueFunction) and `tdmpc-ros launch arm` both start exactly the
processes `node_launches` returns for the launch arguments (`LAUNCH_ARGUMENTS`), so the two can not drift apart:
which nodes, in which namespace, under which name, with which parameters and remappings.

One arm (the default): arm, controller and learner in `namespace`. A fleet (`arms:=N` or `arms:=a,b`): each arm's
sim arm and controller in `<namespace>/<arm>`, with their /clock remapped to `<namespace>/<arm>/clock` (each
lockstep arm keeps time of its own) and the controller's learner topics (model_updates, model_weights,
learner_progress) to the learner's, and one learner in `namespace` taking every arm's `<arm>/transitions`
(learner.arms), on wall time. `learn:=false` leaves the learner out (the robot's PC), `role:=learner` starts it
alone (the workstation). Pure Python: no launch or rclpy import.
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any

from tdmpc_ros import topics

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
    "namespace": LaunchArgument("", "namespace for every node and topic (one arm's, or a fleet's)"),
    "arms": LaunchArgument("", "a fleet: N (arms arm0..armN-1) or comma-separated arm namespaces (left,right), "
                               "each with its own sim arm and controller under `namespace`, and one learner "
                               "in `namespace` for them all; empty: one arm"),
    "role": LaunchArgument("all", "all: arms (unless use_sim:=false), controllers and learner (unless "
                                  "learn:=false); learner: the learner alone, for arms on another machine",
                           ("all", "learner")),
    "config": LaunchArgument("", "parameter file (empty: share/tdmpc_ros/config/arm.yaml)"),
    "lockstep": LaunchArgument("false", "sim advances one control period per command (reproducible, faster than "
                                        "real time)", BOOL_CHOICES),
    "robot": LaunchArgument("", "the arm (task.robot): kuka_iiwa, panda, xarm6, a URDF file, or robot_description "
                                "(the URDF from that topic); joints, limits and home from its URDF; empty: the "
                                "config's"),
    "action_space": LaunchArgument("", "task.action_space: joint or cartesian (end-effector position deltas); "
                                       "empty: the config's", ("", "joint", "cartesian")),
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
    namespace: str = ""
    """The node's namespace (no leading slash; '' for the root)."""
    remappings: list[tuple[str, str]] = field(default_factory=list)
    label: str = ""
    """Name of the process in the launcher's output and exit codes (`arm0/controller` in a fleet)."""

    def __post_init__(self) -> None:
        self.label = self.label or self.name


# In lockstep the sim arm publishes /clock, one control period per command, and the nodes run on it
# (use_sim_time), so stamps and bags follow simulated time (timers that must tick while the world is held run on
# steady time).
SIM_TIME = {"sim.lockstep": ("lockstep", "bool"), "use_sim_time": ("lockstep", "bool")}
# Every node knows the arm; these two set their parameters only when given ("str?": empty leaves the config's).
ARM = {"task.robot": ("robot", "str?"), "task.action_space": ("action_space", "str?")}
NODES: tuple[NodeLaunch, ...] = (
    NodeLaunch("arm", "arm_node", required=True, condition="use_sim", from_arguments={**SIM_TIME, **ARM}),
    NodeLaunch("controller", "controller_node", required=True,
               from_arguments={**SIM_TIME, **ARM, "planner.device": ("device", "str"),
                               "planner.backend": ("backend", "str"), "controller.model_path": ("model", "str")}),
    NodeLaunch("learner", "learner_node", required=False, condition="learn",
               from_arguments={**SIM_TIME, **ARM, "agent.device": ("device", "str"),
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
    """A launch argument's text as the parameter value launch_ros's typed ParameterValue makes of it (None: an
    optional one left empty, no parameter)."""
    return {"bool": lambda: parse_bool(name, text), "list[str]": lambda: [text], "str": lambda: text,
            "str?": lambda: text or None}[kind]()


# What a fleet's controllers reach the learner on (the learner's own namespace, not the arm's).
LEARNER_TOPICS = (topics.MODEL_UPDATES, topics.MODEL_WEIGHTS, topics.LEARNER_PROGRESS)
ARM_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(/[A-Za-z_][A-Za-z0-9_]*)*")


def arm_namespaces(text: str) -> list[str]:
    """`arms:=`: '' (one arm, no fleet), a count N (arm0..armN-1) or comma-separated names, each a ROS name."""
    text = text.strip()
    if not text:
        return []
    if text.isdigit():
        if not 1 <= int(text) <= 64:
            raise ValueError(f"launch argument arms:={text}: between 1 and 64 arms")
        return [f"arm{i}" for i in range(int(text))]
    names = [name.strip().strip("/") for name in text.split(",")]
    for name in names:
        if not ARM_NAME.fullmatch(name):
            raise ValueError(f"launch argument arms:={text!r}: {name!r} is not a namespace (letters, digits, _, /)")
    if len(set(names)) != len(names):
        raise ValueError(f"launch argument arms:={text!r}: an arm named twice")
    return names


def _joined(*parts: str) -> str:
    return "/".join(p.strip("/") for p in parts if p.strip("/"))


def node_launches(given: dict[str, str]) -> list[NodeLaunch]:
    """The nodes to start for these launch arguments: namespaces, parameters and remappings resolved."""
    args = resolve_arguments(given)
    arms, base = arm_namespaces(args["arms"]), args["namespace"].strip("/")
    specs = {spec.name: spec for spec in NODES}

    def resolved(spec: NodeLaunch, namespace: str, label: str, parameters=None, remappings=()) -> NodeLaunch:
        return dataclasses.replace(spec, namespace=namespace, label=label, remappings=list(remappings), parameters={
            **spec.parameters, **{parameter: value for parameter, (argument, kind) in spec.from_arguments.items()
                                  if (value := argument_value(argument, args[argument], kind)) is not None},
            **(parameters or {})})

    def wanted(spec: NodeLaunch) -> bool:
        return not spec.condition or parse_bool(spec.condition, args[spec.condition])

    learner = specs["learner"]
    # A fleet's learner takes every arm's transitions, on wall time: each lockstep arm keeps a clock of its own.
    fleet_learner = {"learner.arms": arms, "use_sim_time": False} if arms else {}
    if args["role"] == "learner":
        return [resolved(dataclasses.replace(learner, required=True), base, "learner", fleet_learner)]
    launches = []
    for i, arm in enumerate(arms or [""]):
        namespace = _joined(base, arm)
        for spec in (specs["arm"], specs["controller"]):
            if not wanted(spec):
                continue
            if not arm:
                launches.append(resolved(spec, namespace, spec.name))
                continue
            remappings = [("/clock", f"/{namespace}/clock")]
            if spec.name == "controller":
                remappings += [(topic, "/" + _joined(base, topic)) for topic in LEARNER_TOPICS]
            # arm i explores a world and noise of its own: sim.seed i, controller.seed i + 1 (arm0 = one arm's)
            seed = {"sim.seed": i} if spec.name == "arm" else {"controller.seed": i + 1}
            launches.append(resolved(spec, namespace, f"{arm}/{spec.name}", seed, remappings))
    if wanted(learner):
        launches.append(resolved(learner, base, "learner", fleet_learner))
    return launches
