"""Bad input over real DDS to real nodes: adversarial joint states, garbage commands, fuzzed transitions and
damaged checkpoint files. Every case: a clear log line, no crash, no out-of-limit or oversized step, no bad
weights loaded. (File-level damage of bags and checkpoints is covered in test_bags.py / test_checkpoint.py.)
"""
from __future__ import annotations

import hashlib
import math
import pickle
import time

import numpy as np
from sensor_msgs.msg import JointState

from ros_helpers import spin_until, start_node, stop
from test_arm_node import HOME, NAMES, arm_node  # noqa: F401  (fixture: the arm node and its probe)
from test_controller_node import KIN, controller, write_checkpoint  # noqa: F401  (fixture: controller + FakeArm)
from test_learner_node import STEPS_PER_EPISODE, Peer, demo_dir  # noqa: F401  (fixture: demo bags)
from tdmpc_ros.config import Config
from tdmpc_ros.data.bags import read_episodes
from tdmpc_ros.msg import ModelUpdate, Transition

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
    for kind in kinds:  # each kind alone for over two tick periods, so the controller surely reads it
        arm.mode = "silent"
        for _ in range(12):
            arm.state_pub.publish(adversarial_state(arm, kind))
            arm.spin_for(0.01)
        arm.mode = "good"
        arm.spin_for(0.1)
    for kind in RNG.choice(kinds, 120):  # then interleaved with the arm's good 100 Hz states
        arm.state_pub.publish(adversarial_state(arm, str(kind)))
        arm.spin_for(0.02)
    flood_start = time.monotonic()
    while time.monotonic() - flood_start < 1.0:  # 1 kHz flood of good and bad states
        arm.state_pub.publish(adversarial_state(arm, str(RNG.choice(["good", "nan", "good", "old_stamp"]))))
        spin_until(arm.node, lambda: False, 0.001)
    arm.spin_for(2.0)

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


def test_fuzzed_transitions_skip_bad_episodes_and_keep_good_ones(tmp_path, demo_dir, rclpy_context):  # noqa: F811
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
    try:
        assert spin_until(peer.node, lambda: peer.node.count_subscribers("transitions") > 0, 60)
        for messages in episodes.values():
            for msg in messages:
                peer.pub.publish(msg)
                spin_until(peer.node, lambda: False, 0.002)
        text = lambda: (tmp_path / "learner.log").read_text()  # noqa: E731
        good_steps = 3 * n + 30  # episodes 1, huge, 8 and the cut-short 7
        assert spin_until(peer.node, lambda: f"online {good_steps} " in text(), 30), text()[-3000:]
        assert proc.poll() is None
        for reason in ["episode 2 skipped: observation has 5 values", "episode 3 skipped: NaN/inf in observation",
                       "episode 4 skipped: gap in step indices", "episode 5 skipped: step 3 appears twice"]:
            assert reason in text(), reason
    finally:
        assert stop(proc) == 0
    stored = read_episodes([run_dir / "online"], CFG)
    assert sorted(e.episode_id for e in stored.episodes) == sorted([1, 7, 8, huge])
    assert sum(len(e) for e in stored.episodes) == good_steps


class RunsCode:
    """A pickle payload that would create a file if it were ever unpickled with code execution."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_controller_rejects_every_bad_model_file(controller, tmp_path):  # noqa: F811
    arm, log = controller()
    good = tmp_path / "good.pt"
    sha = write_checkpoint(good, seed=3)
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
    arm.spin_for(1.5)
    status = arm.last_status()
    assert status.model_version == 1 and status.mode != "hold" and not marker.exists()
