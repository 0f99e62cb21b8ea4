"""Controller node: MPPI at a fixed rate, delta-position targets to the arm's PD controller.

Subscribes  joint_states (JointState), goal (PointStamped), the task's sensors (task.name's `sensors`, e.g.
            push: object_pose, PoseStamped; stale or bad ones are a state fault, as joint states are),
            model_weights (tdmpc_ros/ModelWeights: the learner's checkpoints as bytes, with
            learner.weights_transport dds) or model_updates (tdmpc_ros/ModelUpdate: a path on this machine, with
            file), learner_progress (tdmpc_ros/LearnerProgress; lockstep only)
Publishes   the joint command (Float64MultiArray | JointTrajectory | JointState, from `controller.output`),
            transitions (tdmpc_ros/Transition), planner_status (tdmpc_ros/PlannerStatus), /diagnostics
Services    ~/enable (SetBool), ~/reset (Trigger: end the episode now; the next starts as after any episode)
Calls       arm/reset (Trigger) at each episode's end, where the arm offers it (the sim arm: new pose and goal)
Parameters  the task, planner, controller and sim sections; task.action_scale, controller.exploration_noise and
            controller.eval_mode can be set while running (applied between ticks), the others are read-only

This node converts, checks and publishes; the decisions are control/'s. The tick runs on a thread of its own
(control/tick_thread.py): in real time on a fixed grid, each command sent a fixed `controller.plan_budget`
share of the period after its tick was due, so planning-time jitter never reaches the command period; in
lockstep on each new joint state, holding the world while the learner is behind. The task's episodes are
decided there too (control/episode.py). Checkpoints load on a thread of their own and are
swapped in between ticks. With use_sim_time (lockstep launches), what a tick sends is stamped with the
simulated time of the joint state it acted on; status goes out once a second of steady time, also while a
lockstep world is held.

Every input is checked before it is used (control/inputs.py): a bad message changes nothing and is logged,
throttled per kind of problem, and counted in /diagnostics.
"""
from __future__ import annotations

import dataclasses
import gc
import time

from builtin_interfaces.msg import Duration, Time
from rcl_interfaces.msg import SetParametersResult
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PointStamped
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from rclpy.serialization import deserialize_message
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray
from std_srvs.srv import SetBool, Trigger
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from tdmpc_ros import topics
from tdmpc_ros.arm_description import check_velocity
from tdmpc_ros.config import ConfigError
from tdmpc_ros.control.inputs import (JointSample, SensorSample, goal_problem, header_problem, joint_state_problem,
                                      model_update_problem, progress_problem, sensor_values, shown)
from tdmpc_ros.control.loop import PLANNING, ControlLoop, TickResult
from tdmpc_ros.control.models import ModelLoader
from tdmpc_ros.control.tick_thread import TickThread
from tdmpc_ros.data.episode import stamp_ns
from tdmpc_ros.kinematics import ArmKinematics
from tdmpc_ros.learning.weights import WeightsAssembler
from tdmpc_ros.msg import LearnerProgress, ModelUpdate, ModelWeights, PlannerStatus, Transition
from tdmpc_ros.nodes import Rejections, guarded, log_failure, qos, run_node
from tdmpc_ros.nodes.markers import PlanMarkers
from tdmpc_ros.nodes.params import declare_config
from tdmpc_ros.nodes.robot_description import wait_for_robot_description
from tdmpc_ros.nodes.sensors import message_class

OUTPUT_TYPES = {"float64_multi_array": Float64MultiArray, "joint_trajectory": JointTrajectory,
                "joint_state": JointState}
SECTIONS = ("task", "planner", "controller", "sim")
LIVE = ("task.action_scale", "controller.exploration_noise", "controller.eval_mode")
STATUS_PERIOD_S = 1.0


class ControllerNode(Node):
    def __init__(self):
        super().__init__("controller")
        self.cfg = declare_config(self, SECTIONS, live=LIVE, on_change=self.on_parameter)
        self.cfg = wait_for_robot_description(self, self.cfg)  # task.robot robot_description: the URDF first
        ccfg = self.cfg.controller
        kinematics = ArmKinematics(self.cfg.task)
        self.add_on_set_parameters_callback(lambda params: self.check_speed(params, kinematics.description))
        self.goal_frame = self.cfg.task.base_frame or kinematics.base_link
        self.goal_low = [float(v) for v in self.cfg.task.goal_low]
        self.goal_high = [float(v) for v in self.cfg.task.goal_high]
        self.joint_names = list(self.cfg.task.joint_names)
        self.lockstep = self.cfg.sim.lockstep
        self.loop = ControlLoop(self.cfg, kinematics.safe_lower, kinematics.safe_upper, kinematics.fk,
                                seed=ccfg.seed, lockstep=self.lockstep, reset_arm=self.reset_arm,
                                ik=kinematics.ik)
        self.markers = PlanMarkers(self, self.cfg, self.loop, self.goal_frame) if ccfg.markers_hz > 0 else None
        self.control = TickThread(self.loop, self, self.lockstep, ccfg.lockstep_max_backlog, ccfg.thread_priority)
        self.requested_version = 0  # newest model version handed to the loader (0: none in flight)
        self.rejections = Rejections()
        self.tick_failures = 0

        self.command_pub = self.create_publisher(
            OUTPUT_TYPES[ccfg.output], ccfg.command_topic or topics.COMMAND_TOPICS[ccfg.output], qos.STATE)
        self.transition_pub = self.create_publisher(Transition, topics.TRANSITIONS, qos.TRANSITIONS)
        self.status_pub = self.create_publisher(PlannerStatus, topics.PLANNER_STATUS, 10)
        self.diag_pub = self.create_publisher(DiagnosticArray, topics.DIAGNOSTICS, 10)
        self.create_subscription(JointState, topics.JOINT_STATES, guarded(self, self.on_joint_state), qos.STATE)
        self.create_subscription(PointStamped, topics.GOAL, guarded(self, self.on_goal), qos.LATCHED)
        for sensor in self.loop.episode.task.sensors:
            self.create_subscription(message_class(sensor), sensor.topic,
                                     guarded(self, lambda msg, s=sensor: self.on_sensor(s, msg)), qos.STATE)
        if self.cfg.learner.weights_transport == "file":
            self.create_subscription(ModelUpdate, topics.MODEL_UPDATES, guarded(self, self.on_model_update),
                                     qos.LATCHED)
        if self.lockstep:
            self.create_subscription(LearnerProgress, topics.LEARNER_PROGRESS,
                                     guarded(self, self.on_learner_progress), 10)
        self.create_service(SetBool, topics.ENABLE, guarded(self, self.on_enable, service=True))
        self.create_service(Trigger, topics.RESET, guarded(self, self.on_reset, service=True))
        self.arm_reset = self.create_client(Trigger, ccfg.reset_service) if ccfg.reset_service else None
        self.create_timer(STATUS_PERIOD_S, self.publish_status, clock=Clock(clock_type=ClockType.STEADY_TIME))

        self.loader = ModelLoader(self.cfg, lambda: self.loop.model_cfg, self.on_model_ready,
                                  self.on_model_rejected)
        if ccfg.model_path:
            self.requested_version = 1
            self.loader.request(ccfg.model_path, "", 1)
        if self.cfg.learner.weights_transport == "dds":
            # Weights as bytes: nothing of the learner's filesystem is needed here. The reader keeps as many pieces
            # as the largest model allowed has, since a late joiner receives the newest model's all at once.
            self.weights = WeightsAssembler(ccfg.max_checkpoint_bytes, ccfg.weights_timeout_s)
            pieces = -(-ccfg.max_checkpoint_bytes // self.cfg.learner.weights_chunk_bytes)
            # Taken serialised and converted here, under the guard: a piece rclpy fails to convert (seen once,
            # as a pybind11 conversion error inside the executor) is a logged rejection, not the node's end.
            self.create_subscription(ModelWeights, topics.MODEL_WEIGHTS, guarded(self, self.on_model_weights_data),
                                     qos.model_weights(pieces), raw=True)
        if not self.lockstep:
            # Everything built so far (torch, rclpy, this node) lives for the whole run: keep it out of the
            # cyclic collector's full passes, which otherwise stall ticks for milliseconds now and then.
            gc.freeze()
        self.control.start()
        self.get_logger().info(
            f"controller: {self.cfg.task.control_rate_hz:g} Hz, {'lockstep' if self.lockstep else 'real time'}, "
            f"output {ccfg.output}, planner {self.cfg.planner.backend}/{self.cfg.planner.device}, "
            f"model {ccfg.model_path or 'none yet (holding until one arrives)'}")

    # -- inputs (executor thread): check, convert, hand over to the tick thread ---------------------------
    def reject(self, topic: str, subject: str, problem: str, consequence: str) -> None:
        """A message that changes nothing: count it and log it, throttled per kind of problem."""
        if (suffix := self.rejections.add(topic, problem)) is not None:
            self.get_logger().warning(f"{topic}: rejected {subject}: {problem}; {consequence}{suffix}")

    def on_joint_state(self, msg: JointState) -> None:
        if problem := joint_state_problem(msg):
            self.reject(topics.JOINT_STATES, "joint state", problem, "the last one stands (and goes stale)")
            return
        self.control.put_sample(JointSample(list(msg.name), list(msg.position), list(msg.velocity),
                                            time.monotonic(), stamp_ns(msg)))

    def on_sensor(self, sensor, msg) -> None:
        if problem := header_problem(msg.header, self.goal_frame):
            self.reject(sensor.topic, sensor.name, problem, "the last one stands (and goes stale)")
            return
        self.control.put_sensed(sensor.name, SensorSample(sensor_values(sensor.msg_type, msg), time.monotonic(),
                                                          stamp_ns(msg)))

    def on_goal(self, msg: PointStamped) -> None:
        if problem := goal_problem(msg, self.goal_frame, self.goal_low, self.goal_high):
            self.reject(topics.GOAL, "goal", problem, "the current episode goes on")
            return
        goal = [msg.point.x, msg.point.y, msg.point.z]
        self.control.between_ticks(lambda: self.warn_all(self.loop.set_goal(goal)))

    def on_learner_progress(self, msg: LearnerProgress) -> None:
        if problem := progress_problem(msg):
            self.reject(topics.LEARNER_PROGRESS, "progress", problem, "pacing by the last good report")
            return
        self.control.learner_progress(msg.backlog_steps)

    def on_model_update(self, msg: ModelUpdate) -> None:
        running = self.loop.model_version
        newest = max(running, self.requested_version)
        if msg.version == newest:  # a re-announcement (a restarted learner resumes from its newest checkpoint)
            return
        if problem := model_update_problem(msg, running, newest):
            self.reject(topics.MODEL_UPDATES, f"model v{msg.version} ({shown(msg.path, 300)})", problem,
                        f"v{running} keeps running")
            return
        self.get_logger().info(f"model v{msg.version} announced ({msg.path}); loading in the background")
        self.requested_version = msg.version
        self.loader.request(msg.path, msg.sha256, msg.version)

    def on_model_weights_data(self, data: bytes) -> None:
        self.on_model_weights(deserialize_message(data, ModelWeights))

    def on_model_weights(self, msg: ModelWeights) -> None:
        running = self.loop.model_version
        self.weights.newest = max(self.weights.newest, running, self.requested_version)
        added = self.weights.add(msg.version, msg.sha256, msg.total_bytes, msg.chunk_index, msg.chunk_count,
                                 msg.data, time.monotonic())
        if added.refused:
            self.reject(topics.MODEL_WEIGHTS, f"model v{msg.version} piece {msg.chunk_index}/{msg.chunk_count}",
                        added.refused, f"v{running} keeps running")
        for line in added.dropped:
            self.get_logger().warning(f"{topics.MODEL_WEIGHTS}: {line}; v{running} keeps running")
        if added.model is not None:
            self.get_logger().info(f"model v{added.model.version} received ({len(added.model.data)} bytes over "
                                   f"{topics.MODEL_WEIGHTS}); loading in the background")
            self.requested_version = added.model.version
            self.loader.request_bytes(added.model.data, added.model.sha256, added.model.version)

    def on_model_ready(self, planner, model, version: int, path: str) -> None:
        self.control.offer_model(planner, model, version)
        self.get_logger().info(f"model v{version} verified and ready ({path})")

    def on_model_rejected(self, line: str) -> None:
        """The loader refused a file: newer announcements than the running model are welcome again, so a bad
        announcement leaves nothing behind. (Loader thread: one int store.)"""
        self.requested_version = 0
        self.get_logger().error(line)

    def on_enable(self, request: SetBool.Request, response: SetBool.Response) -> SetBool.Response:
        self.control.between_ticks(lambda: self.loop.set_enabled(request.data))
        response.success, response.message = True, "enabled" if request.data else "disabled"
        self.get_logger().info(f"control {response.message}")
        return response

    def on_reset(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        self.control.between_ticks(self.loop.restart)
        response.success, response.message = True, f"episode {self.loop.episode_id} ends at the next tick"
        return response

    def check_speed(self, params, arm) -> SetParametersResult:
        """A live task.action_scale is held to the URDF velocity limits as the config's is (refused, with why)."""
        for param in params:
            if param.name == "task.action_scale" and isinstance(param.value, (int, float)):
                try:
                    check_velocity(dataclasses.replace(self.cfg.task, action_scale=float(param.value)), arm)
                except ConfigError as exc:
                    return SetParametersResult(successful=False, reason=str(exc))
        return SetParametersResult(successful=True)

    def on_parameter(self, name: str, value) -> None:
        """A live parameter the schema's rule accepted: the loop takes it between ticks (and checks it again)."""
        setter = {"task.action_scale": self.loop.set_action_scale,
                  "controller.exploration_noise": self.loop.set_exploration_noise,
                  "controller.eval_mode": self.loop.set_eval_mode}[name]
        self.control.between_ticks(lambda: setter(value))
        self.get_logger().info(f"{name} set to {value!r}: applied from the next tick")

    def reset_arm(self) -> bool:
        """Ask the arm for a new episode (tick thread); False where it offers no reset (a real arm)."""
        if self.arm_reset is None or not self.arm_reset.service_is_ready():
            return False
        self.arm_reset.call_async(Trigger.Request()).add_done_callback(self.on_arm_reset)
        return True

    def on_arm_reset(self, future) -> None:
        now = time.monotonic()  # before any joint state taken after this answer is stored
        response = future.result() if not future.cancelled() else None
        success, message = (response.success, response.message) if response is not None else (False, "cancelled")
        self.control.between_ticks(lambda: self.loop.reset.answered(success, message, now))

    # -- outputs (tick thread) ----------------------------------------------------------------------------
    def stamp(self, sample: JointSample | None) -> Time:
        """Lockstep: the simulated time of the joint state acted on; real time: now."""
        if self.lockstep and sample is not None:
            return Time(sec=sample.stamp_ns // 1_000_000_000, nanosec=sample.stamp_ns % 1_000_000_000)
        return self.get_clock().now().to_msg()

    def command(self, target, sample: JointSample | None):
        target = [float(v) for v in target]
        output = self.cfg.controller.output
        if output == "float64_multi_array":
            return Float64MultiArray(data=target)
        if output == "joint_trajectory":
            msg = JointTrajectory(joint_names=self.joint_names)
            period_ns = int(1e9 / self.cfg.task.control_rate_hz)
            msg.points = [JointTrajectoryPoint(positions=target, time_from_start=Duration(
                sec=period_ns // 1_000_000_000, nanosec=period_ns % 1_000_000_000))]
            return msg
        msg = JointState(name=self.joint_names, position=target)
        msg.header.stamp = self.stamp(sample)
        return msg

    def send(self, message) -> None:
        self.command_pub.publish(message)

    def transition(self, t, sample: JointSample | None) -> None:
        msg = Transition(episode_id=t.episode_id, step=t.step, reward=float(t.reward),
                         terminated=bool(t.terminated), truncated=bool(t.truncated))
        msg.header.stamp = self.stamp(sample)
        msg.observation = t.observation.astype(float).tolist()
        msg.action = t.action.astype(float).tolist()
        msg.next_observation = t.next_observation.astype(float).tolist()
        self.transition_pub.publish(msg)

    def report(self, result: TickResult) -> None:
        if not self.context.ok():  # a SIGINT shut the context down under this thread: rosout is gone
            return
        self.warn_all(result.log)
        if result.ended:
            self.get_logger().info(result.ended)

    def warn_all(self, lines: list[str]) -> None:
        for line in lines:
            self.get_logger().warning(line)

    def warn(self, line: str) -> None:
        self.get_logger().warning(line)

    def failed(self, exc: Exception) -> bool:
        """The tick thread's last-resort guard: log and tick on, unless the node is shutting down."""
        if not self.context.ok():
            return False
        self.tick_failures += 1
        log_failure(self, "the tick", self.tick_failures, exc)
        return True

    # -- status -------------------------------------------------------------------------------------------
    def publish_status(self) -> None:
        stats = self.loop.latency.summary_ms()
        loop, pcfg = self.loop, self.cfg.planner
        status = PlannerStatus(mode=loop.mode, backend=pcfg.backend, device=pcfg.device,
                               model_version=loop.model_version, plan_ms_p50=stats["p50_ms"],
                               plan_ms_p99=stats["p99_ms"], deadline_misses=loop.deadline_misses,
                               ticks=loop.ticks, fault=loop.fault.active or "")
        status.header.stamp = self.get_clock().now().to_msg()
        self.status_pub.publish(status)
        level = DiagnosticStatus.OK if loop.mode == PLANNING else DiagnosticStatus.WARN
        if loop.fault.active:
            level = DiagnosticStatus.ERROR
        values = {"mode": loop.mode, "backend": pcfg.backend, "device": pcfg.device,
                  "model_version": loop.model_version, "plan_ms_p50": f"{stats['p50_ms']:.2f}",
                  "plan_ms_p99": f"{stats['p99_ms']:.2f}", "deadline_misses": loop.deadline_misses,
                  "ticks": loop.ticks, "state_faults": loop.fault.count, "fault": loop.fault.active or "",
                  "episode": loop.episode_id, "episodes_ended": loop.episodes_ended, "successes": loop.successes,
                  "action_scale": loop.action_scale, "exploration_noise": loop.exploration_noise,
                  "eval_mode": loop.eval_mode, "rejected_messages": sum(self.rejections.counts.values())}
        diag = DiagnosticArray(status=[DiagnosticStatus(
            level=level, name=f"{self.get_namespace().rstrip('/')}/tdmpc_controller", hardware_id="tdmpc_ros",
            message=loop.fault.active or loop.mode,
            values=[KeyValue(key=k, value=str(v)) for k, v in values.items()])])
        diag.header.stamp = status.header.stamp
        self.diag_pub.publish(diag)

    def destroy_node(self) -> None:
        # Construction may have stopped part way (a bad config): close what was built, the tick thread first.
        if hasattr(self, "control"):
            self.control.stop()
        if hasattr(self, "loader"):
            self.loader.close()
        if hasattr(self, "loop"):
            self.loop.close()
        if getattr(self, "markers", None) is not None:
            self.markers.close()
        super().destroy_node()


def main(args=None) -> None:
    run_node(ControllerNode, args)


if __name__ == "__main__":
    main()
