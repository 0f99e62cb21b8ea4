"""`task.robot: robot_description`: the node takes the arm's URDF from the robot_description topic (std_msgs/String,
transient local, as robot_state_publisher serves it) before it builds anything that needs the arm.

The URDF text is kept in a file of the node's own (PyBullet loads files), and the config is built again with
task.robot pointing at it, so joint names, end effector, home and sizes come from it exactly as from a file.
"""
from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path

from std_msgs.msg import String

from tdmpc_ros.arm_description import ROBOT_DESCRIPTION
from tdmpc_ros.config import Config, config_from_dict, config_to_dict
from tdmpc_ros.nodes import qos

WAIT_LOG_PERIOD_S = 10.0


def wait_for_robot_description(node, cfg: Config) -> Config:
    """`cfg` itself unless task.robot is robot_description; else blocks (spinning `node`) until the URDF arrives
    and returns the config built on it."""
    if cfg.task.robot != ROBOT_DESCRIPTION:
        return cfg
    import rclpy
    from rclpy.wait_for_message import wait_for_message

    node.get_logger().info("task.robot robot_description: waiting for the arm's URDF on the robot_description "
                           "topic (std_msgs/String, transient local)")
    waited, received = 0.0, None
    while received is None and rclpy.ok(context=node.context):
        # A wait set of its own (no executor): the node's executor takes it over afterwards.
        ok, msg = wait_for_message(String, node, ROBOT_DESCRIPTION, qos_profile=qos.LATCHED,
                                   time_to_wait=WAIT_LOG_PERIOD_S)
        if ok:
            received = msg.data
        else:
            waited += WAIT_LOG_PERIOD_S
            node.get_logger().info(f"still waiting for robot_description ({waited:.0f} s)")
    if received is None:
        raise RuntimeError("shut down while waiting for robot_description")
    folder = Path(tempfile.mkdtemp(prefix="tdmpc_ros_urdf_"))
    atexit.register(shutil.rmtree, folder, True)
    path = folder / "robot_description.urdf"
    path.write_text(received)
    data = config_to_dict(cfg)
    data["task"]["robot"] = str(path)
    data["model"]["obs_dim"] = data["model"]["action_dim"] = 0  # the sizes of the arm that arrived
    resolved = config_from_dict(data)
    node.get_logger().info(f"robot_description received: {len(resolved.task.joint_names)} joints "
                           f"{resolved.task.joint_names}, end effector {resolved.task.ee_link}")
    return resolved
