"""A third arm end to end: the xArm6 (6 joints, from its URDF) through `tdmpc-ros launch arm robot:=xarm6`, sim arm
+ controller + learner in lockstep over DDS: commands carry 6 values, transitions the 6-joint observation, and
a model the learner trains is swapped in."""
from __future__ import annotations

import pytest

from ros_helpers import LaunchCommand
from test_end_to_end import write_config
from tdmpc_ros.cli.harness import LaunchedGraph
from tdmpc_ros.config import load_config
from tdmpc_ros.data.bags import write_transition_bag
from tdmpc_ros.kinematics import robot_overrides
from tdmpc_ros.sim.env import ArmEnv
from tdmpc_ros.sim.expert import expert_episodes

pytestmark = [pytest.mark.ros, pytest.mark.slow]


@pytest.mark.parametrize("space", ["joint", "cartesian"])
def test_the_xarm6_learns_over_ros_in_either_action_space(tmp_path, space):
    write_config(tmp_path / "arm.yaml")
    overrides = robot_overrides("xarm6")
    overrides["task"]["action_space"] = space
    env = ArmEnv(load_config(tmp_path / "arm.yaml", overrides))
    for i, episode in enumerate(expert_episodes(env, 3)):
        write_transition_bag(tmp_path / "demos" / f"demo_{i}", [episode])
    env.close()
    arguments = {"config": str(tmp_path / "arm.yaml"), "demos": str(tmp_path / "demos"), "robot": "xarm6",
                 "action_space": space, "run_dir": str(tmp_path / "run"), "lockstep": "true"}
    with LaunchedGraph(arguments, log_path=tmp_path / "launch.log", observer_name="xarm6_probe",
                       launcher_class=LaunchCommand) as graph:
        commands = graph.observer.record("commands")
        transitions = graph.observer.record("transitions")
        status = graph.observer.record("statuses", keep=False)
        graph.start()
        assert graph.spin_until(lambda: status.last and status.last.msg.model_version >= 1
                                and status.last.msg.mode == "planning", 300), graph.log_tail()
        first = status.last.msg.model_version
        assert graph.spin_until(lambda: transitions.count >= 200 and status.last.msg.model_version > first, 300), \
            graph.log_tail()
        codes = graph.shutdown(timeout=60)
    assert codes == {"launch": 0}
    assert {len(s.msg.data) for s in commands.samples} == {6}
    action_size = 3 if space == "cartesian" else 6
    assert {(len(s.msg.observation), len(s.msg.action)) for s in transitions.samples} == {(2 * 6 + 9, action_size)}
