"""The arm node in its own process, driven over real DDS from this one: commands, joint states, episodes."""
from __future__ import annotations

import math
import time

import numpy as np
import pytest
from ros_helpers import CONFIG, spin_until, start_node, stop

from tdmpc_ros import topics
from tdmpc_ros.config import load_config
from tdmpc_ros.kinematics import ArmKinematics
from tdmpc_ros.sim.arm import Arm
from tdmpc_ros.sim.env import ArmEnv
from tdmpc_ros.tasks.reach import ReachTask

pytestmark = pytest.mark.ros

BASE = {"sim.home_noise": 0.0}
CFG = load_config(CONFIG, {"sim": {"home_noise": 0.0}})
NAMES = list(CFG.task.joint_names)
HOME = np.array(CFG.sim.home)
FLOAT_TOPIC = f"{CFG.sim.controller_name}/commands"


class Probe:
    """This process's side: a node subscribed to joint states and goals, with a publisher per command type."""

    def __init__(self, context):
        import rclpy
        from geometry_msgs.msg import PointStamped
        from rclpy.executors import SingleThreadedExecutor
        from rosgraph_msgs.msg import Clock
        from sensor_msgs.msg import JointState
        from std_msgs.msg import Float64MultiArray
        from std_srvs.srv import Trigger
        from trajectory_msgs.msg import JointTrajectory

        from tdmpc_ros.nodes import qos

        self.node = rclpy.create_node("probe", context=context)
        self.executor = SingleThreadedExecutor(context=context)
        self.executor.add_node(self.node)
        self.states, self.goals, self.clock = [], [], []
        self.node.create_subscription(JointState, topics.JOINT_STATES, self.states.append, qos.STATE)
        self.node.create_subscription(PointStamped, topics.GOAL, self.goals.append, qos.LATCHED)
        self.node.create_subscription(Clock, topics.CLOCK, self.clock.append, qos.STATE)
        self.pubs = {
            "array": self.node.create_publisher(Float64MultiArray, FLOAT_TOPIC, qos.STATE),
            "trajectory": self.node.create_publisher(JointTrajectory, topics.COMMAND_TOPICS["joint_trajectory"],
                                                     qos.STATE),
            "joint_state": self.node.create_publisher(JointState, topics.COMMAND_TOPICS["joint_state"], qos.STATE),
        }
        self.reset_client = self.node.create_client(Trigger, topics.ARM_RESET)

    def spin_until(self, predicate, timeout: float) -> bool:
        return spin_until(self.node, predicate, timeout, self.executor)

    def wait_ready(self, timeout: float = 30.0) -> None:
        """The node is up: it sent a state and a goal and every command topic is matched."""
        assert self.spin_until(lambda: self.states and self.goals and all(
            pub.get_subscription_count() > 0 for pub in self.pubs.values()), timeout), "arm node not ready"

    def q(self) -> np.ndarray:
        return np.array(self.states[-1].position)

    def goal(self) -> np.ndarray:
        point = self.goals[-1].point
        return np.array([point.x, point.y, point.z])

    def send(self, kind: str, positions, names=None, points: bool = True) -> None:
        from sensor_msgs.msg import JointState
        from std_msgs.msg import Float64MultiArray
        from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

        values = [float(v) for v in positions]
        names = list(NAMES if names is None else names)
        if kind == "array":
            msg = Float64MultiArray(data=values)
        elif kind == "trajectory":
            msg = JointTrajectory(joint_names=names, points=[JointTrajectoryPoint(positions=values)] if points else [])
        else:
            msg = JointState(name=names, position=values)
        self.pubs[kind].publish(msg)

    def stream_until_reached(self, kind: str, target, names=None, timeout: float = 8.0) -> bool:
        """Publish a command at 10 Hz, as a controller would, until the joints are within 0.01 rad of target."""
        order = [NAMES.index(n) for n in names] if names is not None else list(range(len(NAMES)))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.send(kind, np.asarray(target)[order], names)
            if self.spin_until(lambda: np.abs(self.q() - target).max() < 0.01, 0.1):
                return True
        return False

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()


@pytest.fixture
def arm_node(rclpy_context, tmp_path):
    """Start the arm node with parameter overrides; returns (probe, log path). Stopped with SIGINT: exit 0."""
    started = []

    def start(**params):
        log = tmp_path / "arm_node.log"
        started.append(start_node("arm_node", {**BASE, **params}, log))
        probe = Probe(rclpy_context)
        probe.arm_pid = started[-1].pid
        started.append(probe)
        probe.wait_ready()
        return probe, log

    yield start
    for item in reversed(started):
        if isinstance(item, Probe):
            item.close()
        else:
            assert stop(item) == 0, "arm node did not exit cleanly on SIGINT"


def test_each_command_convention_moves_the_joints_to_its_target(arm_node):
    probe, _ = arm_node()
    a = HOME + np.array([0.3, -0.2, 0.2, 0.3, -0.3, 0.2, 0.4])
    assert probe.stream_until_reached("array", a)
    b = HOME + np.array([-0.2, 0.2, -0.3, 0.2, 0.2, -0.2, -0.3])
    assert probe.stream_until_reached("trajectory", b, names=NAMES[::-1])  # names map, not order
    c = HOME + np.array([0.1, 0.3, 0.1, -0.2, 0.4, 0.1, 0.2])
    assert probe.stream_until_reached("joint_state", c, names=[NAMES[i] for i in (3, 0, 6, 1, 5, 2, 4)])


def test_bad_commands_are_dropped_and_the_last_target_held(arm_node):
    probe, log = arm_node()
    a = HOME + 0.2
    assert probe.stream_until_reached("array", a)
    bad = [("array", a[:6] - 0.3, None, True),                               # wrong size
           ("array", np.where(np.arange(7) == 2, math.nan, a - 0.3), None, True),  # NaN
           ("trajectory", a - 0.3, NAMES[:6] + ["elbow"], True),             # unknown name
           ("joint_state", a - 0.3, NAMES[:6] + ["elbow"], True),
           ("joint_state", (a - 0.3)[:5], None, True),                       # names and positions differ
           ("trajectory", a - 0.3, None, False),                             # no points
           ("joint_state", np.full(7, math.inf), None, True)]
    first = len(probe.states)
    for _ in range(5):
        for kind, positions, names, points in bad:
            probe.send(kind, positions, names, points)
        probe.spin_until(lambda: False, 0.2)
    held = np.array([s.position for s in probe.states[first:]])
    assert len(held) > 50
    assert np.abs(held - a).max() < 0.01
    assert "dropped command" in log.read_text()
    assert probe.stream_until_reached("array", HOME)  # still listening


def test_joint_states_arrive_at_the_configured_rate_and_the_arm_waits_for_a_command(arm_node):
    probe, _ = arm_node(**{"sim.joint_state_rate_hz": 50.0})
    first = len(probe.states)
    probe.spin_until(lambda: False, 3.0)
    states = probe.states[first:]
    stamps = np.array([s.header.stamp.sec + 1e-9 * s.header.stamp.nanosec for s in states])
    rate = (len(stamps) - 1) / (stamps[-1] - stamps[0])
    print(f"/joint_states at {rate:.2f} Hz for 50 Hz configured, median gap {1e3 * np.median(np.diff(stamps)):.2f} ms")
    assert abs(rate - 50.0) < 2.5
    assert abs(np.median(np.diff(stamps)) - 0.02) < 0.004
    last = states[-1]
    assert list(last.name) == NAMES and len(last.position) == len(last.velocity) == len(last.effort) == 7
    positions = np.array([s.position for s in states])
    assert np.abs(positions - HOME).max() < 1e-4  # no command yet: the arm holds where it was reset


def reset(probe: Probe) -> str:
    """Call the arm's ~/reset; returns the answer's message."""
    from std_srvs.srv import Trigger

    assert probe.reset_client.wait_for_service(timeout_sec=10.0)
    goals = len(probe.goals)
    future = probe.reset_client.call_async(Trigger.Request())
    assert probe.spin_until(lambda: future.done() and len(probe.goals) > goals, 10.0)
    assert future.result().success
    return future.result().message


def test_reset_service_gives_a_new_pose_and_goal_and_the_arm_has_no_episodes_of_its_own(arm_node):
    probe, log = arm_node(**{"task.max_episode_steps": 5, "task.success_radius": 10.0})
    first_goal = probe.goal()
    assert probe.stream_until_reached("array", HOME + 0.3)  # far past any step limit or success of its own
    assert len(probe.goals) == 1 and "reset" not in log.read_text()  # episodes are the controller's to end
    assert reset(probe).startswith("reset 2: goal")
    assert np.linalg.norm(probe.goal() - first_goal) > 1e-3
    low, high = np.array(CFG.task.goal_low), np.array(CFG.task.goal_high)
    assert np.all(probe.goal() >= low) and np.all(probe.goal() <= high)
    assert probe.spin_until(lambda: np.abs(probe.q() - HOME).max() < 1e-3, 2.0)  # back home, holding


def lockstep_step(probe: Probe, target) -> None:
    before = len(probe.states)
    probe.send("array", target)
    assert probe.spin_until(lambda: len(probe.states) >= before + 1, 5.0)


def stamp_ns(msg) -> int:
    stamp = msg.clock if hasattr(msg, "clock") else msg.header.stamp
    return stamp.sec * 1_000_000_000 + stamp.nanosec


def test_lockstep_advances_exactly_one_control_period_per_command_and_clock_tells_it(arm_node):
    probe, _ = arm_node(**{"sim.lockstep": True})
    period_ns = round(1e9 / CFG.task.control_rate_hz)
    assert probe.spin_until(lambda: probe.clock, 10.0)
    start_ns = stamp_ns(probe.clock[-1])
    twin = Arm(CFG.task, CFG.sim)  # the same arm in this process, stepped by hand
    np.testing.assert_allclose(probe.q(), twin.state()[0], atol=1e-12)
    targets = [HOME + 0.05 * k for k in range(1, 4)]
    for k, target in enumerate(targets, start=1):
        lockstep_step(probe, target)
        twin.set_target(target)
        twin.step_control_period()
        np.testing.assert_allclose(probe.q(), twin.state()[0], atol=1e-9)
        assert probe.spin_until(lambda: stamp_ns(probe.clock[-1]) == start_ns + k * period_ns, 5.0)
        assert stamp_ns(probe.states[-1]) == start_ns + k * period_ns  # stamped with the simulated time
    count = len(probe.states)
    probe.spin_until(lambda: False, 0.5)
    assert len(probe.states) == count  # nothing moves or publishes without a command
    reset(probe)  # a reset: the new goal, then the reset state, at the same simulated time
    assert probe.spin_until(lambda: len(probe.states) > count, 5.0)
    np.testing.assert_allclose(probe.q(), HOME, atol=1e-12)
    assert stamp_ns(probe.goals[-1]) == stamp_ns(probe.states[-1]) == start_ns + 3 * period_ns
    lockstep_step(probe, HOME + 0.1)
    assert stamp_ns(probe.states[-1]) == start_ns + 4 * period_ns
    twin.close()


def test_env_and_node_give_the_same_observation_and_reward(arm_node):
    probe, _ = arm_node(**{"sim.lockstep": True})
    env = ArmEnv(CFG)
    env.reset(options={"goal": probe.goal()})
    kinematics, task = ArmKinematics(CFG.task), ReachTask(CFG.task)
    rng = np.random.default_rng(3)
    for _ in range(6):
        obs, reward, _, _, info = env.step(rng.uniform(-1, 1, 7))
        lockstep_step(probe, info["target"])
        state = probe.states[-1]
        ee = kinematics.fk(state.position)
        node_obs = task.observation(state.position, state.velocity, ee, probe.goal())
        np.testing.assert_allclose(node_obs, obs, atol=1e-6)
        assert task.reward(ee, probe.goal()) == pytest.approx(reward, abs=1e-9)
    env.close()
    kinematics.close()
