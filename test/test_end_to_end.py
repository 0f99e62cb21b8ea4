"""The whole loop through `tdmpc-ros launch arm`: arm + controller + learner as real processes over DDS.

Transitions flow, the learner publishes a model the controller swaps in, and the command rate holds.
Settings are shrunk (tiny batches, a fast planner) so it runs in about a minute on two cores.
"""
from __future__ import annotations

import pytest
import yaml

from ros_helpers import CONFIG, LaunchCommand
from tdmpc_ros.cli.harness import LaunchedGraph
from tdmpc_ros.config import Config
from tdmpc_ros.data.bags import write_transition_bag
from tdmpc_ros.sim.expert import expert_episodes
from tdmpc_ros.sim.env import ArmEnv

pytestmark = [pytest.mark.ros, pytest.mark.slow]

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
    env = ArmEnv(cfg)
    for i, episode in enumerate(expert_episodes(env, episodes)):
        write_transition_bag(folder / f"demo_{i}", [episode])
    env.close()


@pytest.mark.parametrize("lockstep", [False, True], ids=["realtime", "lockstep"])
def test_launch_arm_runs_the_learning_loop(tmp_path, lockstep):
    write_config(tmp_path / "arm.yaml")
    write_demos(tmp_path / "demos")
    arguments = {"config": str(tmp_path / "arm.yaml"), "demos": str(tmp_path / "demos"),
                 "run_dir": str(tmp_path / "run"), "lockstep": str(lockstep).lower()}
    with LaunchedGraph(arguments, log_path=tmp_path / "launch.log", observer_name="e2e_probe",
                       launcher_class=LaunchCommand) as graph:
        commands = graph.observer.record("commands", keep=False)
        transitions = graph.observer.record("transitions", keep=False)
        updates = graph.observer.record("model_updates", keep=False)
        status = graph.observer.record("statuses", keep=False)
        graph.start()
        swapped = graph.spin_until(lambda: updates.count and status.last and status.last.msg.model_version >= 1
                                   and status.last.msg.mode == "planning", 300)
        assert swapped, graph.log_tail()
        first_version = status.last.msg.model_version
        commands_before, sent_before = commands.count, transitions.count
        # Control goes on, one transition per control step (the rate itself is `bench control`'s to measure).
        assert graph.spin_until(lambda: commands.count - commands_before >= 100
                                and transitions.count - sent_before >= 100, 120)
        assert graph.spin_until(lambda: status.last.msg.model_version > first_version, 60)  # later models swap in
        codes = graph.shutdown(timeout=60)
    text = (tmp_path / "launch.log").read_text()
    assert codes == {"launch": 0} and "exit codes: {'arm': 0, 'controller': 0, 'learner': 0}" in text
    for name in ("arm", "controller", "learner"):
        assert f"[{name}] " in text  # each node's output is prefixed with its name


def test_the_headline_launch_learns_without_demos(tmp_path):
    """`ros2 launch tdmpc_ros arm.launch.py` where no demos exist (the node set it starts, lockstep for speed):
    the learner says so, hands over its untrained model at once, the controller explores with it, and the
    learner trains on that online data and publishes newer models."""
    write_config(tmp_path / "arm.yaml")
    arguments = {"config": str(tmp_path / "arm.yaml"), "demos": str(tmp_path / "no_demos"),
                 "run_dir": str(tmp_path / "run"), "lockstep": "true"}
    with LaunchedGraph(arguments, log_path=tmp_path / "launch.log", observer_name="e2e_probe") as graph:
        transitions = graph.observer.record("transitions", keep=False)
        updates = graph.observer.record("model_updates", keep=True)
        status = graph.observer.record("statuses", keep=False)
        graph.start()
        assert graph.spin_until(lambda: updates.count >= 1, 300), graph.log_tail()
        assert updates.samples[0].msg.updates == 0  # the untrained model, before any data
        assert graph.spin_until(lambda: status.last and status.last.msg.mode == "planning"
                                and transitions.count >= 2 * SHRUNK["learner"]["publish_every"], 300), graph.log_tail()
        # trained on online data alone: a newer model, made from updates, reaches the controller
        assert graph.spin_until(lambda: updates.last.msg.updates > 0
                                and status.last.msg.model_version == updates.last.msg.version, 300), \
            graph.log_tail()
        codes = graph.shutdown(timeout=60)
    text = (tmp_path / "launch.log").read_text()
    assert "no demos in" in text and "learning online from scratch" in text
    assert codes == {"arm": 0, "controller": 0, "learner": 0}
