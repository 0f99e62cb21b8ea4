"""Learner node: trains from demo bags plus the controller's live transitions, hands checkpoints back.

Subscribes  transitions (tdmpc_ros/Transition; reliable, deep)
Publishes   model_updates (tdmpc_ros/ModelUpdate; latched), learner_progress (tdmpc_ros/LearnerProgress,
            20 Hz: a lockstep controller holds the world while the learner's backlog is large), /diagnostics

Every transition is appended to an online rosbag2 (mcap) in `learner.run_dir/online` as it arrives; on start
the node resumes from the newest valid checkpoint and reloads its online bags with the demos. Training runs
on a thread of its own so the subscription is never starved.
"""
from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

import torch
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.node import Node

from tdmpc_ros import topics
from tdmpc_ros.data.bags import read_episodes
from tdmpc_ros.data.online_bags import OnlineBagWriter
from tdmpc_ros.data.transitions import BagEpisodeAssembler
from tdmpc_ros.learning.checkpoint import file_sha256
from tdmpc_ros.learning.learner import Learner, Published
from tdmpc_ros.learning.metrics import MetricsLogger
from tdmpc_ros.msg import LearnerProgress, ModelUpdate, Transition
from tdmpc_ros.nodes import qos, run_node
from tdmpc_ros.nodes.params import declare_config

PROGRESS_PERIOD_S = 0.05


class LearnerNode(Node):
    def __init__(self):
        super().__init__("learner")
        self.cfg = declare_config(self)
        torch.set_num_threads(1)  # shares the machine with the controller and the arm
        self.run_dir = Path(self.cfg.learner.run_dir).resolve()
        self.online_dir = self.run_dir / "online"
        log = self.get_logger().info
        self.update_pub = self.create_publisher(ModelUpdate, topics.MODEL_UPDATES, qos.LATCHED)
        self.diag_pub = self.create_publisher(DiagnosticArray, topics.DIAGNOSTICS, 10)
        self.progress_pub = self.create_publisher(LearnerProgress, topics.LEARNER_PROGRESS, 10)

        self.learner = Learner(self.cfg, self.run_dir, log=log, on_publish=self.publish_update)
        demos = read_episodes([Path(d) for d in self.cfg.learner.demos], self.cfg)
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

        self.writer = OnlineBagWriter(self.online_dir, max_bytes=self.cfg.learner.bag_max_bytes)
        self.assembler = BagEpisodeAssembler(self.cfg, source=str(self.online_dir))
        self.received = 0
        self.metrics = MetricsLogger(self.run_dir)
        self.create_subscription(Transition, topics.TRANSITIONS, self.on_transition, qos.TRANSITIONS)
        self.stop = threading.Event()
        self.trainer = threading.Thread(target=self.learner.run, args=(self.stop,), name="trainer", daemon=True)
        self.trainer.start()
        self.last_log = time.monotonic()
        self.create_timer(1.0, self.on_status)
        self.create_timer(PROGRESS_PERIOD_S, self.publish_progress)
        self.get_logger().info(f"learner: run folder {self.run_dir}, device {self.learner.device}, "
                               f"utd {self.cfg.agent.utd_ratio:g}, pretrain {self.cfg.learner.pretrain_updates}")

    def on_transition(self, msg: Transition) -> None:
        self.writer.write(msg)
        self.received += 1
        cut_short = self.assembler.close_others(msg.episode_id) if msg.step == 0 else []
        for episode in cut_short + self.assembler.add(msg):
            self.learner.add_online(episode)
        for line in self.assembler.problems():
            self.get_logger().warning(line)

    def publish_progress(self) -> None:
        learner = self.learner
        msg = LearnerProgress(updates=learner.updates, env_steps=learner.env_steps,
                              backlog_steps=learner.backlog_steps, pretraining=learner.pretraining,
                              model_version=learner.version)
        msg.header.stamp = self.get_clock().now().to_msg()
        self.progress_pub.publish(msg)

    def publish_update(self, published: Published) -> None:
        msg = ModelUpdate(version=published.version, path=published.path, sha256=published.sha256,
                          updates=published.updates, env_steps=published.env_steps)
        msg.header.stamp = self.get_clock().now().to_msg()
        self.update_pub.publish(msg)
        self.get_logger().info(f"published model v{published.version} after {published.updates} updates "
                               f"({published.env_steps} env steps)")

    def status(self) -> dict[str, float | int | str]:
        learner = self.learner
        return {"updates": learner.updates, "updates_per_s": round(learner.updates_per_second(), 2),
                "demo_steps": learner.replay.num_demo_steps(), "online_steps": learner.replay.num_online_steps(),
                "transitions_received": self.received, "transitions_stored": self.writer.count,
                "episodes": learner.episodes_seen, "success_rate": round(learner.success_rate(), 3),
                "model_version": learner.version, "env_steps": learner.env_steps,
                **{k: round(v, 5) for k, v in learner.last_losses.items()}}

    def on_status(self) -> None:
        self.writer.flush()  # bounds what a crash can lose to the last second, even when no data arrives
        values = self.status()
        self.metrics.log(self.learner.updates, values)
        diag = DiagnosticArray(status=[DiagnosticStatus(
            level=DiagnosticStatus.OK, name=f"{self.get_namespace().rstrip('/')}/tdmpc_learner",
            hardware_id="tdmpc_ros", message="pretraining" if self.learner.pretraining else "training",
            values=[KeyValue(key=k, value=str(v)) for k, v in values.items()])])
        diag.header.stamp = self.get_clock().now().to_msg()
        self.diag_pub.publish(diag)
        now = time.monotonic()
        if now - self.last_log >= self.cfg.learner.log_every_s:
            self.last_log = now
            self.get_logger().info(
                f"updates {values['updates']} ({values['updates_per_s']}/s) | env steps {values['env_steps']} | "
                f"buffer demo {values['demo_steps']} online {values['online_steps']} | "
                f"success {values['success_rate']:.0%} | model v{values['model_version']}")

    def destroy_node(self) -> None:
        self.stop.set()
        # The first update of a process compiles the training graphs (up to about a minute): nothing has been
        # learned here yet, so do not wait for it; the daemon thread ends with the process.
        self.trainer.join(timeout=30.0 if self.learner.updated_in_process else 2.0)
        if self.trainer.is_alive():
            stands = f", v{self.learner.version} stands" if self.learner.version else ""
            self.get_logger().warning(
                f"stopping during the first update (compiling the training graphs): no final checkpoint{stands}")
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
