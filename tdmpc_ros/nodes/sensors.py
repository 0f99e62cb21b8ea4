"""The ROS side of the tasks' sensors (tasks/base.py's Sensor): message classes by type name, and the message of
a sensor's values (the sim arm publishes them; control/inputs.py's sensor_values reads them back)."""
from __future__ import annotations

from geometry_msgs.msg import PointStamped, PoseStamped

from tdmpc_ros.config import ConfigError
from tdmpc_ros.control.inputs import POINT, POSE

SENSOR_MESSAGES = {POSE: PoseStamped, POINT: PointStamped}


def message_class(sensor):
    if sensor.msg_type not in SENSOR_MESSAGES:
        raise ConfigError(f"task sensor {sensor.name} on {sensor.topic}: message type {sensor.msg_type} is not "
                          f"supported; use one of {sorted(SENSOR_MESSAGES)}")
    return SENSOR_MESSAGES[sensor.msg_type]


def sensor_message(sensor, values, stamp, frame_id: str):
    """The message that carries `values` (PoseStamped: x y z qx qy qz qw; PointStamped: x y z)."""
    msg = message_class(sensor)()
    msg.header.stamp, msg.header.frame_id = stamp, frame_id
    if isinstance(msg, PoseStamped):
        position, orientation = msg.pose.position, msg.pose.orientation
        position.x, position.y, position.z, orientation.x, orientation.y, orientation.z, orientation.w = (
            float(v) for v in values)
    else:
        msg.point.x, msg.point.y, msg.point.z = (float(v) for v in values)
    return msg
