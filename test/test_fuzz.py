"""Bad input over real DDS to real nodes: adversarial joint states, garbage commands, fuzzed transitions,
damaged checkpoint files, and malformed messages of every field on every input of the controller and the arm
(odd stamps, oversized arrays, NaN/inf, wrong frames, absurd model versions). Every case: a clear log line, no
crash, no state changed by a rejected message, no out-of-limit or oversized step, no bad weights loaded, memory
bounded. (File-level damage of bags and checkpoints is covered in test_bags.py / test_checkpoint.py.)
"""
from __future__ import annotations

import array
import hashlib
import itertools
import math
import os
import pickle

import numpy as np
import pytest
import rclpy
from geometry_msgs.msg import PointStamped
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray
from std_srvs.srv import SetBool, Trigger
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from ros_helpers import next_items, spin_until, start_node, stop, untrained_checkpoint
from test_arm_node import FLOAT_TOPIC, HOME, NAMES, arm_node  # noqa: F401  (fixture: arm + probe)
from test_controller_node import KIN, controller  # noqa: F401  (fixture: controller + FakeArm)
from test_learner_node import STEPS_PER_EPISODE, Peer, demo_dir  # noqa: F401  (fixture: demo bags)
from tdmpc_ros import topics
from tdmpc_ros.config import Config
from tdmpc_ros.data.bags import read_episodes
from tdmpc_ros.learning.checkpoint_file import file_sha256
from tdmpc_ros.msg import LearnerProgress, ModelUpdate, Transition
from tdmpc_ros.nodes import guarded
from tdmpc_ros.tasks.base import VELOCITY_SCALE

pytestmark = pytest.mark.ros

CFG = Config()
SCALE = CFG.task.action_scale
RNG = np.random.default_rng(7)


def adversarial_state(arm, kind: str) -> JointState:
    """One bad /joint_states message built around the arm's true position."""
    names, q = list(NAMES), arm.q.copy()
    if kind == "nan":
        q[RNG.integers(7)] = math.nan
    elif kind == "inf":
        q[RNG.integers(7)] = -math.inf
    elif kind == "short":
        q = q[:RNG.integers(0, 7)]
    elif kind == "long":
        q = np.append(q, 0.0)
    elif kind == "unknown_name":
        names[RNG.integers(7)] = "elbow"
    elif kind == "duplicate_name":
        names[1] = names[0]
    elif kind == "empty":
        names, q = [], np.array([])
    elif kind == "random":
        q = RNG.uniform(-1e6, 1e6, 7)
    msg = JointState(name=names, position=q.tolist(), velocity=[0.0] * len(names))
    msg.header.stamp = arm.node.get_clock().now().to_msg()
    if kind == "old_stamp":  # out of order: an old stamp on the true state
        msg.header.stamp.sec -= int(RNG.integers(1, 1000))
    return msg


def test_adversarial_joint_states_never_crash_or_jump(controller):
    arm, log = controller()
    proc_commands = len(arm.commands)
    kinds = ["nan", "inf", "short", "long", "unknown_name", "duplicate_name", "empty", "random", "old_stamp"]
    for kind in kinds:  # each kind alone while the controller ticks three times, so it surely reads it
        arm.mode = "silent"
        for _ in range(3):
            arm.state_pub.publish(adversarial_state(arm, kind))
            next_items(arm.node, arm.commands, 1)
        arm.mode = "good"
        next_items(arm.node, arm.commands, 2)
    for kind in RNG.choice(kinds, 120):  # then interleaved with the arm's good 100 Hz states, a tick each
        arm.state_pub.publish(adversarial_state(arm, str(kind)))
        next_items(arm.node, arm.commands, 1)
    for i in range(1000):  # a flood of good and bad states, ten for each of the arm's own
        arm.state_pub.publish(adversarial_state(arm, str(RNG.choice(["good", "nan", "good", "old_stamp"]))))
        if i % 10 == 9:
            sent = arm.states_sent
            assert spin_until(arm.node, lambda: arm.states_sent > sent, 5)
    next_items(arm.node, arm.status, 1, timeout=10)  # a status from after the flood
    assert spin_until(arm.node, lambda: arm.last_status().mode != "hold" and not arm.last_status().fault, 10)
    targets = np.array([c for _, c in arm.commands[proc_commands:]])
    assert len(targets) > 100
    assert (targets >= KIN.safe_lower - 1e-9).all() and (targets <= KIN.safe_upper + 1e-9).all()
    # The fake arm reports the last command as its position, so even re-initialising from the measured
    # position after a fault stays within one action_scale step of the previous command.
    steps = np.abs(np.diff(targets, axis=0)).max(axis=1)
    assert steps.max() <= SCALE + 1e-9, steps.max()
    text = log.read_text()
    for words in ["NaN/inf", "lacks joints", "duplicate joint names", "size mismatch", "outside the joint limits",
                  "resuming control"]:
        assert words in text, words
    print(f"\n{len(targets)} commands under adversarial joint states: max step {steps.max():.4f} rad "
          f"(action_scale {SCALE}), {text.count('holding last target')} fault reports")


def test_garbage_on_every_arm_command_topic_is_dropped(arm_node):  # noqa: F811
    probe, log = arm_node()
    a = HOME + 0.1
    assert probe.stream_until_reached("array", a)
    first = len(probe.states)
    for _ in range(3):
        for kind in ("array", "trajectory", "joint_state"):
            probe.send(kind, [])  # empty
            probe.send(kind, [math.nan] * 7)
            probe.send(kind, [-math.inf] * 7)
            probe.send(kind, [1.0] * 9)
        probe.send("trajectory", a - 0.3, names=NAMES[:6] + [NAMES[0]])  # a joint twice, one missing
        probe.send("joint_state", a - 0.3, names=["x"] * 7)
        probe.spin_until(lambda: False, 0.2)
    held = np.array([s.position for s in probe.states[first:]])
    assert len(held) > 30 and np.abs(held - a).max() < 0.01  # the last target held throughout
    assert "dropped command" in log.read_text()  # logged, throttled to one line per 2 s
    assert probe.stream_until_reached("array", HOME)  # alive and still listening


def transition(peer, episode_id: int, step: int, obs_dim: int = CFG.task.obs_dim, last: bool = False,
               value: float = 0.1) -> Transition:
    obs = np.full(obs_dim, value)
    msg = Transition(episode_id=episode_id, step=step, reward=-0.5, observation=obs.tolist(),
                     next_observation=obs.tolist(), action=[0.0] * CFG.task.action_dim, truncated=last)
    msg.header.stamp = peer.node.get_clock().now().to_msg()
    return msg


def test_fuzzed_transitions_reject_bad_messages_and_keep_good_data(tmp_path, demo_dir, rclpy_context):  # noqa: F811
    """A bad message is rejected (nothing stored); an episode with a step missing or repeated is kept up to the
    break, as cut short, and the rest of it is not stored; every one of those counted lost."""
    run_dir = tmp_path / "run"
    proc = start_node("learner_node", {"agent.batch_size": 32, "learner.pretrain_updates": 10,
                                       "learner.run_dir": str(run_dir), "learner.demos": [str(demo_dir)]},
                      tmp_path / "learner.log")
    peer = Peer(rclpy_context)
    n = STEPS_PER_EPISODE
    huge = 2**64 - 1
    episodes = {  # episode id -> its messages
        1: [transition(peer, 1, s, last=s == n - 1) for s in range(n)],                           # good
        2: [transition(peer, 2, s, obs_dim=5, last=s == n - 1) for s in range(n)],                # wrong size
        3: [transition(peer, 3, s, value=math.nan if s == 7 else 0.1, last=s == n - 1) for s in range(n)],
        4: [transition(peer, 4, s, last=s == n - 1) for s in range(n) if s != 20],                # step gap
        5: [transition(peer, 5, s, last=s == n - 1) for s in [0, 1, 2, 3, 3] + list(range(4, n))],  # duplicate
        huge: [transition(peer, huge, s, last=s == n - 1) for s in range(n)],                     # huge id, good
        7: [transition(peer, 7, s) for s in range(30)],                                            # no final flag
        8: [transition(peer, 8, s, last=s == n - 1) for s in range(n)],                           # good
    }
    kept = {1: n, 3: 7, 4: 20, 5: 4, huge: n, 7: 30, 8: n}  # episode id -> steps stored (3-5 up to the break)
    published = sum(len(messages) for messages in episodes.values())
    try:
        assert spin_until(peer.node, lambda: peer.node.count_subscribers("transitions") > 0, 60)
        for messages in episodes.values():
            for msg in messages:
                peer.pub.publish(msg)
                spin_until(peer.node, lambda: False, 0.002)
        text = lambda: (tmp_path / "learner.log").read_text()  # noqa: E731
        good_steps = sum(kept.values())
        assert spin_until(peer.node, lambda: f"online {good_steps} " in text(), 30), text()[-3000:]
        assert proc.poll() is None
        assert spin_until(peer.node, lambda: (p := peer.progress[-1]).stored_transitions == good_steps
                          and p.lost_transitions == published - good_steps, 10), peer.progress[-1]
        for reason in ["rejected (wrong size) (first: episode 2 step 0: observation has 5 values",
                       "rejected (NaN/inf) (first: episode 3 step 7: NaN/inf in observation",
                       "not stored after a break in their episode (first: episode 3 step 8: it came after step 6)"]:
            assert reason in text(), reason
    finally:
        assert stop(proc) == 0
    stored = read_episodes([run_dir / "online"], CFG)
    assert {e.episode_id: len(e) for e in stored.episodes} == kept and not stored.skipped  # no gap in the bags


class RunsCode:
    """A pickle payload that would create a file if it were ever unpickled with code execution."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_controller_rejects_every_bad_model_file(controller, tmp_path):  # noqa: F811
    arm, log = controller()
    good = tmp_path / "good.pt"
    sha = file_sha256(untrained_checkpoint(good, seed=3))
    data = good.read_bytes()
    marker = tmp_path / "code_ran"
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0x01
    files = {"truncated.pt": data[: len(data) // 3], "flipped.pt": bytes(flipped), "empty.pt": b"",
             "pickle.pt": pickle.dumps({"format": "tdmpc_ros.checkpoint", "payload": RunsCode(marker)})}
    for name, content in files.items():
        (tmp_path / name).write_bytes(content)
    (tmp_path / "flipped.pt.sha256").write_text(f"{sha}  flipped.pt\n")  # the checksum the writer recorded
    cases = [(name, sha) for name in files] + [("flipped.pt", ""), ("missing.pt", sha)]  # "": the sidecar
    for version, (name, digest) in enumerate(cases, start=2):
        if name == "pickle.pt":
            digest = hashlib.sha256(files[name]).hexdigest()  # the checksum passes: the unpickler must refuse
        arm.update_pub.publish(ModelUpdate(version=version, path=str(tmp_path / name), sha256=digest))
        assert spin_until(arm.node, lambda: f"rejected model v{version}" in log.read_text(), 30), name
        line = next(line for line in log.read_text().splitlines() if f"rejected model v{version}" in line)
        assert name in line, line  # the log names the file
    next_items(arm.node, arm.status, 1, timeout=10)  # a status from after the last rejection
    status = arm.last_status()
    assert status.model_version == 1 and status.mode != "hold" and not marker.exists()


HUGE = 1_000_000  # entries in an oversized array: 8 MB of float64 on the wire
# Floods are of 0.8 MB messages, 50 of a kind: each through in milliseconds, where 8 MB ones take seconds
# (UDP fragments resent) on a loaded machine. A node that kept what it rejected would grow 40 MB a flood.
FLOOD_ENTRIES, FLOOD_COUNT = 100_000, 50
# RSS bounds: a first flood may grow a node by the DDS queue it fills (depth 10) and allocator slack; a
# second flood of the same must find that memory already there.
QUEUE_MB = 32
SETTLED_MB = 16


def rss_mb(pid: int) -> float:
    """Resident memory of a process (MB), from /proc."""
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024


def huge_floats(n: int = HUGE) -> array.array:
    return array.array("d", [0.1]) * n  # an array.array crosses into the message without a per-entry copy


def longest_line(log) -> int:
    return max(len(line) for line in log.read_text().splitlines())


def joint_state(arm, positions=None, names=NAMES, sec: int | None = None, nanosec: int = 0) -> JointState:
    msg = JointState(name=list(names), position=arm.q.tolist() if positions is None else positions)
    msg.header.stamp = arm.node.get_clock().now().to_msg()
    if sec is not None:
        msg.header.stamp.sec, msg.header.stamp.nanosec = sec, nanosec
    return msg


def goal(arm, xyz=(0.5, 0.1, 0.5), frame: str = KIN.base_link, sec: int | None = None,
         nanosec: int = 0) -> PointStamped:
    msg = PointStamped()
    msg.point.x, msg.point.y, msg.point.z = (float(v) for v in xyz)
    msg.header.frame_id = frame
    msg.header.stamp = arm.node.get_clock().now().to_msg()
    if sec is not None:
        msg.header.stamp.sec, msg.header.stamp.nanosec = sec, nanosec
    return msg


def call(arm, srv_type, name: str, request):
    client = arm.node.create_client(srv_type, name)
    assert client.wait_for_service(timeout_sec=10)
    future = client.call_async(request)
    assert spin_until(arm.node, future.done, 10)
    return future.result()


def goal_seen(transition) -> list[float]:
    """The goal inside a transition's observation (q, qd, end effector, goal, goal - end effector)."""
    n = len(NAMES)
    return [round(float(v), 4) for v in transition.observation[2 * n + 3:2 * n + 6]]


SYNC_MARKS = itertools.count(1)


def then_a_good_state(arm, msg) -> None:
    """Publish `msg` on /joint_states, then a good state marked by its joint-0 velocity, and wait for the
    transition that ends in the marked state. The controller reads one topic in order, so it has then read
    `msg`. The fake arm's own states pause meanwhile: ten of them (the publisher's depth) would push a large
    message out of the queue before it is through."""
    mode, arm.mode = arm.mode, "silent"
    mark = 1e-3 * next(SYNC_MARKS)  # rad/s
    state = joint_state(arm)
    state.velocity = [mark] + [0.0] * (len(NAMES) - 1)
    count = len(arm.transitions)
    arm.state_pub.publish(msg)
    arm.state_pub.publish(state)
    seen = lambda t: abs(t.next_observation[len(NAMES)] - VELOCITY_SCALE * mark) < 1e-7  # noqa: E731
    assert spin_until(arm.node, lambda: any(seen(t) for t in arm.transitions[count:]), 30)
    arm.mode = mode


def test_controller_survives_malformed_messages_on_every_input(controller, tmp_path):  # noqa: F811
    """Lockstep, so learner_progress is read too. Each bad message is rejected with a line
    naming what was wrong and changes nothing; good input afterwards is acted on; memory stays bounded."""
    arm, log = controller(**{"sim.lockstep": True, "controller.lockstep_max_backlog": 50,
                             "task.success_radius": 1e-6,  # one episode until the test starts another
                             "controller.state_timeout": 5.0})  # no stale spell from a stall of this process
    logged = lambda words: spin_until(arm.node, lambda: words in log.read_text(), 30)  # noqa: E731

    def more_commands(n: int = 5) -> bool:
        count = len(arm.commands)
        return spin_until(arm.node, lambda: len(arm.commands) >= count + n, 30)

    # joint_states: odd stamps, oversized arrays (rejected before they are copied), overlong names
    for msg, words in [
            (joint_state(arm, sec=10, nanosec=1_500_000_000), "malformed stamp: nanosec 1500000000 is not below 1e9"),
            (joint_state(arm, sec=-5), "negative stamp: sec -5"),
            (joint_state(arm, positions=huge_floats()), f"oversized: 7 names, {HUGE} positions"),
            (joint_state(arm, positions=huge_floats(2000), names=["x"] * 2000), "oversized"),  # throttled
            (joint_state(arm, names=NAMES[:6] + ["j" * 100_000]), "oversized")]:
        then_a_good_state(arm, msg)
        assert f"joint_states: rejected joint state: {words}" in log.read_text(), words
    then_a_good_state(arm, joint_state(arm, sec=2**31 - 1))  # far future but well formed: read (stamps order only)

    # goal: each rejected with its reason; the episode and its goal stay
    episode = arm.transitions[-1].episode_id
    now = arm.node.get_clock().now().nanoseconds // 10**9
    for msg, words in [(goal(arm, (math.nan, -math.inf, 0.5)), "non-finite coordinates: [nan, -inf, 0.5]"),
                       (goal(arm, (5.0, 0.1, 0.5)), "outside the goal box: [5.0, 0.1, 0.5]"),
                       (goal(arm, frame=""), "wrong frame: '' is not the base frame 'lbr_iiwa_link_0'"),
                       (goal(arm, frame="world" * 100_000), "wrong frame"),  # throttled
                       (goal(arm, sec=now, nanosec=2**32 - 1), "malformed stamp: nanosec 4294967295")]:
        arm.goal_pub.publish(msg)
        assert logged(f"goal: rejected goal: {words}"), words
    assert more_commands()
    assert arm.transitions[-1].episode_id == episode and goal_seen(arm.transitions[-1]) == [0.5, 0.1, 0.5]

    # model_updates: bad fields never reach the loader, bad files are refused by it; v1 keeps running
    good = tmp_path / "v2.pt"
    sha = file_sha256(untrained_checkpoint(good, seed=2))
    os.mkfifo(tmp_path / "fifo.pt")
    (tmp_path / "dir.pt").mkdir()
    for version, path, digest, words in [
            (2, "", sha, "no path"), (2, "v2.pt", sha, "relative path"),
            (2, "/" + "a" * 100_000, sha, "path too long: 100001 characters"), (2, str(good), "", "no sha256"),
            (2, str(good), "g" * 64, "malformed sha256"), (2, str(good), sha[:63], "malformed sha256"),
            (2, "/dev/zero", sha, "rejected model v2: /dev/zero"),
            (3, str(tmp_path / "fifo.pt"), sha, "rejected model v3: " + str(tmp_path / "fifo.pt")),
            (4, str(tmp_path / "dir.pt"), sha, "rejected model v4: " + str(tmp_path / "dir.pt")),
            (2**64 - 1, str(good), sha, "implausible version")]:
        arm.update_pub.publish(ModelUpdate(version=version, path=path, sha256=digest))
        assert logged(words), words
    arm.update_pub.publish(ModelUpdate(version=5, path=str(good), sha256=sha))
    assert spin_until(arm.node, lambda: arm.last_status().model_version == 5, 60), log.read_text()[-3000:]
    arm.update_pub.publish(ModelUpdate(version=4, path=str(good), sha256=sha))
    assert logged(f"rejected model v4 ({str(good)!r}): out of order: older than v5")
    statuses = len(arm.status)
    assert spin_until(arm.node, lambda: len(arm.status) > statuses, 5)
    assert arm.last_status().model_version == 5

    # learner_progress: an impossible backlog does not stop the world
    progress_pub = arm.node.create_publisher(LearnerProgress, topics.LEARNER_PROGRESS, 10)
    assert spin_until(arm.node, lambda: progress_pub.get_subscription_count() > 0, 30)
    progress_pub.publish(LearnerProgress(backlog_steps=2**64 - 1, env_steps=0))
    assert logged(f"rejected progress: inconsistent: {2**64 - 1} steps owed of 0 seen")
    assert more_commands()

    # memory: a second flood of oversized joint states grows nothing a first one did not
    rss = [rss_mb(arm.controller_pid)]
    for _ in range(2):
        for _ in range(FLOOD_COUNT):
            then_a_good_state(arm, joint_state(arm, positions=huge_floats(FLOOD_ENTRIES)))
        rss.append(rss_mb(arm.controller_pid))
    print(f"\ncontroller RSS {rss[0]:.1f} MB, after {FLOOD_COUNT} oversized joint states {rss[1]:.1f} MB, "
          f"after {FLOOD_COUNT} more {rss[2]:.1f} MB; longest log line {longest_line(log)} chars")
    assert rss[1] - rss[0] < QUEUE_MB and rss[2] - rss[1] < SETTLED_MB

    # still serving, and a good goal starts an episode that is planned within the limits
    episode = arm.transitions[-1].episode_id
    assert call(arm, SetBool, topics.CONTROLLER_ENABLE, SetBool.Request(data=True)).success
    assert call(arm, Trigger, topics.CONTROLLER_RESET, Trigger.Request()).success
    arm.goal_pub.publish(goal(arm, (0.4, -0.2, 0.4)))
    assert spin_until(arm.node, lambda: goal_seen(arm.transitions[-1]) == [0.4, -0.2, 0.4], 30)
    assert arm.transitions[-1].episode_id > episode
    # The episode began at the measured position, which this fake arm's 100 Hz states report a few lockstep
    # commands late; from there on each step is bounded.
    first = len(arm.commands)
    assert more_commands(20)
    assert arm.last_status().mode == "planning" and arm.last_status().model_version == 5
    targets = np.array([c for _, c in arm.commands[first:]])
    assert (targets >= KIN.safe_lower - 1e-9).all() and (targets <= KIN.safe_upper + 1e-9).all()
    assert np.abs(np.diff(targets, axis=0)).max() <= SCALE + 1e-9
    assert longest_line(log) < 1000  # hostile strings are cut short in the log


COMMAND_TOPICS = {"array": FLOAT_TOPIC, "trajectory": topics.COMMAND_TOPICS["joint_trajectory"],
                  "joint_state": topics.COMMAND_TOPICS["joint_state"]}  # the probe's names for them


def array_command(values) -> Float64MultiArray:
    return Float64MultiArray(data=values)


def trajectory_command(names, values, points: int = 1) -> JointTrajectory:
    return JointTrajectory(joint_names=list(names), points=[JointTrajectoryPoint(positions=values)] * points)


def joint_state_command(names, values) -> JointState:
    return JointState(name=list(names), position=values)


def lockstep_send(probe, kind: str, msg) -> None:
    """Publish one command and wait for the state the lockstep arm publishes after it, dropped or not:
    the arm has then read it."""
    count = len(probe.states)
    probe.pubs[kind].publish(msg)
    assert probe.spin_until(lambda: len(probe.states) > count, 30), kind


def test_arm_survives_malformed_commands_in_every_convention(arm_node):  # noqa: F811
    """Lockstep: every command read, dropped or not, answers with one joint state, so the test knows each
    was read. Each bad command is dropped with a line naming what was wrong, the last target held; memory
    stays bounded under oversized commands; a good command is still followed, whatever its stamp."""
    probe, log = arm_node(**{"sim.lockstep": True})
    a = HOME + 0.1
    assert probe.stream_until_reached("array", a)
    nan7, good = [math.nan] * 7, (a - 0.3).tolist()
    cases = [
        ("array", array_command(huge_floats()), f"wrong size: {HUGE} values for 7 joints"),
        ("array", array_command([]), "wrong size"),
        ("array", array_command([0.0, -math.inf] + good[2:]), "non-finite value: joints [1]"),
        ("trajectory", trajectory_command(["x"] * 100_000, huge_floats(100_000)),
         "wrong size: 100000 joint names for 7 joints"),
        ("trajectory", trajectory_command(NAMES, huge_floats()), "wrong size"),
        ("trajectory", trajectory_command([""] * 7, good), "unknown joint names: ['', '', '', '', '', '', '']"),
        ("trajectory", trajectory_command(NAMES[:6] + [NAMES[0]], good), "repeated joint names"),
        ("trajectory", trajectory_command(NAMES, good, points=0), "no points"),
        ("trajectory", trajectory_command(NAMES, nan7, points=10_000), "non-finite value: joints [0, 1, 2"),
        ("joint_state", joint_state_command(["x"] * 100_000, huge_floats(100_000)),
         "wrong size: 100000 joint names for 7 joints"),
        ("joint_state", joint_state_command(NAMES, huge_floats()), "wrong size"),
        ("joint_state", joint_state_command(NAMES[:6] + ["j" * 100_000], good), "unknown joint names: ['jjj"),
        ("joint_state", joint_state_command(NAMES, [math.inf] * 7), "non-finite value")]
    first = len(probe.states)
    for kind, msg, words in cases:
        lockstep_send(probe, kind, msg)
        assert f"{COMMAND_TOPICS[kind]}: dropped command ({words}" in log.read_text(), (kind, words)
    held = np.array([s.position for s in probe.states[first:]])
    assert len(held) >= len(cases) and np.abs(held - a).max() < 0.01  # the last target held throughout

    oversized = huge_floats(FLOOD_ENTRIES)
    flood = [("array", array_command(oversized)), ("trajectory", trajectory_command(NAMES, oversized)),
             ("joint_state", joint_state_command(NAMES, oversized))]
    rss = [rss_mb(probe.arm_pid)]
    for _ in range(2):
        for _ in range(FLOOD_COUNT):
            for kind, msg in flood:
                lockstep_send(probe, kind, msg)
        rss.append(rss_mb(probe.arm_pid))
    print(f"\narm RSS {rss[0]:.1f} MB, after {FLOOD_COUNT} oversized commands in each convention {rss[1]:.1f} MB, "
          f"after as many more {rss[2]:.1f} MB; longest log line {longest_line(log)} chars")
    assert rss[1] - rss[0] < QUEUE_MB and rss[2] - rss[1] < SETTLED_MB
    assert longest_line(log) < 1000

    odd = trajectory_command(NAMES[::-1], (HOME - 0.1)[::-1].tolist())  # stamps are not read: still followed
    odd.header.stamp.sec, odd.header.stamp.nanosec = -7, 2**32 - 1
    for _ in range(40):
        lockstep_send(probe, "trajectory", odd)
    assert np.abs(probe.q() - (HOME - 0.1)).max() < 0.01
    assert probe.stream_until_reached("joint_state", HOME)


def test_an_exception_escaping_a_callback_is_logged_and_the_node_goes_on(rclpy_context, capfd):
    """The last-resort guard every input callback of the arm and the controller runs under."""
    node = rclpy.create_node("guarded", context=rclpy_context)

    def on_message(msg):
        raise ValueError(f"missed case {msg}")

    def on_request(request, response):
        raise KeyError(request)

    callback = guarded(node, on_message)
    assert [callback(n) for n in range(3)] == [None, None, None]
    response = Trigger.Response()
    assert guarded(node, on_request, service=True)(Trigger.Request(), response) is response
    assert not response.success  # the caller gets an answer: a failure
    err = capfd.readouterr().err
    assert err.count("Traceback") == 2  # once per callback
    assert "on_message raised; the node carries on" in err and "ValueError: missed case 0" in err
    assert "on_message raised again (2 times): ValueError: 'missed case 1'" in err  # then throttled lines
    assert "on_request raised; the node carries on" in err
    node.destroy_node()
