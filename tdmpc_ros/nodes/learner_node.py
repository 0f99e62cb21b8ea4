"""Learner node: trains from demo bags plus the controller's live transitions, hands checkpoints back.

Subscribes  transitions (tdmpc_ros/Transition; reliable, queue up to INTAKE_QUEUE_BYTES, taken serialised); in a
            fleet <arm>/transitions of each arm in learner.arms, and with learner.discover_arms any
            <ns>/transitions that appears on the graph
Publishes   model_updates (tdmpc_ros/ModelUpdate; latched), model_weights (tdmpc_ros/ModelWeights: with
            learner.weights_transport dds, each checkpoint's bytes in pieces; the newest model's kept for late
            joiners), learner_progress (tdmpc_ros/LearnerProgress, 20 Hz: a lockstep controller holds the world
            while the learner's backlog is large), /diagnostics

Transitions are taken as the serialised bytes DDS delivered: checked field by field before anything is
converted (data.live_intake.LiveIntake: sizes against the config, NaN/inf, step order, per-publisher sequence
numbers, so every loss is counted) and appended unchanged to an online rosbag2 (mcap) in
`learner.run_dir/online` as they arrive (a fleet's arm `a` in `online/a`, episode ids being each arm's own). The
backlog lockstep controllers pace by is every arm's. On start the node resumes from the newest valid checkpoint
and reloads its online bags with the demos; on stop it takes what DDS still holds before the bags close.
Training runs on a thread of its own so the subscription is never starved.
"""
from __future__ import annotations

import os
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import torch
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from rclpy.subscription import MessageInfo

from tdmpc_ros import topics
from tdmpc_ros.data.bags import read_episodes
from tdmpc_ros.data.live_intake import LiveIntake, transition_cdr_bytes
from tdmpc_ros.data.online_bags import ArmBags
from tdmpc_ros.learning.checkpoint_file import file_sha256
from tdmpc_ros.learning.learner import Learner, Published
from tdmpc_ros.learning.metrics import MetricsLogger
from tdmpc_ros.learning.weights import split
from tdmpc_ros.msg import LearnerProgress, ModelUpdate, ModelWeights, Transition
from tdmpc_ros.nodes import qos, run_node
from tdmpc_ros.nodes.params import declare_config
from tdmpc_ros.nodes.robot_description import wait_for_robot_description

PROGRESS_PERIOD_S = 0.05
INTAKE_QUEUE_BYTES = 64 * 1024 * 1024
"""Memory for transitions DDS has received and the intake not yet taken (up to qos.MAX_QUEUE_DEPTH messages): a
burst queues here; beyond it the oldest are overwritten, which the intake counts from sequence numbers."""
TAKE_BATCH = 500
"""Messages one executor wake takes at most: waking the executor costs rclpy more than taking a message, so a
queue that has built up is drained in one go (about 3x the rate), while timers still run between batches."""
DRAIN_QUIET_S = 3.5
"""On stop, transitions DDS still delivers are taken until none has come for this long (at most DRAIN_MAX_S), so
messages sent while the learner was busy or paused reach the bag, not the void. Longer than the writer's heartbeat
period of Fast DDS (ROS's default middleware; 3 s): what a stalled reader could not hold (its shared-memory port
takes 512 messages) is resent only when the writer's next heartbeat reveals the gap."""
DRAIN_MAX_S = 4.5
"""Arms that go on publishing never leave the readers quiet: the stop takes this long at most (within the 5 s
ros2 launch allows a node between SIGINT and SIGTERM), and what comes later is theirs to count lost."""
LOSS_LOG_PERIOD_S = 2.0
"""Lost transitions are logged at most this often (counted all the while)."""
TRANSITION_TYPE = "tdmpc_ros/msg/Transition"


def under_ros_home(path: str) -> Path:
    """A data path from the config: relative ones resolve under $ROS_HOME (default ~/.ros), where ROS tools
    keep their files, not under whatever folder the node was started from."""
    path = Path(path).expanduser()
    return path if path.is_absolute() else Path(os.environ.get("ROS_HOME", "~/.ros")).expanduser() / path


class WeightsPublisher:
    """Checkpoints on model_weights as their file's bytes, in pieces of at most `chunk_bytes`, so a controller
    needs nothing of this machine's filesystem. The writer keeps one model's pieces (qos.model_weights): a
    controller that starts late gets the newest complete model from DDS alone."""

    def __init__(self, node: Node, chunk_bytes: int):
        self.node = node
        self.chunk_bytes = chunk_bytes
        self.pub = None
        self.depth = 0

    def publish(self, published: Published) -> str:
        """Send one checkpoint (any thread); a line saying how, for the log."""
        started = time.monotonic()
        data = Path(published.path).read_bytes()
        chunks = split(data, published.version, published.sha256, self.chunk_bytes)
        if len(chunks) > self.depth:  # the first model, or one a piece longer: a new writer keeping them all
            if self.pub is not None:
                self.node.destroy_publisher(self.pub)
            self.depth = len(chunks)
            self.pub = self.node.create_publisher(ModelWeights, topics.MODEL_WEIGHTS, qos.model_weights(self.depth))
            if self.depth > qos.MAX_QUEUE_DEPTH:
                self.node.get_logger().warning(
                    f"a model is {self.depth} pieces, more than the {qos.MAX_QUEUE_DEPTH} DDS keeps: controllers "
                    "that start late will not get it whole; raise learner.weights_chunk_bytes")
        stamp = self.node.get_clock().now().to_msg()
        for chunk in chunks:
            msg = ModelWeights(version=chunk.version, sha256=chunk.sha256, total_bytes=chunk.total_bytes,
                               chunk_index=chunk.index, chunk_count=chunk.count)
            msg.header.stamp = stamp
            msg.data.frombytes(chunk.data)  # one copy, without the per-byte checks of assigning a sequence
            self.pub.publish(msg)
        return (f"sent on {topics.MODEL_WEIGHTS}: {len(data)} bytes in {len(chunks)} pieces "
                f"({time.monotonic() - started:.2f} s)")


class LearnerNode(Node):
    def __init__(self):
        super().__init__("learner")
        self.cfg = declare_config(self, ("model", "agent", "planner", "task", "learner"))
        self.cfg = wait_for_robot_description(self, self.cfg)  # task.robot robot_description: the URDF first
        torch.set_num_threads(1)  # shares the machine with the controller and the arm
        self.run_dir = under_ros_home(self.cfg.learner.run_dir).resolve()
        self.online_dir = self.run_dir / "online"
        self.metrics = MetricsLogger(self.run_dir, config=self.cfg)  # the resolved config first, before any data
        log = self.get_logger().info
        self.update_pub = self.create_publisher(ModelUpdate, topics.MODEL_UPDATES, qos.LATCHED)
        self.weights = (WeightsPublisher(self, self.cfg.learner.weights_chunk_bytes)
                        if self.cfg.learner.weights_transport == "dds" else None)
        self.diag_pub = self.create_publisher(DiagnosticArray, topics.DIAGNOSTICS, 10)
        self.progress_pub = self.create_publisher(LearnerProgress, topics.LEARNER_PROGRESS, 10)

        self.learner = Learner(self.cfg, self.run_dir, log=log, on_publish=self.publish_update)
        demo_dirs = [under_ros_home(d) for d in self.cfg.learner.demos]
        demos = read_episodes(demo_dirs, self.cfg)
        self.get_logger().info("demos: " + demos.summary())
        self.learner.add_demos(demos.episodes)
        if self.online_dir.exists():
            online = read_episodes([self.online_dir], self.cfg)
            self.get_logger().info("online data from earlier runs: " + online.summary())
            for episode in online.episodes:
                self.learner.add_online(episode, count_steps=False)
        if self.learner.version:  # a restarted learner re-announces the checkpoint it resumed from
            resumed = dict(self.learner.store.versions())[self.learner.version]  # not a newer, damaged one
            self.publish_update(Published(self.learner.version, str(resumed), file_sha256(resumed),
                                          self.learner.updates, self.learner.env_steps))
        elif not demos.episodes:
            # Nothing to pretrain on: hand the controller the untrained model at once, so it explores and the
            # learner learns online from scratch (slower than from demos; record some with `tdmpc-ros demos`).
            self.get_logger().warning(
                f"no demos in {[str(d) for d in demo_dirs]}: learning online from scratch, exploring with the "
                "untrained model (record demos with `tdmpc-ros demos --out DIR` and pass demos:=DIR to start "
                "from them)")
            self.learner.checkpoint()

        self.writer = ArmBags(self.online_dir, max_bytes=self.cfg.learner.bag_max_bytes)
        self.intake = LiveIntake(self.cfg, self.writer.write_cdr, source=str(self.online_dir))
        self.lost_reported, self.last_loss_log = 0, -LOSS_LOG_PERIOD_S
        message_bytes = transition_cdr_bytes(self.cfg.model.obs_dim, self.cfg.model.action_dim)
        self.queue = qos.transitions_queue(max(1, INTAKE_QUEUE_BYTES // message_bytes))  # per arm
        self.queue_depth = self.queue.depth
        self.transitions: dict[str, object] = {}  # arm ('' for a lone arm) -> its subscription
        for arm in dict.fromkeys(self.cfg.learner.arms or [""]):  # each once
            self.subscribe_arm(arm)
        self.stop = threading.Event()
        self.trainer = threading.Thread(target=self.learner.run, args=(self.stop,), name="trainer", daemon=True)
        self.trainer.start()
        self.last_log = time.monotonic()
        # Steady time: on sim time (lockstep) the world is held while the learner catches up, and the progress
        # that releases it must not wait for the clock it holds.
        steady = Clock(clock_type=ClockType.STEADY_TIME)
        self.create_timer(1.0, self.on_status, clock=steady)
        self.create_timer(PROGRESS_PERIOD_S, self.publish_progress, clock=steady)
        if self.cfg.learner.discover_arms:
            self.create_timer(1.0, self.discover_arms, clock=steady)
        self.get_logger().info(f"learner: writing to {self.run_dir} (relative paths are under $ROS_HOME), device "
                               f"{self.learner.device}, "
                               f"utd {self.cfg.agent.utd_ratio:g}, pretrain {self.cfg.learner.pretrain_updates}")

    def subscribe_arm(self, arm: str) -> None:
        """Take `arm`'s transitions (`<arm>/transitions`; '' is this node's own `transitions`)."""
        topic = f"{arm}/{topics.TRANSITIONS}" if arm else topics.TRANSITIONS
        self.transitions[arm] = self.create_subscription(
            Transition, topic, lambda data, info: self.on_transition(arm, data, info), self.queue, raw=True)
        if arm:
            self.get_logger().info(f"taking arm {arm}'s transitions ({self.resolve_topic_name(topic)})")

    def discover_arms(self) -> None:
        """learner.discover_arms: subscribe to every Transition topic under this node's namespace not taken yet."""
        own = self.resolve_topic_name(topics.TRANSITIONS)
        prefix = self.get_namespace().rstrip("/") + "/"
        for name, types in self.get_topic_names_and_types():
            if TRANSITION_TYPE not in types or not name.startswith(prefix) or not name.endswith("/transitions"):
                continue
            arm = "" if name == own else name[len(prefix):-len("/transitions")]
            if arm not in self.transitions:
                self.subscribe_arm(arm)

    def on_transition(self, arm: str, data: bytes, info: MessageInfo) -> None:
        """The message the executor took, then whatever else waits, up to TAKE_BATCH (see there)."""
        self.take(arm, data, info)
        self.take_waiting(arm, TAKE_BATCH - 1)

    def take_waiting(self, arm: str, limit: int) -> int:
        """Take up to `limit` messages waiting in `arm`'s reader; how many there were."""
        handle = self.transitions[arm].handle
        with handle:  # as the executor holds it: the subscription is not destroyed while in use
            for n in range(limit):
                taken = handle.take_message(Transition, True)
                if taken is None:
                    return n
                self.take(arm, *taken)
        return limit

    def drain(self) -> int:
        """On stop: take what DDS still delivers until it has been quiet for DRAIN_QUIET_S; how many."""
        total, started = 0, time.monotonic()
        quiet_since = started
        while (now := time.monotonic()) - quiet_since < DRAIN_QUIET_S and now - started < DRAIN_MAX_S:
            taken = sum(self.take_waiting(arm, TAKE_BATCH) for arm in list(self.transitions))
            if taken:
                total, quiet_since = total + taken, time.monotonic()
            else:
                time.sleep(0.01)  # no executor any more: poll the readers
        return total

    def take(self, arm: str, data: bytes, info: MessageInfo) -> None:
        gid = info["publisher_gid"]
        # logged at the time taken, not received: readers order a bag by log time, and a message DDS had to
        # resend is received after later ones but taken in order
        for episode in self.intake.add(data, bytes(gid["data"]) if gid else b"", info["publication_sequence_number"],
                                       self.get_clock().now().nanoseconds, arm):
            self.learner.add_online(episode)

    def publish_progress(self) -> None:
        learner = self.learner
        msg = LearnerProgress(updates=learner.updates, env_steps=learner.env_steps,
                              backlog_steps=learner.backlog_steps, pretraining=learner.pretraining,
                              model_version=learner.version, stored_transitions=self.intake.stored,
                              lost_transitions=self.intake.lost)
        msg.header.stamp = self.get_clock().now().to_msg()
        self.progress_pub.publish(msg)

    def publish_update(self, published: Published) -> None:
        msg = ModelUpdate(version=published.version, path=published.path, sha256=published.sha256,
                          updates=published.updates, env_steps=published.env_steps)
        msg.header.stamp = self.get_clock().now().to_msg()
        self.update_pub.publish(msg)
        sent = ""
        if self.weights is not None:
            try:
                sent = "; " + self.weights.publish(published)
            except OSError as exc:  # (the trainer's thread) training goes on, and the next model is sent as usual
                self.get_logger().error(f"model v{published.version} not sent on {topics.MODEL_WEIGHTS}: {exc}")
        self.get_logger().info(f"published model v{published.version} after {published.updates} updates "
                               f"({published.env_steps} env steps){sent}")

    def status(self) -> dict[str, float | int | str]:
        learner, intake = self.learner, self.intake
        return {"updates": learner.updates, "updates_per_s": round(learner.updates_per_second(), 2),
                "demo_steps": learner.replay.num_demo_steps(), "online_steps": learner.replay.num_online_steps(),
                "transitions_received": intake.received, "transitions_stored": intake.stored,
                "transitions_lost": intake.lost, "transitions_missed": intake.missed,
                "transitions_rejected": intake.rejected, "transitions_cut": intake.cut,
                "open_episodes": intake.open_episodes, "queue_depth": self.queue_depth,
                "episodes": learner.episodes_seen, "success_rate": round(learner.success_rate(), 3),
                "model_version": learner.version, "env_steps": learner.env_steps,
                **self.arm_status(), **{k: round(v, 5) for k, v in learner.last_losses.items()}}

    def arm_status(self) -> dict[str, int]:
        """A fleet's share of each arm: `<arm>/env_steps` counted and `<arm>/replay_episodes` held (by
        (arm, episode id): every arm's controller numbers its episodes from 0)."""
        with self.learner.lock:
            held = Counter(arm for arm, _ in self.learner.replay.online_keys())
            steps = dict(self.learner.steps_by_arm)
        arms = sorted((set(held) | set(steps) | set(self.transitions)) - {""})
        return {key: value for arm in arms
                for key, value in ((f"{arm}/env_steps", steps.get(arm, 0)), (f"{arm}/replay_episodes", held[arm]))}

    def on_status(self) -> None:
        self.writer.flush()  # bounds what a crash can lose to the last second, even when no data arrives
        for episode in self.intake.expire():
            self.learner.add_online(episode)
        values = self.status()
        self.metrics.log(self.learner.updates, values)
        lost_now, self.lost_reported = self.intake.lost - self.lost_reported, self.intake.lost
        message = "pretraining" if self.learner.pretraining else "training"
        diag = DiagnosticArray(status=[DiagnosticStatus(
            level=DiagnosticStatus.WARN if lost_now else DiagnosticStatus.OK,
            name=f"{self.get_namespace().rstrip('/')}/tdmpc_learner", hardware_id="tdmpc_ros",
            message=f"{message}; {lost_now} transitions lost in the last second" if lost_now else message,
            values=[KeyValue(key=k, value=str(v)) for k, v in values.items()])])
        diag.header.stamp = self.get_clock().now().to_msg()
        self.diag_pub.publish(diag)
        now = time.monotonic()
        if now - self.last_loss_log >= LOSS_LOG_PERIOD_S and (problems := self.intake.take_problems()):
            self.last_loss_log = now
            self.get_logger().warning(
                f"transitions lost: {self.intake.lost} of {self.intake.stored + self.intake.lost} published to "
                f"this learner; since the last report: " + "; ".join(problems))
        if now - self.last_log >= self.cfg.learner.log_every_s:
            self.last_log = now
            self.get_logger().info(
                f"updates {values['updates']} ({values['updates_per_s']}/s) | env steps {values['env_steps']} | "
                f"buffer demo {values['demo_steps']} online {values['online_steps']} | "
                f"success {values['success_rate']:.0%} | model v{values['model_version']}")

    def destroy_node(self) -> None:
        if not hasattr(self, "trainer"):  # Ctrl-C while being built (the context still destroys it): nothing ran
            if hasattr(self, "metrics"):
                self.metrics.close()
            super().destroy_node()
            return
        if drained := self.drain():
            self.get_logger().info(f"stopping: took the {drained} transitions DDS still held")
        self.stop.set()
        # The first update of a process compiles the training graphs (up to about a minute): nothing has been
        # learned here yet, so do not wait for it; the daemon thread ends with the process.
        self.trainer.join(timeout=30.0 if self.learner.updated_in_process else 2.0)
        if self.trainer.is_alive():
            stands = f", v{self.learner.version} stands" if self.learner.version else ""
            compiling = " (compiling the training graphs)" if self.cfg.agent.compile else ""
            self.get_logger().warning(f"stopping during the first update{compiling}: no final checkpoint{stands}")
        elif self.learner.updates:
            self.learner.on_publish = None  # the context may already be shut down: save, do not announce
            self.learner.checkpoint()
        self.writer.close()
        self.metrics.close()
        super().destroy_node()


def main(args=None) -> None:
    node = run_node(LearnerNode, args)
    if node is not None and node.trainer.is_alive():
        # Still compiling the first update (bags closed, context down): a normal interpreter exit would run
        # C++ destructors under the compiling thread and abort (std::terminate), so leave at once.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


if __name__ == "__main__":
    main()
