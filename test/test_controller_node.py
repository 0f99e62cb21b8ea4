"""The controller node in its own process over real DDS; this test process plays the arm.

It publishes /joint_states at 100 Hz (good, NaN, wrong-size or none at all), a goal and model updates, and
watches the command topic, planner status and transitions.
"""
from __future__ import annotations

import time

import numpy as np
import pytest
from geometry_msgs.msg import PointStamped
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray
from std_srvs.srv import SetBool

from ros_helpers import spin_until, start_node, stop
from tdmpc_ros import topics
from tdmpc_ros.config import Config, load_config
from tdmpc_ros.kinematics import ArmKinematics
from tdmpc_ros.learning.agent import Agent
from tdmpc_ros.learning.checkpoint import save_checkpoint
from tdmpc_ros.msg import LearnerProgress, ModelUpdate, PlannerStatus, Transition
from tdmpc_ros.nodes import qos

pytestmark = pytest.mark.ros

CFG = Config()
KIN = ArmKinematics(CFG.task)
HOME = np.array(CFG.sim.home)
PERIOD = 1.0 / CFG.task.control_rate_hz
FAST_PLANNER = {"planner.compile": False, "planner.num_samples": 64, "planner.num_pi_trajs": 8,
                "planner.num_elites": 8, "planner.iterations": 2,
                "task.max_episode_steps": 100000}  # this fake arm never resets: one long episode


class FakeArm:
    """The arm side of the wire: joint states out, commands in (the test's own rclpy node)."""

    def __init__(self, context):
        import rclpy

        self.node = rclpy.create_node("test_arm", context=context)
        self.state_pub = self.node.create_publisher(JointState, topics.JOINT_STATES, qos.STATE)
        self.goal_pub = self.node.create_publisher(PointStamped, topics.GOAL, qos.LATCHED)
        self.update_pub = self.node.create_publisher(ModelUpdate, topics.MODEL_UPDATES, qos.LATCHED)
        self.commands: list[tuple[float, np.ndarray]] = []
        self.status: list[PlannerStatus] = []
        self.transitions: list[Transition] = []
        self.node.create_subscription(Float64MultiArray, topics.COMMAND_TOPICS["float64_multi_array"],
                                      lambda m: self.commands.append((time.monotonic(), np.array(m.data))),
                                      qos.STATE)
        self.node.create_subscription(PlannerStatus, topics.PLANNER_STATUS, self.status.append, 10)
        self.node.create_subscription(Transition, topics.TRANSITIONS, self.transitions.append, qos.TRANSITIONS)
        self.q = HOME.copy()
        self.mode = "good"
        self.node.create_timer(0.01, self.publish_state)
        goal = PointStamped()
        goal.point.x, goal.point.y, goal.point.z = 0.5, 0.1, 0.5
        goal.header.stamp = self.node.get_clock().now().to_msg()
        goal.header.frame_id = KIN.base_link  # the controller takes goals in the arm's base frame only
        self.goal_pub.publish(goal)

    def publish_state(self):
        if self.commands:  # a perfect PD: the arm is where it was told to be
            self.q = self.commands[-1][1].copy()
        if self.mode == "silent":
            return
        names, q = list(CFG.task.joint_names), self.q.copy()
        if self.mode == "nan":
            q[3] = np.nan
        if self.mode == "short":
            names, q = names[:5], q[:5]
        msg = JointState(name=names, position=q.tolist(), velocity=[0.0] * len(q))
        msg.header.stamp = self.node.get_clock().now().to_msg()
        self.state_pub.publish(msg)

    def spin_for(self, seconds: float):
        spin_until(self.node, lambda: False, seconds)

    def last_status(self):
        return self.status[-1] if self.status else None


def write_checkpoint(path, seed):
    cfg = load_config(overrides={"agent": {"seed": seed}})
    return save_checkpoint(path, Agent(cfg), {"updates": 0, "env_steps": 0})


@pytest.fixture
def controller(tmp_path, ros_domain, rclpy_context):
    procs = []

    def start(**params):
        write_checkpoint(tmp_path / "v1.pt", seed=1)
        log = tmp_path / f"controller{len(procs)}.log"
        procs.append((start_node("controller_node", {"controller.model_path": str(tmp_path / "v1.pt"),
                                                     **FAST_PLANNER, **params}, log), log))
        arm = FakeArm(rclpy_context)
        arm.controller_pid = procs[-1][0].pid
        assert spin_until(arm.node, lambda: (s := arm.last_status()) is not None and s.model_version == 1
                          and s.mode != "hold", 90), f"controller never planned:\n{log.read_text()[-3000:]}"
        return arm, log

    yield start
    for proc, _ in procs:
        assert stop(proc) == 0


def test_fixed_rate_faults_hold_and_recover(controller):
    arm, log = controller()
    arm.commands.clear()
    arm.spin_for(3.0)
    times = np.array([t for t, _ in arm.commands])
    assert abs(np.mean(np.diff(times)) - PERIOD) < 0.1 * PERIOD
    assert len(arm.transitions) > 30 and all(len(t.observation) == CFG.task.obs_dim for t in arm.transitions)

    for fault, words in [("nan", "NaN"), ("short", "lacks joints"), ("silent", "stale")]:
        arm.mode = fault
        arm.spin_for(1.0)
        held = [c for t, c in arm.commands if t > time.monotonic() - 0.5]
        assert len(held) >= 5 and all(np.array_equal(c, held[0]) for c in held), fault  # holds at the rate
        assert spin_until(arm.node, lambda: words in arm.last_status().fault, 2.0), fault  # status is 1 Hz
        arm.mode = "good"
        assert spin_until(arm.node, lambda: arm.last_status().fault == "", 5.0), fault
    text = log.read_text()
    for words in ["NaN", "lacks joints", "stale"]:
        # once per fault episode, not every tick (~20 held ticks each); a stall of this test's own publisher
        # on a loaded machine can add a genuine stale episode, hence the small allowance
        assert 1 <= text.count(words) <= 3
    assert text.count("resuming control") >= 3
    for _, target in arm.commands:
        assert (target >= KIN.safe_lower - 1e-9).all() and (target <= KIN.safe_upper + 1e-9).all()


def test_model_updates_swap_without_gap_and_bad_ones_are_rejected(controller, tmp_path):
    arm, log = controller()
    sha = write_checkpoint(tmp_path / "v2.pt", seed=2)
    corrupt = tmp_path / "v3.pt"
    corrupt.write_bytes((tmp_path / "v2.pt").read_bytes()[:5000])  # a partial file
    arm.commands.clear()
    arm.update_pub.publish(ModelUpdate(version=2, path=str(tmp_path / "v2.pt"), sha256=sha))
    assert spin_until(arm.node, lambda: arm.last_status().model_version == 2, 30)
    arm.update_pub.publish(ModelUpdate(version=3, path=str(corrupt), sha256=sha))
    assert spin_until(arm.node, lambda: "rejected model v3" in log.read_text(), 30)
    arm.spin_for(1.5)
    # still controlling on v2 (on a loaded machine some ticks may take the policy prior: that is control too)
    assert arm.last_status().model_version == 2 and arm.last_status().mode in ("planning", "policy_fallback")
    gaps = np.diff([t for t, _ in arm.commands])
    assert gaps.max() < 3 * PERIOD  # control never paused for a load


def test_deadline_fallback_and_disable(controller, rclpy_context):
    arm, _ = controller(**{"controller.plan_budget": 0.001})
    first = arm.last_status().deadline_misses
    arm.spin_for(2.5)
    status = arm.last_status()
    assert status.mode == "policy_fallback" and status.deadline_misses - first >= 20
    client = arm.node.create_client(SetBool, topics.CONTROLLER_ENABLE)
    assert client.wait_for_service(timeout_sec=10)
    future = client.call_async(SetBool.Request(data=False))
    assert spin_until(arm.node, future.done, 10) and future.result().success
    arm.spin_for(0.3)
    count = len(arm.commands)
    arm.spin_for(1.0)
    assert len(arm.commands) == count and arm.last_status().mode == "disabled"  # disabled: publishes nothing


def test_lockstep_waits_while_the_learner_is_behind(controller):
    arm, _ = controller(**{"sim.lockstep": True, "controller.lockstep_max_backlog": 50})
    progress_pub = arm.node.create_publisher(LearnerProgress, topics.LEARNER_PROGRESS, 10)
    assert spin_until(arm.node, lambda: progress_pub.get_subscription_count() > 0, 30)
    arm.spin_for(0.5)
    assert len(arm.commands) > 10  # this fake arm publishes a state every 10 ms: lockstep ticks on each

    progress_pub.publish(LearnerProgress(updates=1000, env_steps=200, backlog_steps=51))
    arm.spin_for(0.3)
    count = len(arm.commands)
    arm.spin_for(1.0)
    assert len(arm.commands) == count  # the world waits for the learner

    progress_pub.publish(LearnerProgress(updates=1100, env_steps=200, backlog_steps=50))
    arm.spin_for(1.0)
    assert len(arm.commands) > count + 10
