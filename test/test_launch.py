"""arm.launch.py and `tdmpc-ros launch arm` describe the same node set.

launch/launch_ros cannot be installed on this machine, so the launch file is executed against small
recording stand-ins for the four launch classes it uses; each records its constructor arguments. The
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


class IfCondition(Recorded):
    def evaluate(self, context):
        return self.args[0].perform(context).lower() == "true"


@pytest.fixture
def launch_stand_ins(monkeypatch):
    modules = {name: types.ModuleType(name) for name in
               ["launch", "launch.actions", "launch.conditions", "launch.substitutions", "launch_ros",
                "launch_ros.actions", "launch_ros.parameter_descriptions", "launch_ros.substitutions"]}
    modules["launch"].LaunchDescription = type("LaunchDescription", (Recorded,), {})
    for cls in ["DeclareLaunchArgument", "Shutdown"]:
        setattr(modules["launch.actions"], cls, type(cls, (Recorded,), {}))
    modules["launch.conditions"].IfCondition = IfCondition
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


def evaluated(value, context):
    """A stand-in ParameterValue as launch_ros would evaluate it (typed: bool, str or a list of str)."""
    if type(value).__name__ != "ParameterValue":
        return value
    inner, value_type = value.args[0], value.kwargs["value_type"]
    if isinstance(inner, list):
        return [v.perform(context) for v in inner]
    text = inner.perform(context)
    return text.lower() == "true" if value_type is bool else text


def launched_nodes(module, values):
    """The declared arguments, and the nodes whose condition holds with their evaluated parameters."""
    entities = module.generate_launch_description().args[0]
    declared = {e.args[0]: e.kwargs for e in entities if type(e).__name__ == "DeclareLaunchArgument"}
    context = {name: kw["default_value"] for name, kw in declared.items() if isinstance(kw["default_value"], str)}
    context.update(values)
    nodes = [e for e in entities if type(e).__name__ == "Node"]
    started = [n for n in nodes if n.kwargs["condition"] is None or n.kwargs["condition"].evaluate(context)]
    return declared, nodes, started, context


def test_launch_file_parses_and_uses_the_shared_node_list():
    tree = ast.parse(LAUNCH_FILE.read_text())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                and node.module == "tdmpc_ros.launch_spec" for alias in node.names}
    assert {"LAUNCH_ARGUMENTS", "NODES"} <= imported


@pytest.mark.parametrize("values", [
    {},
    {"use_sim": "false", "learn": "false", "model": "/tmp/m.pt", "backend": "onnx", "namespace": "arm2"},
    {"lockstep": "true", "demos": "/data/demos", "device": "cuda", "config": "/tmp/x.yaml"},
])
def test_launch_file_and_cli_launcher_start_the_same_nodes(launch_stand_ins, values):
    declared, nodes, started, context = launched_nodes(launch_stand_ins, values)
    assert list(declared) == list(LAUNCH_ARGUMENTS)
    for name, arg in LAUNCH_ARGUMENTS.items():  # --show-args lists each argument's choices
        assert declared[name]["choices"] == (list(arg.choices) or None)
        assert declared[name]["description"] == arg.description
    assert type(declared["config"]["default_value"]).__name__ == "PathJoinSubstitution"  # share/.../arm.yaml
    # Every node is declared (visible to `ros2 launch --print`); use_sim and learn gate theirs by IfCondition.
    assert [n.kwargs["name"] for n in nodes] == ["arm", "controller", "learner"]
    assert {n.kwargs["name"]: n.kwargs["condition"].args[0].name for n in nodes if n.kwargs["condition"]} == \
        {"arm": "use_sim", "learner": "learn"}
    specs = node_launches(values)
    assert [(n.kwargs["executable"], n.kwargs["name"]) for n in started] == [(s.executable, s.name) for s in specs]
    for node, spec in zip(started, specs):
        assert node.kwargs["package"] == "tdmpc_ros" and node.kwargs["output"] == "both"
        assert node.kwargs["namespace"].perform(context) == values.get("namespace", "")
        config, overrides = node.kwargs["parameters"]
        assert config.name == "config"
        assert {k: evaluated(v, context) for k, v in overrides.items()} == spec.parameters
        assert (node.kwargs["on_exit"] is not None) == spec.required
    controller = next(n for n in started if n.kwargs["name"] == "controller")
    assert type(controller.kwargs["on_exit"]).__name__ == "Shutdown"  # on_exit shutdown semantics


def test_cli_launcher_commands_match_the_spec():
    values = parse_launch_arguments(["use_sim:=true", "model:=/tmp/m.pt", "namespace:=arm2", "demos:=/d"])
    specs = node_launches(values)
    assert [s.name for s in specs] == ["arm", "controller", "learner"]
    controller = node_command(specs[1], "arm2", "/cfg.yaml")
    assert controller[1].endswith("lib/tdmpc_ros/controller_node")
    assert ["-r", "__node:=controller", "-r", "__ns:=/arm2", "--params-file", "/cfg.yaml"] == controller[3:9]
    assert "controller.model_path:='/tmp/m.pt'" in controller and "sim.lockstep:=false" in controller
    assert "learner.demos:=['/d']" in node_command(specs[2], "", "/cfg.yaml")


@pytest.mark.parametrize("bad", [{"use_sim": "maybe"}, {"backend": "tensorrt"}, {"colour": "red"}, {"device": "tpu"}])
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
