"""Helpers for tests that run real nodes over real DDS: processes, waiting for matches, collecting messages."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from tdmpc_ros.cli.launch import STOP_TIMEOUT_S, param_text

REPO = Path(__file__).resolve().parent.parent
CONFIG = REPO / "config" / "arm.yaml"


def start_node(name: str, params: dict | None = None, log_path: Path | None = None,
               env: dict[str, str] | None = None, hidden: Path | None = None) -> subprocess.Popen:
    """Start tdmpc_ros.nodes.<name> as its own process with the repo config plus `section.field` overrides
    (and `env` added to this process's environment). `hidden`: a folder the node cannot see (an empty tmpfs
    mounted over it in a mount namespace of the node's own, as on another machine; needs root)."""
    args = [sys.executable, "-m", f"tdmpc_ros.nodes.{name}", "--ros-args", "--params-file", str(CONFIG)]
    if hidden is not None:  # unshare and sh exec, so the node keeps the pid (and gets the signals) sent to it
        args = ["unshare", "--mount", "--", "sh", "-c", 'mount -t tmpfs none "$0" && exec "$@"', str(hidden), *args]
    for key, value in (params or {}).items():
        args += ["-p", f"{key}:={param_text(value)}"]
    out = open(log_path, "w") if log_path else subprocess.DEVNULL
    return subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}, cwd=REPO,
                            start_new_session=True)


CHEAP_PLANNER = {"planner.compile": False, "planner.num_samples": 64, "planner.num_pi_trajs": 8,
                 "planner.num_elites": 8, "planner.iterations": 2}  # a node's planner, cheap enough for tests


def untrained_checkpoint(path, cfg=None, seed: int = 1) -> str:
    """An untrained agent of `cfg` (default: the default config with agent.seed `seed`) saved as a checkpoint at
    `path`; returns the path (a node parameter)."""
    from tdmpc_ros.config import load_config
    from tdmpc_ros.learning.agent import Agent
    from tdmpc_ros.learning.checkpoint import save_checkpoint

    agent = Agent(cfg or load_config(overrides={"agent": {"seed": seed}}))
    save_checkpoint(path, agent, {"updates": 0, "env_steps": 0})
    return str(path)


def stop(proc: subprocess.Popen, sig=signal.SIGINT, timeout: float = STOP_TIMEOUT_S) -> int:
    """Signal a node process and wait; SIGKILL if it does not exit in time."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def spin_until(node, predicate, timeout: float, executor=None) -> bool:
    """Spin `node` (on an executor of its own context) until predicate() is true or timeout (s) passes."""
    if executor is None:
        executor = _executor_for(node)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        executor.spin_once(timeout_sec=0.02)
    return predicate()


def next_items(node, items: list, count: int, skip: int = 0, timeout: float = 30.0) -> list:
    """Spin until `count` more items (after skipping `skip`) are appended to `items` by the node's callbacks, and
    return them; fails the test, saying how many came, if they do not."""
    first = len(items) + skip
    assert spin_until(node, lambda: len(items) >= first + count, timeout), f"{len(items) - first} of {count} came"
    return items[first:first + count]


def _executor_for(node):
    from rclpy.executors import SingleThreadedExecutor

    if not hasattr(node, "_test_executor"):
        node._test_executor = SingleThreadedExecutor(context=node.context)
        node._test_executor.add_node(node)
    return node._test_executor


def wait_for_publisher(node, topic: str, timeout: float = 20.0) -> bool:
    """Wait until some process publishes on `topic` (discovery can take seconds)."""
    return spin_until(node, lambda: node.count_publishers(topic) > 0, timeout)


def wait_for_subscriber(node, topic: str, timeout: float = 20.0) -> bool:
    return spin_until(node, lambda: node.count_subscribers(topic) > 0, timeout)


class PerfectArm:
    """The arm side as a test's own rclpy node, a perfect PD: `cfg`'s joint states, stamped, every `period` s at
    the position of the last command of their size (from sim.home), and a latched goal at `goal_xyz` in the arm's
    base frame; records the commands (arrays) and the planner status. `object_xyz`: an object pose (PoseStamped in
    the base frame, on object_pose) published just before each joint state with its stamp, while `pose_on`;
    `markers`: the controller's MarkerArrays recorded too."""

    def __init__(self, context, cfg, goal_xyz, period: float, object_xyz=None, markers: bool = False):
        import rclpy
        from geometry_msgs.msg import PointStamped, PoseStamped
        from sensor_msgs.msg import JointState
        from std_msgs.msg import Float64MultiArray
        from visualization_msgs.msg import MarkerArray

        from tdmpc_ros import topics
        from tdmpc_ros.kinematics import ArmKinematics
        from tdmpc_ros.msg import PlannerStatus
        from tdmpc_ros.nodes import qos

        kinematics = ArmKinematics(cfg.task)
        base_link = kinematics.base_link
        kinematics.close()
        self.q = np.array(cfg.sim.home)
        self.state = JointState(name=list(cfg.task.joint_names), velocity=[0.0] * len(self.q))
        self.node = rclpy.create_node("test_arm", context=context)
        self.state_pub = self.node.create_publisher(JointState, topics.JOINT_STATES, qos.STATE)
        self.commands: list[np.ndarray] = []
        self.status: list[PlannerStatus] = []
        self.markers: list[MarkerArray] = []
        self.node.create_subscription(Float64MultiArray, topics.COMMAND_TOPICS["float64_multi_array"],
                                      lambda m: self.commands.append(np.array(m.data)), qos.STATE)
        self.node.create_subscription(PlannerStatus, topics.PLANNER_STATUS, self.status.append, 10)
        if markers:
            self.node.create_subscription(MarkerArray, "/controller/markers", self.markers.append, 10)
        self.pose, self.pose_on = None, True
        if object_xyz is not None:
            self.pose = PoseStamped()
            self.pose.header.frame_id = base_link
            self.pose.pose.position.x, self.pose.pose.position.y, self.pose.pose.position.z = object_xyz
            self.pose.pose.orientation.w = 1.0
            self.pose_pub = self.node.create_publisher(PoseStamped, "object_pose", qos.STATE)
        self.node.create_timer(period, self.publish)
        goal = PointStamped()
        goal.header.frame_id = base_link
        goal.point.x, goal.point.y, goal.point.z = goal_xyz
        self.node.create_publisher(PointStamped, topics.GOAL, qos.LATCHED).publish(goal)

    def publish(self):
        if self.commands and len(self.commands[-1]) == len(self.q):  # the arm is where it was told to be
            self.q = self.commands[-1].copy()
        stamp = self.node.get_clock().now().to_msg()
        if self.pose is not None and self.pose_on:
            self.pose.header.stamp = stamp
            self.pose_pub.publish(self.pose)
        self.state.header.stamp, self.state.position = stamp, self.q.tolist()
        self.state_pub.publish(self.state)


class LaunchCommand:
    """`tdmpc-ros launch arm` as one child process, with Launcher's start/exited_required/shutdown/procs, so a
    LaunchedGraph can run the node set through the command line (its SIGINT handling and exit-code line)."""

    def __init__(self, arguments: dict[str, str], out, overrides: dict | None = None):
        assert not overrides, "the command line takes launch arguments only"
        self.command = [sys.executable, "-m", "tdmpc_ros.cli.main", "launch", "arm",
                        *(f"{name}:={value}" for name, value in arguments.items())]
        self.out = out
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self) -> None:
        self.procs["launch"] = subprocess.Popen(self.command, stdout=self.out, stderr=subprocess.STDOUT)

    def exited_required(self) -> str | None:
        """The launcher exits when a required node does."""
        return "launch" if self.procs["launch"].poll() is not None else None

    def shutdown(self, timeout: float = STOP_TIMEOUT_S) -> dict[str, int]:
        return {name: stop(proc, timeout=timeout) for name, proc in self.procs.items()}
