"""Controller node: MPPI at a fixed rate, delta-position targets to the arm's PD controller.

Subscribes  joint_states (JointState), goal (PointStamped), model_updates (tdmpc_ros/ModelUpdate),
            learner_progress (tdmpc_ros/LearnerProgress; lockstep only)
Publishes   the joint command (Float64MultiArray | JointTrajectory | JointState, from `controller.output`),
            transitions (tdmpc_ros/Transition), planner_status (tdmpc_ros/PlannerStatus), /diagnostics
Services    controller/enable (SetBool), controller/reset (Trigger)

In real time a timer ticks at `task.control_rate_hz` and each command goes out a fixed `controller.plan_budget`
share of the period after the tick's scheduled start, so planning-time jitter never reaches the command
period (a plan not ready by then gives way to the policy prior). With `sim.lockstep` each new joint state is
a tick, the arm steps once per command, and the controller sends nothing while it has no model or waits for
the next episode's goal (a slow timer re-ticks then), and while the learner's backlog exceeds
`controller.lockstep_max_backlog` env steps, so learning keeps pace with the world. Checkpoints load on a
thread of their own and are swapped in between ticks.

Every input is checked before it is used (sizes before anything is copied; goals finite, inside the task's
goal box and in the base frame; model updates newer, plausible, with a sha256 and an absolute path): a bad
message changes nothing and is logged, throttled per kind of problem, and counted in /diagnostics.
"""
from __future__ import annotations

import gc
import math
import os
import re
import time

from builtin_interfaces.msg import Duration
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PointStamped
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray
from std_srvs.srv import SetBool, Trigger
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from tdmpc_ros import topics
from tdmpc_ros.control.loop import PLANNING, ControlLoop, TickResult
from tdmpc_ros.control.models import ModelLoader
from tdmpc_ros.control.priority import realtime_priority
from tdmpc_ros.control.state import JointSample, shown
from tdmpc_ros.kinematics import ArmKinematics
from tdmpc_ros.msg import LearnerProgress, ModelUpdate, PlannerStatus, Transition
from tdmpc_ros.nodes import Rejections, guarded, qos, run_node
from tdmpc_ros.nodes.params import declare_config

OUTPUT_TYPES = {"float64_multi_array": Float64MultiArray, "joint_trajectory": JointTrajectory,
                "joint_state": JointState}
NEW_EPISODE_WAIT_S = 1.0  # an arm with no episode resets of its own gets a new episode after this
LOCKSTEP_KICK_S = 0.1  # lockstep: re-tick this often when no state arrives (waiting for a model or a goal)
# Input bounds, checked before a message's arrays are copied. A whole robot's /joint_states (arms, grippers,
# a mobile base) stays far below these; URDF joint names are short.
MAX_JOINT_STATE_ENTRIES = 1024
MAX_JOINT_NAME_CHARS = 256
# The learner announces one version per learner.publish_every updates: a jump this large past the running
# model is a corrupt or hostile message, and accepting it would refuse every real update after it.
MAX_MODEL_VERSION_JUMP = 1_000_000
MAX_PATH_CHARS = 4096  # Linux PATH_MAX
SHA256_HEX = re.compile(r"[0-9a-fA-F]{64}")
# Lockstep orders joint states against the goal's stamp: a goal stamped further ahead of this node's clock
# would make every later state look older than it, and the world would wait forever.
LOCKSTEP_MAX_GOAL_LEAD_S = 5.0


def stamp_problem(stamp) -> str | None:
    """What is malformed about a header stamp (builtin_interfaces/Time), or None. Zero (unset) is fine."""
    if stamp.nanosec >= 1_000_000_000:
        return f"malformed stamp: nanosec {stamp.nanosec} is not below 1e9"
    if stamp.sec < 0:
        return f"negative stamp: sec {stamp.sec}"
    return None


def joint_state_problem(msg: JointState) -> str | None:
    """Why a /joint_states message cannot even be read (oversized, malformed stamp), judged before copying
    its arrays; what it says about the joints is the control loop's to judge."""
    sizes = {"names": len(msg.name), "positions": len(msg.position), "velocities": len(msg.velocity),
             "efforts": len(msg.effort)}
    if max(sizes.values()) > MAX_JOINT_STATE_ENTRIES:
        return (f"oversized: {', '.join(f'{n} {what}' for what, n in sizes.items())} "
                f"(at most {MAX_JOINT_STATE_ENTRIES} each)")
    if any(len(name) > MAX_JOINT_NAME_CHARS for name in msg.name):
        return f"oversized: a joint name longer than {MAX_JOINT_NAME_CHARS} characters"
    return stamp_problem(msg.header.stamp)


class ControllerNode(Node):
    def __init__(self):
        super().__init__("controller")
        self.cfg = declare_config(self)
        ccfg = self.cfg.controller
        if ccfg.output not in OUTPUT_TYPES:
            raise ValueError(f"controller.output {ccfg.output!r} must be one of {sorted(OUTPUT_TYPES)}")
        kinematics = ArmKinematics(self.cfg.task)
        self.goal_frame = self.cfg.task.base_frame or kinematics.base_link
        self.goal_low = [float(v) for v in self.cfg.task.goal_low]
        self.goal_high = [float(v) for v in self.cfg.task.goal_high]
        self.loop = ControlLoop(self.cfg, kinematics.safe_lower, kinematics.safe_upper, kinematics.fk,
                                seed=self.cfg.agent.seed)
        self.joint_names = list(self.cfg.task.joint_names)
        self.lockstep = self.cfg.sim.lockstep
        self.sample: JointSample | None = None
        self.goal_stamp = 0.0
        self.last_command_time = 0.0
        self.last_tick_time = 0.0
        self.pending_model = None  # (planner, model, version) from the loader thread, installed between ticks
        self.episode_over_since: float | None = None
        self.learner_backlog = 0
        self.requested_version = 0  # newest model version handed to the loader (0: none in flight)
        self.rejections = Rejections()

        self.command_pub = self.create_publisher(
            OUTPUT_TYPES[ccfg.output], ccfg.command_topic or topics.COMMAND_TOPICS[ccfg.output], qos.STATE)
        self.transition_pub = self.create_publisher(Transition, topics.TRANSITIONS, qos.TRANSITIONS)
        self.status_pub = self.create_publisher(PlannerStatus, topics.PLANNER_STATUS, 10)
        self.diag_pub = self.create_publisher(DiagnosticArray, topics.DIAGNOSTICS, 10)
        self.create_subscription(JointState, topics.JOINT_STATES, guarded(self, self.on_joint_state), qos.STATE)
        self.create_subscription(PointStamped, topics.GOAL, guarded(self, self.on_goal), qos.LATCHED)
        self.create_subscription(ModelUpdate, topics.MODEL_UPDATES, guarded(self, self.on_model_update),
                                 qos.LATCHED)
        self.create_service(SetBool, topics.CONTROLLER_ENABLE, guarded(self, self.on_enable, service=True))
        self.create_service(Trigger, topics.CONTROLLER_RESET, guarded(self, self.on_reset, service=True))

        self.loader = ModelLoader(self.cfg, lambda: self.loop.model_cfg, self.on_model_ready,
                                  self.on_model_rejected)
        if ccfg.model_path:
            self.requested_version = 1
            self.loader.request(ccfg.model_path, "", 1)
        self.create_timer(1.0, self.publish_status)
        if self.lockstep:
            self.create_subscription(LearnerProgress, topics.LEARNER_PROGRESS,
                                     guarded(self, self.on_learner_progress), 10)
            self.create_timer(LOCKSTEP_KICK_S, self.on_lockstep_kick)
        else:
            self.tick_timer = self.create_timer(1.0 / self.cfg.task.control_rate_hz, self.on_tick)
            # Everything built so far (torch, rclpy, this node) lives for the whole run: keep it out of the
            # cyclic collector's full passes, which otherwise stall ticks for milliseconds now and then.
            gc.freeze()
            if ccfg.thread_priority > 0:
                # Last: the loader thread started above stays normal; the planner worker resets itself.
                if (why := realtime_priority(ccfg.thread_priority)) is not None:
                    self.get_logger().warning(f"{why}: ticking at normal priority, expect more period jitter")
        self.get_logger().info(
            f"controller: {self.cfg.task.control_rate_hz:g} Hz, {'lockstep' if self.lockstep else 'real time'}, "
            f"output {ccfg.output}, planner {self.cfg.planner.backend}/{self.cfg.planner.device}, "
            f"model {ccfg.model_path or 'none yet (holding until one arrives)'}")

    # -- inputs -------------------------------------------------------------------------------------------
    def reject(self, topic: str, subject: str, problem: str, consequence: str) -> None:
        """A message that changes nothing: count it and log it, throttled per kind of problem."""
        if (suffix := self.rejections.add(topic, problem)) is not None:
            self.get_logger().warning(f"{topic}: rejected {subject}: {problem}; {consequence}{suffix}")

    def on_joint_state(self, msg: JointState) -> None:
        if problem := joint_state_problem(msg):
            self.reject(topics.JOINT_STATES, "joint state", problem, "the last one stands (and goes stale)")
            return
        stamp = msg.header.stamp.sec + 1e-9 * msg.header.stamp.nanosec
        self.sample = JointSample(list(msg.name), list(msg.position), list(msg.velocity), time.monotonic(), stamp)
        if self.lockstep:
            self.on_lockstep_state()

    def goal_problem(self, msg: PointStamped) -> str | None:
        """Why a goal must not start an episode, or None: finite, inside the task's goal box (what the model
        learned to reach), in the base frame, stamped sanely."""
        if problem := stamp_problem(msg.header.stamp):
            return problem
        if msg.header.frame_id != self.goal_frame:
            return f"wrong frame: {shown(msg.header.frame_id)} is not the base frame {self.goal_frame!r}"
        xyz = [msg.point.x, msg.point.y, msg.point.z]
        if not all(math.isfinite(v) for v in xyz):
            return f"non-finite coordinates: {xyz}"
        if not all(low <= v <= high for v, low, high in zip(xyz, self.goal_low, self.goal_high)):
            return (f"outside the goal box: {xyz} not within {self.goal_low} .. {self.goal_high} "
                    "(task.goal_low/high)")
        if self.lockstep:
            stamp = msg.header.stamp.sec + 1e-9 * msg.header.stamp.nanosec
            lead = stamp - 1e-9 * self.get_clock().now().nanoseconds
            if lead > LOCKSTEP_MAX_GOAL_LEAD_S:
                return (f"stamped in the future: {lead:.1f} s ahead of this node's clock (lockstep orders joint "
                        f"states by it; at most {LOCKSTEP_MAX_GOAL_LEAD_S:g} s)")
        return None

    def on_goal(self, msg: PointStamped) -> None:
        if problem := self.goal_problem(msg):
            self.reject(topics.GOAL, "goal", problem, "the current episode goes on")
            return
        for line in self.loop.set_goal([msg.point.x, msg.point.y, msg.point.z]):
            self.get_logger().warning(line)
        self.goal_stamp = msg.header.stamp.sec + 1e-9 * msg.header.stamp.nanosec
        self.episode_over_since = None
        if self.lockstep:
            self.on_lockstep_state()

    def on_lockstep_state(self) -> None:
        """Tick on a state from the current episode (one stamped before the goal predates the arm's reset),
        unless the learner is too far behind."""
        if self.sample is not None and self.sample.stamp >= self.goal_stamp and not self.waiting_for_learner():
            self.on_tick()

    def on_learner_progress(self, msg: LearnerProgress) -> None:
        # +1: the learner rounds owed updates / utd_ratio (floats) up
        if msg.backlog_steps > msg.env_steps + 1:
            self.reject(topics.LEARNER_PROGRESS, "progress", f"inconsistent: {msg.backlog_steps} steps owed of "
                        f"{msg.env_steps} seen", "pacing by the last good report")
            return
        was_waiting = self.waiting_for_learner()
        self.learner_backlog = msg.backlog_steps
        if was_waiting and not self.waiting_for_learner():
            self.on_lockstep_state()

    def waiting_for_learner(self) -> bool:
        limit = self.cfg.controller.lockstep_max_backlog
        return limit > 0 and self.learner_backlog > limit

    def on_lockstep_kick(self) -> None:
        """Re-tick while waiting for a model or a goal; after a command, give the arm state_timeout to answer."""
        now = time.monotonic()
        answered = self.sample is not None and self.sample.received >= self.last_command_time
        if not answered and now - self.last_command_time < self.cfg.controller.state_timeout:
            return
        if now - self.last_tick_time > LOCKSTEP_KICK_S:
            self.on_lockstep_state()

    def model_update_problem(self, msg: ModelUpdate, running: int, newest: int) -> str | None:
        """Why an announced checkpoint must not even reach the loader, or None. `newest`: the newest version
        running or loading. The file itself is the loader's to check (checksum, regular file, size)."""
        if msg.version < newest:
            return f"out of order: older than v{newest}"
        if msg.version > running + MAX_MODEL_VERSION_JUMP:
            return (f"implausible version: over {MAX_MODEL_VERSION_JUMP} ahead of the running v{running} "
                    "(would refuse every real update after it)")
        if not msg.sha256:
            return "no sha256: the update carries no checksum"
        if not SHA256_HEX.fullmatch(msg.sha256):
            return f"malformed sha256: {shown(msg.sha256)} is not 64 hex digits"
        if not msg.path:
            return "no path: the update names no file"
        if len(msg.path) > MAX_PATH_CHARS:
            return f"path too long: {len(msg.path)} characters (PATH_MAX {MAX_PATH_CHARS})"
        if not os.path.isabs(msg.path):
            return "relative path: the learner announces absolute paths"
        return None

    def on_model_update(self, msg: ModelUpdate) -> None:
        running = self.loop.model_version
        newest = max(running, self.requested_version)
        if msg.version == newest:  # a re-announcement (a restarted learner resumes from its newest checkpoint)
            return
        if problem := self.model_update_problem(msg, running, newest):
            self.reject(topics.MODEL_UPDATES, f"model v{msg.version} ({shown(msg.path, 300)})", problem,
                        f"v{running} keeps running")
            return
        self.get_logger().info(f"model v{msg.version} announced ({msg.path}); loading in the background")
        self.requested_version = msg.version
        self.loader.request(msg.path, msg.sha256, msg.version)

    def on_model_ready(self, planner, model, version: int, path: str) -> None:
        self.pending_model = (planner, model, version)  # one reference store: atomic for the tick thread
        self.get_logger().info(f"model v{version} verified and ready ({path})")

    def on_model_rejected(self, line: str) -> None:
        """The loader refused a file: newer announcements than the running model are welcome again, so a bad
        announcement leaves nothing behind. (Loader thread: one int store.)"""
        self.requested_version = 0
        self.get_logger().error(line)

    def on_enable(self, request: SetBool.Request, response: SetBool.Response) -> SetBool.Response:
        self.loop.set_enabled(request.data)
        response.success, response.message = True, "enabled" if request.data else "disabled"
        self.get_logger().info(f"control {response.message}")
        return response

    def on_reset(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        self.loop.new_episode()
        response.success, response.message = True, f"episode {self.loop.episode_id}"
        return response

    # -- the tick -----------------------------------------------------------------------------------------
    def on_tick(self) -> None:
        pending = self.pending_model
        if pending is not None and (pending[2] <= self.loop.model_version or self.loop.install(*pending)):
            self.pending_model = None  # installed, or older than the running model (loads can finish out of order)
        now = self.last_tick_time = time.monotonic()
        state_clock = now
        if self.lockstep and self.sample is not None and self.last_command_time <= self.sample.received:
            state_clock = self.sample.received  # not commanded since this state: it is as fresh as it can be
        publish_at = None if self.lockstep else self.scheduled_start(now) + self.loop.budget
        result = self.loop.tick(self.sample, state_clock, realtime=not self.lockstep, deadline=publish_at)
        for line in result.log:
            self.get_logger().warning(line)
        idle = self.lockstep and (self.loop.planner is None or self.loop.episode_over)
        if result.target is not None and not idle:
            message = self.command_message(result)
            if publish_at is not None:
                time.sleep(max(publish_at - time.monotonic(), 0.0))
            self.command_pub.publish(message)
            self.last_command_time = time.monotonic()
        if result.transition is not None:
            self.transition_pub.publish(self.transition_message(result.transition))
        self.start_next_episode_if_idle(now)

    def scheduled_start(self, now: float) -> float:
        """When the running tick was due (time.monotonic()): the timer's next call less one period.

        Anchored to the timer's own schedule, so a callback that starts late still publishes on the grid.
        """
        until_next_ns = self.tick_timer.time_until_next_call()
        if until_next_ns is None:  # timer cancelled (shutting down)
            return now
        return now + until_next_ns * 1e-9 - self.loop.period

    def start_next_episode_if_idle(self, now: float) -> None:
        if not self.loop.episode_over:
            self.episode_over_since = None
        elif self.episode_over_since is None:
            self.episode_over_since = now
        elif now - self.episode_over_since > NEW_EPISODE_WAIT_S:
            self.get_logger().info("no new goal after the episode ended: next episode on the same goal")
            self.loop.restart_episode()
            self.episode_over_since = None

    def command_message(self, result: TickResult):
        target = [float(v) for v in result.target]
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
        msg.header.stamp = self.get_clock().now().to_msg()
        return msg

    def transition_message(self, t) -> Transition:
        msg = Transition(episode_id=t.episode_id, step=t.step, reward=float(t.reward),
                         terminated=bool(t.terminated), truncated=bool(t.truncated))
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.observation = t.observation.astype(float).tolist()
        msg.action = t.action.astype(float).tolist()
        msg.next_observation = t.next_observation.astype(float).tolist()
        return msg

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
                  "episode": loop.episode_id, "rejected_messages": sum(self.rejections.counts.values())}
        diag = DiagnosticArray(status=[DiagnosticStatus(
            level=level, name=f"{self.get_namespace().rstrip('/')}/tdmpc_controller", hardware_id="tdmpc_ros",
            message=loop.fault.active or loop.mode,
            values=[KeyValue(key=k, value=str(v)) for k, v in values.items()])])
        diag.header.stamp = status.header.stamp
        self.diag_pub.publish(diag)

    def destroy_node(self) -> None:
        # Construction may have stopped part way (a bad config): close what was built.
        if hasattr(self, "loader"):
            self.loader.close()
        if hasattr(self, "loop"):
            self.loop.close()
        super().destroy_node()


def main(args=None) -> None:
    run_node(ControllerNode, args)


if __name__ == "__main__":
    main()
