"""arm.launch.py and `tdmpc-ros launch arm` describe the same node set.

launch/launch_ros cannot be installed on this machine, so the launch file is executed against small
recording stand-ins for the launch classes it uses; each records its constructor arguments, and the test calls
its OpaqueFunction with a context of argument values. The
launch file's real behaviour is checked against upstream launch_ros elsewhere.
"""
from __future__ import annotations

import ast
import importlib.util
import sys
import types
from pathlib import Path

import pytest

from tdmpc_ros.cli.launch import node_command, parse_launch_arguments
from tdmpc_ros.launch_spec import LAUNCH_ARGUMENTS, node_launches

pytestmark = pytest.mark.ros

LAUNCH_FILE = Path(__file__).resolve().parent.parent / "launch" / "arm.launch.py"


class Recorded:
    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs


class LaunchConfiguration:
    def __init__(self, name):
        self.name = name

    def perform(self, context):
        return context[self.name]


@pytest.fixture
def launch_stand_ins(monkeypatch):
    modules = {name: types.ModuleType(name) for name in
               ["launch", "launch.actions", "launch.substitutions", "launch_ros", "launch_ros.actions",
                "launch_ros.parameter_descriptions", "launch_ros.substitutions"]}
    modules["launch"].LaunchDescription = type("LaunchDescription", (Recorded,), {})
    for cls in ["DeclareLaunchArgument", "OpaqueFunction", "Shutdown"]:
        setattr(modules["launch.actions"], cls, type(cls, (Recorded,), {}))
    modules["launch.substitutions"].LaunchConfiguration = LaunchConfiguration
    modules["launch.substitutions"].PathJoinSubstitution = type("PathJoinSubstitution", (Recorded,), {})
    modules["launch_ros.actions"].Node = type("Node", (Recorded,), {})
    modules["launch_ros.parameter_descriptions"].ParameterValue = type("ParameterValue", (Recorded,), {})
    modules["launch_ros.substitutions"].FindPackageShare = type("FindPackageShare", (Recorded,), {})
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    spec = importlib.util.spec_from_file_location("arm_launch", LAUNCH_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def evaluated(value):
    """A stand-in ParameterValue as launch_ros would evaluate it (typed: str or a list of str, as given)."""
    if type(value).__name__ != "ParameterValue":
        return value
    inner, value_type = value.args[0], value.kwargs["value_type"]
    assert value_type is str if isinstance(inner, str) else all(isinstance(v, str) for v in inner)
    return inner


def launched_nodes(module, values):
    """The declared arguments, the context the OpaqueFunction sees, and the Nodes it returns."""
    entities = module.generate_launch_description().args[0]
    declared = {e.args[0]: e.kwargs for e in entities if type(e).__name__ == "DeclareLaunchArgument"}
    (opaque,) = [e for e in entities if type(e).__name__ == "OpaqueFunction"]
    context = {name: kw["default_value"] for name, kw in declared.items()}
    context.update(values)
    return declared, opaque.kwargs["function"](context), context


def test_launch_file_parses_and_uses_the_shared_node_list():
    tree = ast.parse(LAUNCH_FILE.read_text())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                and node.module == "tdmpc_ros.launch_spec" for alias in node.names}
    assert {"LAUNCH_ARGUMENTS", "node_launches"} <= imported


@pytest.mark.parametrize("values", [
    {},
    {"use_sim": "false", "learn": "false", "model": "/tmp/m.pt", "backend": "onnx", "namespace": "arm2"},
    {"lockstep": "true", "demos": "/data/demos", "device": "cuda", "run_dir": "1"},
    {"arms": "2", "lockstep": "true", "namespace": "lab"},
    {"arms": "left,right", "learn": "false"},
    {"arms": "3", "role": "learner"},
], ids=["defaults", "real_arm", "lockstep", "fleet", "fleet_no_learner", "learner_only"])
def test_launch_file_and_cli_launcher_start_the_same_nodes(launch_stand_ins, values):
    values = {**values, "config": "/tmp/x.yaml"}  # the share/ default is a substitution only launch resolves
    declared, nodes, context = launched_nodes(launch_stand_ins, values)
    assert list(declared) == list(LAUNCH_ARGUMENTS)
    for name, arg in LAUNCH_ARGUMENTS.items():  # --show-args lists each argument's choices
        assert declared[name]["choices"] == (list(arg.choices) or None)
        assert declared[name]["description"] == arg.description
    assert type(declared["config"]["default_value"]).__name__ == "PathJoinSubstitution"  # share/.../arm.yaml
    specs = node_launches(values)
    assert [(n.kwargs["executable"], n.kwargs["name"], n.kwargs["namespace"]) for n in nodes] == \
        [(s.executable, s.name, s.namespace) for s in specs]
    for node, spec in zip(nodes, specs):
        assert node.kwargs["package"] == "tdmpc_ros" and node.kwargs["output"] == "both"
        config, overrides = node.kwargs["parameters"]
        assert config == "/tmp/x.yaml"
        assert {k: evaluated(v) for k, v in overrides.items()} == spec.parameters
        assert node.kwargs["remappings"] == spec.remappings
        assert (node.kwargs["on_exit"] is not None) == spec.required
        if spec.required:
            assert type(node.kwargs["on_exit"]).__name__ == "Shutdown"  # on_exit shutdown semantics
    if values.get("run_dir") == "1":  # a string that looks like a number stays a string
        learner = next(n for n in nodes if n.kwargs["name"] == "learner")
        assert learner.kwargs["parameters"][1]["learner.run_dir"].kwargs["value_type"] is str


def test_one_arm_is_every_node_in_the_namespace():
    specs = node_launches({"namespace": "arm2", "lockstep": "true"})
    assert [(s.label, s.namespace, s.remappings) for s in specs] == \
        [("arm", "arm2", []), ("controller", "arm2", []), ("learner", "arm2", [])]
    assert all(s.parameters["use_sim_time"] is True for s in specs)
    assert "learner.arms" not in specs[2].parameters


def test_a_fleet_is_arm_groups_and_one_learner():
    specs = {s.label: s for s in node_launches({"arms": "2", "lockstep": "true", "namespace": "lab"})}
    assert list(specs) == ["arm0/arm", "arm0/controller", "arm1/arm", "arm1/controller", "learner"]
    for i in range(2):
        arm, controller = specs[f"arm{i}/arm"], specs[f"arm{i}/controller"]
        assert arm.namespace == controller.namespace == f"lab/arm{i}"
        # each lockstep arm keeps time of its own: its /clock is its group's
        assert ("/clock", f"/lab/arm{i}/clock") in arm.remappings and ("/clock", f"/lab/arm{i}/clock") in \
            controller.remappings
        assert {("model_updates", "/lab/model_updates"), ("model_weights", "/lab/model_weights"),
                ("learner_progress", "/lab/learner_progress")} <= set(controller.remappings)
        assert (arm.parameters["sim.seed"], controller.parameters["controller.seed"]) == (i, i + 1)
        assert arm.parameters["use_sim_time"] is controller.parameters["use_sim_time"] is True
    learner = specs["learner"]
    assert (learner.namespace, learner.remappings) == ("lab", [])
    assert learner.parameters["learner.arms"] == ["arm0", "arm1"] and learner.parameters["use_sim_time"] is False
    assert [s.label for s in node_launches({"arms": "a,b/c", "learn": "false"})] == \
        ["a/arm", "a/controller", "b/c/arm", "b/c/controller"]
    (only,) = node_launches({"arms": "3", "role": "learner"})
    assert only.label == "learner" and only.required and only.parameters["learner.arms"] == ["arm0", "arm1", "arm2"]


def test_cli_launcher_commands_match_the_spec():
    values = parse_launch_arguments(["use_sim:=true", "model:=/tmp/m.pt", "namespace:=arm2", "demos:=/d"])
    specs = node_launches(values)
    assert [s.name for s in specs] == ["arm", "controller", "learner"]
    controller = node_command(specs[1], "/cfg.yaml")
    assert controller[1].endswith("lib/tdmpc_ros/controller_node")
    assert ["-r", "__node:=controller", "-r", "__ns:=/arm2", "--params-file", "/cfg.yaml"] == controller[3:9]
    assert "controller.model_path:='/tmp/m.pt'" in controller and "sim.lockstep:=false" in controller
    assert "learner.demos:=['/d']" in node_command(specs[2], "/cfg.yaml")
    fleet = node_launches(parse_launch_arguments(["arms:=2"]))
    controller = " ".join(node_command(fleet[3], "/cfg.yaml"))
    assert "-r __ns:=/arm1 -r /clock:=/arm1/clock -r model_updates:=/model_updates" in controller
    assert "-r model_weights:=/model_weights" in controller and "controller.seed:=2" in controller
    assert "learner.arms:=['arm0', 'arm1']" in node_command(fleet[4], "/cfg.yaml")


@pytest.mark.parametrize("bad", [{"use_sim": "maybe"}, {"backend": "tensorrt"}, {"colour": "red"}, {"device": "tpu"},
                                 {"arms": "0"}, {"arms": "a,a"}, {"arms": "a,2b"}, {"role": "robot"}])
def test_bad_launch_arguments_are_named(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        node_launches(bad)


def test_nodes_do_not_outlive_a_killed_launcher(ros_domain, tmp_path):
    """SIGKILL gives the launcher no chance to clean up: the nodes must still go (PR_SET_PDEATHSIG)."""
    import os
    import re
    import signal
    import subprocess
    import time

    log = tmp_path / "launch.log"
    launcher = subprocess.Popen([sys.executable, "-m", "tdmpc_ros.cli.main", "launch", "arm", "learn:=false"],
                                stdout=open(log, "w"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while not (pids := re.findall(r"\(pid (\d+)\)", log.read_text())) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert len(pids) == 2, log.read_text()
    launcher.send_signal(signal.SIGKILL)
    launcher.wait()

    def alive(pid):
        try:
            os.kill(int(pid), 0)
            return True
        except ProcessLookupError:
            return False

    deadline = time.monotonic() + 20
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(alive(p) for p in pids)
