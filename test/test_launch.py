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


@pytest.fixture
def launch_stand_ins(monkeypatch):
    modules = {name: types.ModuleType(name) for name in
               ["launch", "launch.actions", "launch.substitutions", "launch_ros", "launch_ros.actions"]}
    modules["launch"].LaunchDescription = type("LaunchDescription", (Recorded,), {})
    for cls in ["DeclareLaunchArgument", "OpaqueFunction", "Shutdown"]:
        setattr(modules["launch.actions"], cls, type(cls, (Recorded,), {}))
    modules["launch.substitutions"].LaunchConfiguration = LaunchConfiguration
    modules["launch_ros.actions"].Node = type("Node", (Recorded,), {})
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    spec = importlib.util.spec_from_file_location("arm_launch", LAUNCH_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def launched_nodes(module, values):
    description = module.generate_launch_description()
    entities = description.args[0]
    declared = {e.args[0]: e.kwargs["default_value"] for e in entities if type(e).__name__ == "DeclareLaunchArgument"}
    opaque = [e for e in entities if type(e).__name__ == "OpaqueFunction"][0]
    context = {**declared, **values}
    return declared, opaque.kwargs["function"](context)


def test_launch_file_parses_and_uses_the_shared_node_list():
    tree = ast.parse(LAUNCH_FILE.read_text())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                and node.module == "tdmpc_ros.launch_spec" for alias in node.names}
    assert {"LAUNCH_ARGUMENTS", "node_launches"} <= imported


@pytest.mark.parametrize("values", [
    {},
    {"use_sim": "false", "learn": "false", "model": "/tmp/m.pt", "backend": "onnx", "namespace": "arm2"},
    {"lockstep": "true", "demos": "/data/demos", "device": "cuda", "config": "/tmp/x.yaml"},
])
def test_launch_file_and_cli_launcher_start_the_same_nodes(launch_stand_ins, values):
    declared, nodes = launched_nodes(launch_stand_ins, values)
    assert declared == {name: default for name, (default, _) in LAUNCH_ARGUMENTS.items()}
    specs = node_launches({**declared, **values})
    assert [(n.kwargs["executable"], n.kwargs["name"]) for n in nodes] == [(s.executable, s.name) for s in specs]
    for node, spec in zip(nodes, specs):
        assert node.kwargs["package"] == "tdmpc_ros"
        assert node.kwargs["namespace"] == values.get("namespace", "")
        config, overrides = node.kwargs["parameters"]
        assert overrides == spec.parameters
        assert config == values.get("config") or config.endswith("share/tdmpc_ros/config/arm.yaml")
        assert (node.kwargs["on_exit"] is not None) == spec.required
    controller = next(n for n in nodes if n.kwargs["name"] == "controller")
    assert type(controller.kwargs["on_exit"]).__name__ == "Shutdown"  # on_exit shutdown semantics


def test_cli_launcher_commands_match_the_spec():
    values = parse_launch_arguments(["use_sim:=true", "model:=/tmp/m.pt", "namespace:=arm2", "demos:=/d"])
    specs = node_launches(values)
    assert [s.name for s in specs] == ["arm", "controller", "learner"]
    controller = node_command(specs[1], "arm2", "/cfg.yaml")
    assert controller[1].endswith("lib/tdmpc_ros/controller_node")
    assert ["-r", "__node:=controller", "-r", "__ns:=/arm2", "--params-file", "/cfg.yaml"] == controller[3:9]
    assert "controller.model_path:='/tmp/m.pt'" in controller
    assert "learner.demos:=['/d']" in node_command(specs[2], "", "/cfg.yaml")


@pytest.mark.parametrize("bad", [{"use_sim": "maybe"}, {"backend": "tensorrt"}, {"colour": "red"}])
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
