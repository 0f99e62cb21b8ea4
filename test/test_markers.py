"""The controller node over real DDS: its RViz markers (goal, box, target, the plan's end-effector path of
horizon + 1 points), and an arm whose URDF arrives on robot_description (the xArm6: commands carry 6 values)."""
from __future__ import annotations

import pytest
from sensor_msgs.msg import JointState
from std_msgs.msg import String
from visualization_msgs.msg import Marker

from ros_helpers import (CHEAP_PLANNER, PerfectArm, spin_until, start_node, stop, untrained_checkpoint,
                         wait_for_subscriber)
from test_controller_node import set_parameters
from tdmpc_ros import topics
from tdmpc_ros.arm_description import urdf_path
from tdmpc_ros.config import load_config
from tdmpc_ros.kinematics import robot_overrides
from tdmpc_ros.nodes import qos

pytestmark = pytest.mark.ros

FAST = {**CHEAP_PLANNER, "task.max_episode_steps": 100000, "learner.weights_transport": "file",
        "controller.reset_service": ""}
GOAL = (0.5, 0.1, 0.5)


def perfect_arm(context, robot: str) -> PerfectArm:
    """`robot`'s joint states at 50 Hz where the last command said, the goal GOAL; records commands and markers."""
    return PerfectArm(context, load_config(None, robot_overrides(robot)), GOAL, 0.02, markers=True)


def checkpoint(tmp_path, robot: str) -> str:
    return untrained_checkpoint(tmp_path / f"{robot}.pt",
                                load_config(None, {**robot_overrides(robot), "agent": {"compile": False}}))


def test_markers_show_goal_box_target_and_the_plan_path(tmp_path, ros_domain, rclpy_context):
    log = tmp_path / "controller.log"
    proc = start_node("controller_node", {**FAST, "controller.model_path": checkpoint(tmp_path, "kuka_iiwa"),
                                          "controller.markers_hz": 10.0}, log)
    try:
        arm = perfect_arm(rclpy_context, "kuka_iiwa")

        def with_path():
            return next((m for m in arm.markers if any(k.type == Marker.LINE_STRIP for k in m.markers)), None)

        assert spin_until(arm.node, lambda: with_path() is not None, 90), log.read_text()[-3000:]
        markers = {m.id: m for m in with_path().markers}
        horizon = load_config().planner.horizon
        assert len(markers[3].points) == horizon + 1  # the current target's end effector, then one per step
        assert markers[3].points[0] == markers[2].pose.position  # the path starts at the target's end effector
        goal = markers[0].pose.position
        assert (goal.x, goal.y, goal.z) == pytest.approx(GOAL)
        box = markers[1]
        cfg = load_config()
        assert box.scale.x == pytest.approx(cfg.task.workspace_high[0] - cfg.task.workspace_low[0])
        assert all(m.header.frame_id == "lbr_iiwa_link_0" for m in markers.values())
        # A live action scale faster than a joint may move is refused, as in a config (0.6 x 20 Hz > 10 rad/s).
        [refused] = set_parameters(arm.node, {"task.action_scale": 0.6})
        assert not refused.successful and "exceeds joint 'lbr_iiwa_joint_1''s velocity limit 10" in refused.reason
        [accepted] = set_parameters(arm.node, {"task.action_scale": 0.04})
        assert accepted.successful
    finally:
        assert stop(proc) == 0


def test_the_urdf_comes_from_robot_description_and_the_xarm6_is_controlled(tmp_path, ros_domain, rclpy_context):
    log = tmp_path / "controller.log"
    proc = start_node("controller_node", {**FAST, "task.robot": "robot_description",
                                          "controller.model_path": checkpoint(tmp_path, "xarm6"),
                                          "controller.markers_hz": 0.0}, log)
    try:
        arm = perfect_arm(rclpy_context, "xarm6")
        assert spin_until(arm.node, lambda: "waiting for the arm's URDF" in log.read_text(), 60), log.read_text()
        assert wait_for_subscriber(arm.node, "/robot_description", 30)  # the node is up and waiting
        # nothing is commanded, nor even offered, before the arm is known
        assert not arm.commands and arm.node.count_publishers("/" + topics.COMMAND_TOPICS["float64_multi_array"]) == 0
        with open(urdf_path("xarm6")) as f:
            arm.node.create_publisher(String, "robot_description", qos.LATCHED).publish(String(data=f.read()))
        assert spin_until(arm.node, lambda: any(s.model_version == 1 and s.mode != "hold" for s in arm.status)
                          and len(arm.commands) >= 5, 90), log.read_text()[-3000:]
        assert all(len(c) == 6 for c in arm.commands)
        assert "robot_description received: 6 joints" in log.read_text()
    finally:
        assert stop(proc) == 0


def test_the_sim_arm_takes_its_urdf_from_robot_description(tmp_path, ros_domain, rclpy_context):
    import rclpy

    log = tmp_path / "arm.log"
    proc = start_node("arm_node", {"task.robot": "robot_description"}, log)
    try:
        node = rclpy.create_node("test_probe", context=rclpy_context)
        states = []
        node.create_subscription(JointState, topics.JOINT_STATES, states.append, qos.STATE)
        assert spin_until(node, lambda: "waiting for the arm's URDF" in log.read_text(), 60), log.read_text()
        assert wait_for_subscriber(node, "/robot_description", 30)  # the node is up and waiting
        assert not states and node.count_publishers("/" + topics.JOINT_STATES) == 0
        with open(urdf_path("xarm6")) as f:
            node.create_publisher(String, "robot_description", qos.LATCHED).publish(String(data=f.read()))
        assert spin_until(node, lambda: len(states) >= 3, 60), log.read_text()[-3000:]
        assert list(states[-1].name) == [f"joint{i}" for i in range(1, 7)]
    finally:
        assert stop(proc) == 0
