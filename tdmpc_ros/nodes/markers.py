"""What the controller is about to do, for RViz or Foxglove: visualization_msgs/MarkerArray on ~/markers.

Markers, in the arm's base frame: the goal (green sphere), the workspace box (translucent cube), the current
joint target's end effector (blue sphere) and the end-effector path of the plan's mean action sequence (a line
strip of horizon + 1 points: the path starts at the current target's end effector and takes each planned step
through the action rule, as the controller would). Built on a timer of the executor at controller.markers_hz
with a kinematics client of their own, off the control tick: they cost the tick nothing; and only while someone
subscribes (the kinematics client is made for the first one).
"""
from __future__ import annotations

import numpy as np
from geometry_msgs.msg import Point
from rclpy.clock import Clock, ClockType
from visualization_msgs.msg import Marker, MarkerArray

from tdmpc_ros.config import Config
from tdmpc_ros.control.action_rule import ActionRule
from tdmpc_ros.kinematics import ArmKinematics

GOAL, BOX, TARGET, PATH = range(4)  # marker ids in namespace "tdmpc_ros"


class PlanMarkers:
    def __init__(self, node, cfg: Config, loop, frame: str):
        self.node, self.loop, self.frame, self.task = node, loop, frame, cfg.task
        self.kinematics: ArmKinematics | None = None
        self.rule: ActionRule | None = None
        self.publisher = node.create_publisher(MarkerArray, "~/markers", 1)
        node.create_timer(1.0 / cfg.controller.markers_hz, self.publish, clock=Clock(clock_type=ClockType.STEADY_TIME))

    def publish(self) -> None:
        if self.publisher.get_subscription_count():
            self.publisher.publish(self.build())

    def build(self) -> MarkerArray:
        """The markers for the loop's state now: goal and target once known, the path once there is a plan."""
        if self.kinematics is None:
            self.kinematics = ArmKinematics(self.task)  # its own PyBullet client: never the tick thread's
            self.rule = ActionRule(self.task, self.kinematics.safe_lower, self.kinematics.safe_upper,
                                   self.kinematics.fk, self.kinematics.ik)
        loop, low, high = self.loop, self.rule.box_low, self.rule.box_high
        markers = [self._marker(BOX, Marker.CUBE, (low + high) / 2, high - low, (0.5, 0.5, 0.5, 0.15))]
        goal, target = loop.episode.goal, loop.held_target
        if goal is not None:
            markers.append(self._marker(GOAL, Marker.SPHERE, goal, [2 * loop.cfg.task.success_radius] * 3,
                                        (0.1, 0.9, 0.1, 0.8)))
        if target is not None:
            target = np.array(target)  # the tick thread replaces it; this copy is ours
            markers.append(self._marker(TARGET, Marker.SPHERE, self.kinematics.fk(target), [0.03] * 3,
                                        (0.2, 0.4, 1.0, 0.9)))
            mean = getattr(loop.planner, "last_mean", None)
            if mean is not None and np.shape(mean)[-1:] == (self.rule.action_dim,):
                path = self.rule.ee_path(np.array(mean), target, loop.action_scale)
                line = self._marker(PATH, Marker.LINE_STRIP, np.zeros(3), [0.01, 0.0, 0.0], (1.0, 0.5, 0.0, 1.0))
                line.points = [Point(x=float(x), y=float(y), z=float(z)) for x, y, z in path]
                markers.append(line)
        return MarkerArray(markers=markers)

    def _marker(self, marker_id: int, kind: int, position, scale, rgba) -> Marker:
        marker = Marker(ns="tdmpc_ros", id=marker_id, type=kind, action=Marker.ADD)
        marker.header.frame_id = self.frame
        marker.header.stamp = self.node.get_clock().now().to_msg()
        marker.pose.position = Point(x=float(position[0]), y=float(position[1]), z=float(position[2]))
        marker.scale.x, marker.scale.y, marker.scale.z = (float(v) for v in scale)
        marker.color.r, marker.color.g, marker.color.b, marker.color.a = rgba
        return marker

    def close(self) -> None:
        if self.kinematics is not None:
            self.kinematics.close()
