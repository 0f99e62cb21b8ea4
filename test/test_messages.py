"""The rosidl-generated messages: they import, and cross a process boundary over real DDS intact."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from ros_helpers import REPO, spin_until, stop

pytestmark = pytest.mark.ros

# Publishes a Transition every 50 ms (step counting up) and one latched ModelUpdate, until stopped.
PUBLISHER = textwrap.dedent("""
    import rclpy
    from tdmpc_ros import topics
    from tdmpc_ros.msg import ModelUpdate, Transition
    from tdmpc_ros.nodes import qos

    rclpy.init()
    node = rclpy.create_node("message_publisher")
    transitions = node.create_publisher(Transition, topics.TRANSITIONS, qos.TRANSITIONS)
    updates = node.create_publisher(ModelUpdate, topics.MODEL_UPDATES, qos.LATCHED)
    update = ModelUpdate(version=7, path="/tmp/ckpt_000007.pt", sha256="ab" * 32, updates=3500, env_steps=4200)
    update.header.frame_id = "learner"
    updates.publish(update)
    step = 0

    def publish():
        global step
        msg = Transition(episode_id=11, step=step, reward=-0.25 * step, terminated=step % 2 == 1, truncated=False)
        msg.header.stamp = node.get_clock().now().to_msg()
        msg.observation = [float(step), 0.5, -1.5]
        msg.action = [0.25, -1.0]
        msg.next_observation = [float(step + 1), 0.5, -1.5]
        transitions.publish(msg)
        step += 1

    node.create_timer(0.05, publish)
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, rclpy.executors.ExternalShutdownException):
        pass
""")


def test_generated_messages_import_with_their_fields():
    from tdmpc_ros.msg import ModelUpdate, PlannerStatus, Transition

    assert set(Transition.get_fields_and_field_types()) >= {
        "episode_id", "step", "observation", "action", "reward", "next_observation", "terminated", "truncated"}
    assert set(ModelUpdate.get_fields_and_field_types()) >= {"version", "path", "sha256", "updates", "env_steps"}
    assert PlannerStatus.MODE_PLANNING == "planning"


def test_transition_and_model_update_cross_processes(rclpy_context):
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    from tdmpc_ros import topics
    from tdmpc_ros.msg import ModelUpdate, Transition
    from tdmpc_ros.nodes import qos

    node = rclpy.create_node("message_subscriber", context=rclpy_context)
    executor = SingleThreadedExecutor(context=rclpy_context)
    executor.add_node(node)
    transitions, updates = [], []
    node.create_subscription(Transition, topics.TRANSITIONS, transitions.append, qos.TRANSITIONS)
    node.create_subscription(ModelUpdate, topics.MODEL_UPDATES, updates.append, qos.LATCHED)
    publisher = subprocess.Popen([sys.executable, "-c", PUBLISHER], cwd=REPO, start_new_session=True,
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        received = spin_until(node, lambda: len(transitions) >= 3 and updates, 30.0, executor)
        assert received, f"got {len(transitions)} transitions, {len(updates)} updates; publisher exited with " \
                         f"{publisher.poll()}"
    finally:
        stop(publisher)
        node.destroy_node()
    output = publisher.stdout.read()
    assert "Traceback" not in output, output

    update = updates[0]
    assert (update.version, update.path, update.sha256, update.updates, update.env_steps) == (
        7, "/tmp/ckpt_000007.pt", "ab" * 32, 3500, 4200)
    assert update.header.frame_id == "learner"
    steps = [msg.step for msg in transitions]
    assert steps == list(range(steps[0], steps[0] + len(steps)))  # reliable: in order, none lost
    for msg in transitions:
        assert msg.episode_id == 11 and msg.reward == -0.25 * msg.step
        assert list(msg.observation) == [msg.step, 0.5, -1.5] and list(msg.next_observation) == [msg.step + 1, 0.5, -1.5]
        assert list(msg.action) == [0.25, -1.0]
        assert msg.terminated == (msg.step % 2 == 1) and not msg.truncated
        assert msg.header.stamp.sec > 0
