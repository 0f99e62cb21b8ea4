"""The arm from its URDF: a URDF written here (4 movable joints, a fixed one, a continuous one, a side branch),
the bundled xArm6, and the errors that name what is wrong."""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from tdmpc_ros.arm_description import CONTINUOUS_LIMIT, DEFAULT_VELOCITY, describe, load_urdf
from tdmpc_ros.config import ConfigError, TaskConfig, load_config
from tdmpc_ros.kinematics import ArmKinematics, robot_overrides

pytestmark = pytest.mark.unit


def joint(name, kind, parent, child, xyz="0 0 0.2", limit='<limit lower="-2" upper="2" velocity="2" effort="10"/>'):
    return (f'<joint name="{name}" type="{kind}"><parent link="{parent}"/><child link="{child}"/>'
            f'<origin xyz="{xyz}" rpy="0 0 0"/><axis xyz="0 1 0"/>{limit}</joint>')


def link(name):
    return (f'<link name="{name}"><inertial><mass value="1"/><inertia ixx="0.01" iyy="0.01" izz="0.01" ixy="0" '
            f'ixz="0" iyz="0"/></inertial></link>')


# base -j1-> l1 -fixed-> l1b -j2-> l2 -j3 (continuous)-> l3 -j4-> tool; side branch l2 -j_cam-> camera.
ARM_URDF = "<robot name='test_arm'>" + "".join(link(n) for n in ("base", "l1", "l1b", "l2", "l3", "tool", "camera")) + (
    joint("j1", "revolute", "base", "l1", limit='<limit lower="-2.5" upper="1.5" velocity="2" effort="10"/>')
    + joint("j_fixed", "fixed", "l1", "l1b", limit="")
    + joint("j2", "revolute", "l1b", "l2", limit='<limit lower="-1" upper="1" velocity="1.5" effort="10"/>')
    + joint("j3", "continuous", "l2", "l3", limit="")
    + joint("j_cam", "revolute", "l2", "camera", xyz="0.1 0 0")
    + joint("j4", "revolute", "l3", "tool", limit='<limit lower="0" upper="2" velocity="3" effort="10"/>')
) + "</robot>"


@pytest.fixture
def arm_urdf(tmp_path):
    path = tmp_path / "test_arm.urdf"
    path.write_text(ARM_URDF)
    return str(path)


def test_a_urdf_loads_with_its_chain_joints_limits_and_home(arm_urdf):
    urdf = load_urdf(arm_urdf)
    assert urdf.root == "base" and urdf.tip() == "tool"  # the deepest leaf, not the side branch's camera
    assert [j.name for j in urdf.chain("tool")] == ["j1", "j_fixed", "j2", "j3", "j4"]
    arm = describe(urdf)
    assert arm.ee_link == "tool" and arm.joint_names == ("j1", "j2", "j3", "j4")
    assert arm.lower == (-2.5, -1.0, -CONTINUOUS_LIMIT, 0.0) and arm.upper == (1.5, 1.0, CONTINUOUS_LIMIT, 2.0)
    assert arm.velocity == (2.0, 1.5, DEFAULT_VELOCITY, 3.0)  # the continuous joint gives none: a sane bound
    assert arm.effort == (10.0, 10.0, math.inf, 10.0)  # none either: the sim's max_effort, not a limp joint
    assert arm.home == (-0.5, 0.0, 0.0, 1.0)  # mid-range, 0 for the continuous joint
    assert describe(urdf, ee_link="camera").joint_names == ("j1", "j2", "j_cam")
    assert describe(urdf, ["j4", "j1"]).joint_names == ("j4", "j1")  # an explicit order is kept


def test_the_config_takes_the_arm_from_the_urdf_and_sizes_follow(arm_urdf):
    cfg = load_config(None, robot_overrides(arm_urdf))
    assert cfg.task.joint_names == ["j1", "j2", "j3", "j4"] and cfg.task.ee_link == "tool"
    assert cfg.sim.home == [-0.5, 0.0, 0.0, 1.0]
    assert cfg.model.obs_dim == 2 * 4 + 9 and cfg.model.action_dim == 4
    cartesian = load_config(None, {**robot_overrides(arm_urdf), "task": {
        **robot_overrides(arm_urdf)["task"], "action_space": "cartesian"}})
    assert cartesian.model.action_dim == 3 and cartesian.model.obs_dim == 2 * 4 + 9
    kin = ArmKinematics(cfg.task)
    np.testing.assert_allclose(kin.safe_lower, np.array([-2.5, -1.0, -math.pi, 0.0]) + cfg.task.joint_margin)
    goal = kin.fk(np.array([0.3, 0.4, -0.5, 0.8]))
    assert np.linalg.norm(kin.fk(kin.ik(goal, np.array(cfg.sim.home))) - goal) < 1e-3
    kin.close()


def test_the_xarm6_is_bundled_with_six_joints():
    cfg = load_config(None, robot_overrides("xarm6"))
    assert cfg.task.joint_names == [f"joint{i}" for i in range(1, 7)] and cfg.task.ee_link == "link6"
    assert cfg.model.action_dim == 6 and cfg.model.obs_dim == 21 and len(cfg.sim.home) == 6


def test_a_wrong_ee_link_names_the_links_that_exist(arm_urdf):
    with pytest.raises(ConfigError, match=r"task.ee_link: 'gripper' is not a link of .*test_arm.urdf; its links are "
                                          r"\['base', 'camera', 'l1', 'l1b', 'l2', 'l3', 'tool'\]"):
        TaskConfig(robot=arm_urdf, ee_link="gripper")


def test_a_urdf_that_does_not_parse_names_the_file_and_the_fault(tmp_path):
    broken = tmp_path / "broken.urdf"
    broken.write_text(ARM_URDF[:-20])
    with pytest.raises(ConfigError, match=r"task.robot: .*broken.urdf is not valid XML: .*line 1"):
        TaskConfig(robot=str(broken))
    broken.write_text(ARM_URDF.replace('upper="1" velocity="1.5"', 'upper="wide" velocity="1.5"'))
    with pytest.raises(ConfigError, match=r"broken.urdf: joint 'j2': upper='wide' is not a number"):
        TaskConfig(robot=str(broken))
    with pytest.raises(ConfigError, match=r"task.robot: 'no_such_arm' is neither a bundled arm"):
        TaskConfig(robot="no_such_arm")


def test_joint_names_off_the_chain_are_named(arm_urdf):
    with pytest.raises(ConfigError, match=r"task.joint_names: 'j_cam' is not a movable joint on the chain base -> "
                                          r"tool .*\['j1', 'j2', 'j3', 'j4'\]"):
        TaskConfig(robot=arm_urdf, joint_names=["j1", "j_cam"])
    with pytest.raises(ConfigError, match=r"'j_fixed' .*a fixed joint"):
        TaskConfig(robot=arm_urdf, joint_names=["j1", "j_fixed"])
    # Names of no joint of the file pass the config (a model-only config) but never reach an arm.
    with pytest.raises(ConfigError, match=r"task.joint_names: 'elbow' .*not a joint of the file"):
        ArmKinematics(TaskConfig(robot=arm_urdf, joint_names=["j1", "elbow"]))


def test_a_step_faster_than_a_joint_may_move_is_refused_naming_both_numbers(arm_urdf):
    with pytest.raises(ConfigError, match=r"task.action_scale x task.control_rate_hz = 0.1 x 20 = 2 rad/s exceeds "
                                          r"joint 'j2''s velocity limit 1.5 rad/s"):
        TaskConfig(robot=arm_urdf, action_scale=0.1, control_rate_hz=20.0)
    TaskConfig(robot=arm_urdf, action_scale=0.05, control_rate_hz=20.0)  # 1 rad/s: within every limit


def test_launch_arguments_robot_and_action_space_reach_every_node():
    from tdmpc_ros.launch_spec import node_launches

    launches = node_launches({"robot": "xarm6", "action_space": "cartesian"})
    assert {n.name for n in launches} == {"arm", "controller", "learner"}
    for n in launches:
        assert n.parameters["task.robot"] == "xarm6" and n.parameters["task.action_space"] == "cartesian"
    with pytest.raises(ValueError, match="action_space"):
        node_launches({"action_space": "polar"})
    assert all("task.robot" not in n.parameters for n in node_launches({}))  # not given: the config's arm


def test_a_relative_urdf_path_is_kept_absolute(arm_urdf, monkeypatch):
    import os

    monkeypatch.chdir(os.path.dirname(arm_urdf))
    assert TaskConfig(robot="test_arm.urdf").robot == arm_urdf


def test_a_checkpoint_outlives_its_urdf_file(arm_urdf, tmp_path):
    """A model trained on a URDF file loads where that file is not (another machine, a moved file): its config
    keeps the recorded joints and end effector, and the arm that loads it checks them against its own."""
    import os

    from tdmpc_ros.learning.agent import Agent
    from tdmpc_ros.learning.checkpoint import check_arm, load_checkpoint, save_checkpoint

    cfg = load_config(None, robot_overrides(arm_urdf))
    path = tmp_path / "model.pt"
    save_checkpoint(path, Agent(cfg), {"env_steps": 0})
    os.remove(arm_urdf)
    ckpt = load_checkpoint(path)
    assert ckpt.config.task.joint_names == ["j1", "j2", "j3", "j4"] and ckpt.config.task.ee_link == "tool"
    assert ckpt.meta["arm"]["urdf_sha256"] == load_urdf_digest(ARM_URDF)
    elsewhere = tmp_path / "elsewhere" / "arm.urdf"
    elsewhere.parent.mkdir()
    elsewhere.write_text(ARM_URDF)
    check_arm(ckpt, TaskConfig(robot=str(elsewhere)))  # the same arm, its URDF at another path
    with pytest.raises(ConfigError, match="neither a bundled arm"):
        TaskConfig(robot=arm_urdf)  # a config naming the missing file, with no recorded names, still refused


def load_urdf_digest(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode()).hexdigest()


def test_a_urdf_whose_meshes_are_missing_is_simulated_bare_with_a_warning(tmp_path):
    """Kinematics need no geometry and say nothing; the sim runs the joints and warns that nothing can touch
    the arm (a robot_description's package:// meshes are never found here)."""
    from tdmpc_ros.config import SimConfig
    from tdmpc_ros.sim.arm import Arm

    mesh = '<visual><geometry><mesh filename="package://no_such_pkg/meshes/tool.stl"/></geometry></visual>'
    path = tmp_path / "meshed.urdf"
    path.write_text(ARM_URDF.replace('<link name="tool">', f'<link name="tool">{mesh}'))
    task = TaskConfig(robot=str(path))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ArmKinematics(task).close()
    with pytest.warns(UserWarning, match=r"meshed\.urdf without its meshes .*no collision shapes"):
        arm = Arm(task, SimConfig())
    target = np.array([0.3, 0.4, -0.5, 0.8])
    arm.set_target(target)
    for _ in range(40):
        arm.step_control_period()
    assert np.abs(arm.state()[0] - target).max() < 0.05  # the joints still move under PD
    arm.close()
