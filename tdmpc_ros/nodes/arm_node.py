"""Arm node: the PyBullet arm behind ROS 2 joint interfaces, reset to a new pose and goal when asked.

Publishes   joint_states (JointState; sim.joint_state_rate_hz in real time, once per command in lockstep),
            goal (PointStamped, latched: one per reset, in the URDF base frame),
            the task's sensors (task.name's `sensors`, e.g. push: object_pose, PoseStamped), each just before
            every joint state and stamped alike,
            /clock (rosgraph_msgs/Clock; lockstep only: one control period further per command)
Subscribes  joint position targets, like ros2_control / Isaac Sim: <sim.controller_name>/commands
            (Float64MultiArray), joint_trajectory_controller/joint_trajectory (JointTrajectory, first point),
            joint_command (JointState). Bad commands (any size, NaN/inf, unknown or repeated names) are dropped
            (logged, throttled per kind; counted) and the last target held. Command stamps are not used.
Services    ~/reset (Trigger): home pose plus noise, held until the next command, and a new goal. The
            controller calls it when an episode ends: episodes are the controller's (control/episode.py), so this
            arm has no episode clock or success test of its own, and a dead controller leaves it holding.
Parameters  the task and sim sections, read-only

Real time: physics runs on a fixed 1/sim.physics_hz grid kept level with the wall clock; it is brought up to
now before each command is applied and before each joint state is published, so every command acts from the
physics step at which it arrived. Lockstep (sim.lockstep): each command received (valid or dropped) advances
exactly one control period, then /clock and the joint state are published, stamped with the new simulated
time (launches run every node with use_sim_time in lockstep, so stamps and bags follow it); a reset publishes
the new goal, then the reset state, at the same time.
"""
from __future__ import annotations

import time

import numpy as np
from builtin_interfaces.msg import Time
from geometry_msgs.msg import PointStamped
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from rosgraph_msgs.msg import Clock as ClockMsg
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory

from tdmpc_ros import topics
from tdmpc_ros.control.inputs import shown
from tdmpc_ros.nodes import LOG_THROTTLE_S, Rejections, guarded, qos, run_node
from tdmpc_ros.nodes.params import declare_config
from tdmpc_ros.nodes.robot_description import wait_for_robot_description
from tdmpc_ros.nodes.sensors import message_class, sensor_message
from tdmpc_ros.sim.arm import Arm
from tdmpc_ros.tasks import make_task

LOCKSTEP_HEARTBEAT_S = 1.0  # lockstep: repeat the state while no command came yet, for late-joining controllers
MAX_BACKLOG_S = 0.1  # real time: physics further behind than this skips ahead instead of catching up


class ArmNode(Node):
    def __init__(self):
        super().__init__("arm")
        self.cfg = declare_config(self, ("task", "sim"))
        self.cfg = wait_for_robot_description(self, self.cfg)  # task.robot robot_description: the URDF first
        task, sim = self.cfg.task, self.cfg.sim
        self.rng = np.random.default_rng(sim.seed)
        self.arm = Arm(task, sim, self.rng)
        self.task = make_task(task)
        self.names = list(task.joint_names)
        self.index = {name: i for i, name in enumerate(self.names)}
        self.lockstep = sim.lockstep
        self.goal = np.zeros(3)
        self.resets = self.dropped = 0
        self.rejections = Rejections()
        self.period_ns = round(1e9 / task.control_rate_hz)
        self.sim_periods = 0  # lockstep: control periods simulated, the time /clock tells

        self.state_pub = self.create_publisher(JointState, topics.JOINT_STATES, qos.STATE)
        self.goal_pub = self.create_publisher(PointStamped, topics.GOAL, qos.LATCHED)
        self.sensor_pubs = {s.name: (s, self.create_publisher(message_class(s), s.topic, qos.STATE))
                            for s in self.task.sensors}
        self.float_topic = float_topic = f"{sim.controller_name}/commands"
        self.create_subscription(Float64MultiArray, float_topic, guarded(self, self.on_array_command), qos.STATE)
        self.create_subscription(JointTrajectory, topics.COMMAND_TOPICS["joint_trajectory"],
                                 guarded(self, self.on_trajectory), qos.STATE)
        self.create_subscription(JointState, topics.COMMAND_TOPICS["joint_state"],
                                 guarded(self, self.on_joint_command), qos.STATE)
        self.create_service(Trigger, topics.RESET, guarded(self, self.on_reset, service=True))

        if self.lockstep:
            self.clock_pub = self.create_publisher(ClockMsg, topics.CLOCK, qos.STATE)
            # Steady time: with use_sim_time a ROS-time timer would wait for the very command it invites.
            self.create_timer(LOCKSTEP_HEARTBEAT_S, self.on_heartbeat, clock=Clock(clock_type=ClockType.STEADY_TIME))
        else:
            self.clock_start = time.monotonic()
            self.physics_steps = 0
            self.create_timer(1.0 / sim.joint_state_rate_hz, self.on_state_timer)
        self.new_pose_and_goal()
        self.get_logger().info(
            f"arm: {task.robot}, {sim.physics_hz:g} Hz physics, control period 1/{task.control_rate_hz:g} s, "
            f"{'lockstep' if self.lockstep else f'real time, joint states at {sim.joint_state_rate_hz:g} Hz'}, "
            f"commands on {float_topic}, {topics.COMMAND_TOPICS['joint_trajectory']}, "
            f"{topics.COMMAND_TOPICS['joint_state']}")

    # -- commands -----------------------------------------------------------------------------------------
    # A reason is "kind: detail"; the kind keys the log throttle. Sizes are checked before anything is copied.
    def from_array(self, msg: Float64MultiArray) -> tuple[np.ndarray | None, str]:
        if len(msg.data) != len(self.names):
            return None, f"wrong size: {len(msg.data)} values for {len(self.names)} joints"
        return np.asarray(msg.data, np.float64), ""

    def from_named(self, names, positions) -> tuple[np.ndarray | None, str]:
        """Positions in our joint order from a named command; every controlled joint exactly once."""
        if len(names) != len(self.names):
            return None, f"wrong size: {len(names)} joint names for {len(self.names)} joints"
        if len(positions) != len(names):
            return None, f"wrong size: {len(names)} joint names but {len(positions)} positions"
        names = list(names)
        unknown = [name for name in names if name not in self.index]
        if unknown:
            return None, f"unknown joint names: {shown(unknown)} (controlled: {self.names})"
        if len(set(names)) != len(names):
            return None, f"repeated joint names: {shown(names)} do not name each of {self.names} once"
        q = np.empty(len(self.names))
        q[[self.index[name] for name in names]] = positions
        return q, ""

    def on_array_command(self, msg: Float64MultiArray) -> None:
        self.on_command(self.float_topic, *self.from_array(msg))

    def on_trajectory(self, msg: JointTrajectory) -> None:
        topic = topics.COMMAND_TOPICS["joint_trajectory"]
        if not msg.points:
            self.on_command(topic, None, "no points: a trajectory without points")
        else:
            self.on_command(topic, *self.from_named(msg.joint_names, msg.points[0].positions))

    def on_joint_command(self, msg: JointState) -> None:
        self.on_command(topics.COMMAND_TOPICS["joint_state"], *self.from_named(msg.name, msg.position))

    def on_command(self, topic: str, q: np.ndarray | None, reason: str) -> None:
        if q is not None and not np.all(np.isfinite(q)):
            q, reason = None, f"non-finite value: joints {np.flatnonzero(~np.isfinite(q)).tolist()}"
        if q is None:
            self.dropped += 1
            if (suffix := self.rejections.add(topic, reason)) is not None:
                self.get_logger().warning(f"{topic}: dropped command ({reason}); holding the last target "
                                          f"({self.dropped} dropped so far){suffix}")
        else:
            if not self.lockstep:
                self.advance_to_now()  # the command acts from the physics step at which it arrived
            self.arm.set_target(q)
        if self.lockstep:
            self.arm.step_control_period()
            self.sim_periods += 1
            self.publish_state()

    # -- time ---------------------------------------------------------------------------------------------
    def on_state_timer(self) -> None:
        self.advance_to_now()
        self.publish_state()

    def advance_to_now(self) -> None:
        """Step physics up to the wall clock."""
        hz = self.cfg.sim.physics_hz
        due = int((time.monotonic() - self.clock_start) * hz) - self.physics_steps
        if due > MAX_BACKLOG_S * hz:
            self.get_logger().warning(f"physics {due / hz:.3f} s behind real time: skipping ahead",
                                      throttle_duration_sec=LOG_THROTTLE_S)
            self.physics_steps += due - 1
            due = 1
        for _ in range(max(due, 0)):
            self.arm.step()
            self.physics_steps += 1

    def on_heartbeat(self) -> None:
        if not self.arm.commanded:
            self.publish_state()

    def stamp(self) -> Time:
        """Lockstep: the simulated time; real time: now."""
        if self.lockstep:
            ns = self.sim_periods * self.period_ns
            return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)
        return self.get_clock().now().to_msg()

    # -- resets -------------------------------------------------------------------------------------------
    def new_pose_and_goal(self) -> None:
        """Home pose plus noise, held until the first command; a new goal, published latched."""
        self.arm.reset(self.rng)
        self.goal = self.task.sample_goal(self.rng)
        self.resets += 1
        msg = PointStamped()
        msg.header.stamp = self.stamp()
        msg.header.frame_id = self.arm.arm.base_link
        msg.point.x, msg.point.y, msg.point.z = (float(v) for v in self.goal)
        self.goal_pub.publish(msg)
        if self.lockstep:
            self.publish_state()

    def on_reset(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        self.new_pose_and_goal()
        response.success = True
        response.message = f"reset {self.resets}: goal {np.round(self.goal, 3).tolist()}"
        self.get_logger().info(response.message)
        return response

    def publish_state(self) -> None:
        stamp = self.stamp()
        if self.lockstep:
            self.clock_pub.publish(ClockMsg(clock=stamp))
        for name, values in self.arm.sensed().items():
            sensor, pub = self.sensor_pubs[name]
            pub.publish(sensor_message(sensor, values, stamp, self.arm.arm.base_link))
        q, qd, effort = self.arm.measured()
        msg = JointState(name=self.names, position=q.tolist(), velocity=qd.tolist(), effort=effort.tolist())
        msg.header.stamp = stamp
        self.state_pub.publish(msg)

    def destroy_node(self) -> None:
        if hasattr(self, "arm"):  # construction may have failed on a bad config
            self.arm.close()
        super().destroy_node()


def main(args=None) -> None:
    run_node(ArmNode, args)


if __name__ == "__main__":
    main()
