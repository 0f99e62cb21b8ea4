"""The whole loop through `tdmpc-ros launch arm`: arm + controller + learner as real processes over DDS.

Transitions flow, the learner publishes a model the controller swaps in, and the command rate holds.
Settings are shrunk (tiny batches, a fast planner) so it runs in about a minute on two cores.
"""
from __future__ import annotations

import signal
import subprocess
import sys

import pytest
import yaml

from ros_helpers import CONFIG, spin_until
from std_msgs.msg import Float64MultiArray
from tdmpc_ros import topics
from tdmpc_ros.config import Config
from tdmpc_ros.data.bags import write_transition_bag
from tdmpc_ros.msg import ModelUpdate, PlannerStatus, Transition
from tdmpc_ros.nodes import qos
from tdmpc_ros.sim.expert import expert_episodes
from tdmpc_ros.sim.reach_env import ReachEnv

SHRUNK = {
    "planner": {"compile": False, "num_samples": 64, "num_pi_trajs": 8, "num_elites": 8, "iterations": 2},
    "agent": {"batch_size": 32},
    "learner": {"pretrain_updates": 30, "publish_every": 30, "log_every_s": 2.0},
}


def write_config(path):
    data = yaml.safe_load(CONFIG.read_text())
    params = data["/**"]["ros__parameters"]
    for section, values in SHRUNK.items():
        params.setdefault(section, {}).update(values)
    path.write_text(yaml.safe_dump(data))


def write_demos(folder, episodes=3):
    cfg = Config()
    env = ReachEnv(cfg)
    for i, episode in enumerate(expert_episodes(env, episodes)):
        write_transition_bag(folder / f"demo_{i}", [episode])
    env.close()


@pytest.mark.parametrize("lockstep", [False, True], ids=["realtime", "lockstep"])
def test_launch_arm_runs_the_learning_loop(tmp_path, rclpy_context, lockstep):
    import rclpy

    write_config(tmp_path / "arm.yaml")
    write_demos(tmp_path / "demos")
    log = open(tmp_path / "launch.log", "w")
    launch = subprocess.Popen(
        [sys.executable, "-m", "tdmpc_ros.cli.main", "launch", "arm", f"config:={tmp_path / 'arm.yaml'}",
         f"demos:={tmp_path / 'demos'}", f"run_dir:={tmp_path / 'run'}", f"lockstep:={str(lockstep).lower()}"],
        stdout=log, stderr=subprocess.STDOUT)
    node = rclpy.create_node("e2e_probe", context=rclpy_context)
    commands, transitions, updates, status = [], [], [], []
    node.create_subscription(Float64MultiArray, topics.COMMAND_TOPICS["float64_multi_array"],
                             commands.append, qos.STATE)
    node.create_subscription(Transition, topics.TRANSITIONS, transitions.append, qos.TRANSITIONS)
    node.create_subscription(ModelUpdate, topics.MODEL_UPDATES, updates.append, qos.LATCHED)
    node.create_subscription(PlannerStatus, topics.PLANNER_STATUS, status.append, 10)
    try:
        swapped = spin_until(node, lambda: updates and status and status[-1].model_version >= 1
                             and status[-1].mode == "planning", 300)
        assert swapped, (tmp_path / "launch.log").read_text()[-4000:]
        first_version = status[-1].model_version
        commands.clear()
        sent_before = len(transitions)
        # Control goes on, one transition per control step (the rate itself is `bench control`'s to measure).
        assert spin_until(node, lambda: len(commands) >= 100 and len(transitions) - sent_before >= 100, 120)
        assert spin_until(node, lambda: status[-1].model_version > first_version, 60)  # later models swap in
    finally:
        launch.send_signal(signal.SIGINT)
        code = launch.wait(timeout=60)
        log.close()
    text = (tmp_path / "launch.log").read_text()
    assert code == 0 and "exit codes: {'arm': 0, 'controller': 0, 'learner': 0}" in text
    for name in ("arm", "controller", "learner"):
        assert f"[{name}] " in text  # each node's output is prefixed with its name
