"""The learner's intake (issues #21, #18): every transition stored or every loss counted, and no message its type
allows harms it. Unit tests drive data.live_intake.LiveIntake with serialised messages as DDS delivers them;
the ROS tests feed a live learner node over real DDS and check its own reports against its bags."""
from __future__ import annotations

import array
import math
import signal
import time

import numpy as np
import pytest

from ros_helpers import spin_until, start_node, stop
from test_learner_node import demo_dir  # noqa: F401  (fixture: demo bags)
from tdmpc_ros.config import Config, config_from_dict, default_config_path, load_config
from tdmpc_ros.data.bags import read_episodes
from tdmpc_ros.data.live_intake import LiveIntake, TransitionError, decode_transition, transition_cdr_bytes

CFG = Config()
OBS, ACT = CFG.model.obs_dim, CFG.model.action_dim
MAX_STEPS = CFG.task.max_episode_steps


def transition(episode_id: int, step: int, last: bool = False, obs_dim: int = OBS, action_dim: int = ACT,
               value: float = 0.1, **fields):
    from tdmpc_ros.msg import Transition

    msg = Transition(episode_id=episode_id, step=step, reward=-0.5, observation=[value + step] * obs_dim,
                     next_observation=[value + step + 1] * obs_dim, action=[0.0] * action_dim, truncated=last)
    for name, v in fields.items():
        setattr(msg, name, v)
    return msg


def cdr(msg) -> bytes:
    from rclpy.serialization import serialize_message

    return serialize_message(msg)


class Recorder:
    """A LiveIntake whose bag is a list, with a clock the test moves."""

    def __init__(self, cfg: Config = CFG):
        self.now = 0.0
        self.written: list[bytes] = []
        self.episodes = []
        self.intake = LiveIntake(cfg, lambda data, stamp, end, arm: self.written.append(data), clock=lambda: self.now)
        self.seq: dict[bytes, int] = {}

    def send(self, data: bytes, publisher: bytes = b"A", seq: int | None = None):
        """Hand one message to the intake as the publisher's next (or given) sequence number."""
        self.seq[publisher] = seq if seq is not None else self.seq.get(publisher, 0) + 1
        self.episodes += self.intake.add(data, publisher, self.seq[publisher], 1)


@pytest.mark.unit
def test_decode_reads_ros_serialisation_exactly():
    from tdmpc_ros.data.transitions import bag_message
    from tdmpc_ros.data.typestore import TRANSITION, typestore

    msg = transition(2**64 - 1, 7, terminated=True)
    msg.observation[3], msg.action[1], msg.header.stamp.sec, msg.header.stamp.nanosec = 2.5, -1.0, -5, 999
    data = cdr(msg)
    assert len(data) == transition_cdr_bytes(OBS, ACT)
    big_endian = bytes(typestore().serialize_cdr(bag_message(msg), TRANSITION, little_endian=False))
    msg.header.frame_id = "arm_3"  # alignment after a string of any length
    for raw in (data, big_endian, cdr(msg)):
        got = decode_transition(raw, OBS, ACT, MAX_STEPS)
        assert (got.episode_id, got.step, got.terminated, got.truncated) == (2**64 - 1, 7, True, False)
        assert np.array_equal(got.observation, np.float32(msg.observation))
        assert np.array_equal(got.action, np.float32(msg.action))
        assert np.array_equal(got.next_observation, np.float32(msg.next_observation))
        assert got.reward == -0.5 and got.stamp_ns == -5 * 10**9 + 999


def malformed_messages() -> dict[str, bytes]:
    """Every kind of bad serialised Transition for episode 0 step 2, by name."""
    good = cdr(transition(0, 2))
    bad = {f"cut at byte {n}": good[:n] for n in range(len(good))}  # every truncation, the empty message too
    bad["XCDR2 encapsulation"] = b"\x00\x07\x00\x00" + good[4:]
    bad["random bytes"] = bytes(np.random.default_rng(0).integers(0, 256, 300, dtype=np.uint8))
    for name, size in (("observation", OBS), ("action", ACT), ("next_observation", OBS)):
        for n in (0, size - 1, size + 1, 100_000):
            bad[f"{name} of {n}"] = cdr(transition(0, 2, **{name: [0.0] * n}))
    for name in ("observation", "action", "next_observation"):
        for value in (math.nan, math.inf, -math.inf):
            msg = transition(0, 2)
            values = list(getattr(msg, name))
            values[-1] = value
            setattr(msg, name, values)
            bad[f"{value} in {name}"] = cdr(msg)
    bad["NaN reward"] = cdr(transition(0, 2, reward=math.nan))
    bad["step beyond the episode limit"] = cdr(transition(0, MAX_STEPS))
    bad["step 2^32-1"] = cdr(transition(0, 2**32 - 1))
    # an array length field claiming 2^32-1 values in a short message: rejected before any value is read
    length_at = good.index(np.uint32(OBS).tobytes(), 32)
    bad["huge length field"] = good[:length_at] + b"\xff\xff\xff\xff" + good[length_at + 4:]
    return bad


@pytest.mark.unit
def test_malformed_messages_are_rejected_without_changing_anything():
    rec = Recorder()
    rec.send(cdr(transition(0, 0)))
    rec.send(cdr(transition(0, 1)))
    bad = malformed_messages()
    for name, data in bad.items():
        with pytest.raises(TransitionError):
            decode_transition(data, OBS, ACT, MAX_STEPS)
        rec.send(data)
        assert len(rec.written) == 2 and rec.intake.open_episodes == 1 and not rec.episodes, name
    rec.send(cdr(transition(0, 2, last=True)))  # the episode goes on as if the bad ones never came
    (episode,) = rec.episodes
    assert len(episode) == 3 and episode.truncated and len(rec.written) == 3
    intake = rec.intake
    assert (intake.rejected, intake.stored, intake.missed, intake.cut) == (len(bad), 3, 0, 0)
    assert intake.lost == intake.received - intake.stored
    problems = "\n".join(intake.take_problems())
    for kind in ("undecodable", "wrong size", "NaN/inf", "step out of range"):
        assert f"rejected ({kind})" in problems, kind
    assert intake.take_problems() == []


def longest_received_prefix(received: set[int], steps: int) -> int:
    n = 0
    while n < steps and n in received:
        n += 1
    return n


@pytest.mark.unit
@pytest.mark.parametrize("seed", range(5))
def test_transport_gaps_are_counted_exactly_and_no_episode_is_spliced(seed):
    """Two publishers with the same episode ids, random losses: missed counted exactly, published = stored +
    lost, and each stored episode is the longest prefix of it that arrived whole."""
    rng = np.random.default_rng(seed)
    rec = Recorder()
    truth = {}  # (publisher, seq) -> (episode, step)
    for publisher in (b"A", b"B"):
        seq = 0
        for episode_id in range(20):
            steps = int(rng.integers(1, 12))
            for step in range(steps):
                seq += 1
                truth[publisher, seq] = (episode_id, step, step == steps - 1)
    newest = {publisher: max(seq for p, seq in truth if p == publisher) for publisher in (b"A", b"B")}
    # a publisher's first and newest messages arrive: losses before the first heard, or after the newest, are
    # invisible to sequence numbers (and a full queue drops its oldest, never the newest)
    kept = [key for key in truth if key[1] in (1, newest[key[0]]) or rng.random() > 0.15]
    order = sorted(kept, key=lambda key: (key[1], key[0]))  # interleaved, each publisher in order
    for publisher, seq in order:
        episode_id, step, last = truth[publisher, seq]
        rec.send(cdr(transition(episode_id, step, last=last, value=ord(publisher))), publisher, seq)
    intake = rec.intake
    rec.now = 1e9
    rec.episodes += intake.expire()  # what is still open, as cut short
    assert intake.missed == len(truth) - len(kept)
    assert intake.received == len(kept) and intake.stored + intake.lost == len(truth)
    assert len(rec.written) == intake.stored == sum(len(e) for e in rec.episodes)
    for publisher in (b"A", b"B"):
        by_episode: dict[int, set[int]] = {}
        lengths: dict[int, int] = {}
        for (p, seq), (episode_id, step, last) in truth.items():
            if p == publisher:
                lengths[episode_id] = max(lengths.get(episode_id, 0), step + 1)
                if (p, seq) in kept:
                    by_episode.setdefault(episode_id, set()).add(step)
        stored = {e.episode_id: e for e in rec.episodes if e.observations[0, 0] == ord(publisher)}
        for episode_id, steps in lengths.items():
            n = longest_received_prefix(by_episode.get(episode_id, set()), steps)
            if n == 0:
                assert episode_id not in stored
                continue
            episode = stored[episode_id]
            assert len(episode) == n and episode.truncated
            assert np.array_equal(episode.observations[:, 1], ord(publisher) + np.arange(n + 1))  # steps in order


@pytest.mark.unit
def test_step_jumps_duplicates_and_restarts_cut_the_episode_short():
    rec = Recorder()
    for step in (0, 1, 2, 5, 6):  # a jump: 0..2 kept, the rest of episode 1 not stored
        rec.send(cdr(transition(1, step)))
    for step in (0, 1, 1, 2):  # a duplicate
        rec.send(cdr(transition(2, step)))
    for step in (0, 1, 0, 1):  # the id reused from step 0 (a restarted controller): two episodes
        rec.send(cdr(transition(3, step)))
    rec.send(cdr(transition(3, 2, last=True)))
    rec.send(cdr(transition(4, 9, last=True)))  # an episode heard from its middle
    got = [(e.episode_id, len(e), e.truncated) for e in rec.episodes]
    assert got == [(1, 3, True), (2, 2, True), (3, 2, True), (3, 3, True)]
    intake = rec.intake
    assert (intake.cut, intake.missed, intake.rejected) == (2 + 2 + 1, 0, 0)
    assert intake.stored + intake.lost == intake.received == 15
    problems = "\n".join(intake.take_problems())
    assert "not stored after a break in their episode (first: episode 1 step 5: it came after step 2)" in problems


@pytest.mark.unit
def test_a_controller_first_heard_mid_episode_is_kept_from_there():
    """A learner (re)started while a controller is mid-episode keeps the rest of that episode: a whole tail."""
    rec = Recorder()
    rec.send(cdr(transition(4, 1, observation=[])), seq=900)  # rejected: the first accepted message counts
    for step in range(30, 35):
        rec.send(cdr(transition(4, step, last=step == 34)))
    for step in (0, 1, 5, 6):
        rec.send(cdr(transition(5, step)))
    rec.now = 1e9
    got = rec.episodes + rec.intake.expire()
    assert [(e.episode_id, len(e), round(float(e.observations[0, 0]), 3)) for e in got] == [(4, 5, 30.1),
                                                                                              (5, 2, 0.1)]
    assert (rec.intake.stored, rec.intake.cut, rec.intake.rejected, rec.intake.missed) == (7, 2, 1, 0)


@pytest.mark.unit
def test_open_episodes_are_capped_in_number_and_age():
    cfg = config_from_dict({"learner": {"max_open_episodes": 4, "open_episode_timeout_s": 10.0}})
    rec = Recorder(cfg)
    for i in range(10):  # ten publishers, each with an episode that never ends
        for step in range(3):
            rec.now += 0.1
            rec.send(cdr(transition(i, step)), publisher=bytes([i]))
            assert rec.intake.open_episodes <= 4
    assert [e.episode_id for e in rec.episodes] == [0, 1, 2, 3, 4, 5]  # oldest closed first, as cut short
    assert all(e.truncated and len(e) == 3 for e in rec.episodes)
    rec.now += 5.0
    for _ in range(100):  # garbage from publisher 9 does not keep its episode open
        rec.send(b"\x00\x01\x00\x00", publisher=bytes([9]))
    assert rec.intake.expire() == [] and rec.intake.open_episodes == 4
    rec.now += 5.5
    assert sorted(e.episode_id for e in rec.intake.expire()) == [6, 7, 8, 9]
    assert rec.intake.open_episodes == 0
    rec.now += 10.0
    rec.intake.expire()
    assert rec.intake._streams == {}  # silent publishers forgotten too
    # and no episode outgrows the step limit: the step past it is rejected, the episode closes as it came
    for step in range(MAX_STEPS + 1):
        rec.send(cdr(transition(50, step)), publisher=b"long")
    assert rec.intake.open_episodes == 1 and rec.intake.rejected == 101


@pytest.mark.unit
def test_a_fleets_arms_keep_their_episodes_apart_in_bags_and_replay(tmp_path):
    """Two arms whose controllers both number episodes the same, their steps interleaved: the intake tags each
    episode with its arm, each arm's bags roll at that arm's own episode ends (tiny bags: a roll every
    episode), so reading the bags back gives every episode whole, per arm, and replay holds (arm, id) pairs."""
    from tdmpc_ros.data.online_bags import ArmBags
    from tdmpc_ros.learning.replay import Replay

    bags = ArmBags(tmp_path / "online", max_bytes=1)  # a new bag after every episode
    intake = LiveIntake(CFG, bags.write_cdr)
    lengths = {"arm0": [7, 9, 8], "arm1": [10, 6, 9]}
    streams = {arm: [(episode_id, step, step == n - 1) for episode_id, n in enumerate(ns, start=1)
                     for step in range(n)] for arm, ns in lengths.items()}
    done, seq = [], {"arm0": 0, "arm1": 0}
    for i in range(max(map(len, streams.values()))):  # arm0's step, then arm1's: episode ends never line up
        for arm, steps in streams.items():
            if i < len(steps):
                episode_id, step, last = steps[i]
                seq[arm] += 1
                value = 100.0 * int(arm[-1]) + episode_id  # tells the arm and episode a step came from
                done += intake.add(cdr(transition(episode_id, step, last=last, value=value)), b"gid", seq[arm],
                                   i + 1, arm)  # the same publisher GID, even: the arm keeps them apart
    bags.close()
    assert intake.stored == sum(map(sum, lengths.values())) and intake.lost == 0
    assert sorted((e.arm, e.episode_id, len(e)) for e in done) == \
        [(arm, i + 1, n) for arm, ns in lengths.items() for i, n in enumerate(ns)]
    assert sorted(p.name for p in (tmp_path / "online").iterdir()) == ["arm0", "arm1"]
    assert len(list((tmp_path / "online" / "arm1").glob("online_*"))) == 3  # a bag per episode, none split
    report = read_episodes([tmp_path / "online"], CFG)
    assert report.skipped == []
    back = sorted((e.arm, e.episode_id, len(e), float(e.observations[0, 0])) for e in report.episodes)
    assert back == [(arm, i + 1, n, 100.0 * int(arm[-1]) + i + 1) for arm, ns in lengths.items()
                    for i, n in enumerate(ns)]
    replay = Replay(CFG)
    for episode in report.episodes:
        replay.add_online(episode)
    assert sorted(replay.online_keys()) == [(arm, i) for arm in ("arm0", "arm1") for i in (1, 2, 3)]


# -- a live learner node over real DDS ---------------------------------------------------------------------------
NODE_MAX_STEPS = load_config(default_config_path()).task.max_episode_steps  # what the nodes run
LEARNER = {"agent.batch_size": 32, "learner.pretrain_updates": 10, "learner.publish_every": 1000,
           "learner.log_every_s": 1.0}


class Feeder:
    """Plays `arms` controllers (a publisher each) and listens to the learner's progress and diagnostics."""

    def __init__(self, context, arms: int = 1, namespaces: tuple[str, ...] = ()):
        """`namespaces`: a publisher on `<ns>/transitions` each (a fleet's arms) instead of `arms` on `transitions`."""
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray

        from tdmpc_ros import topics
        from tdmpc_ros.msg import LearnerProgress, Transition
        from tdmpc_ros.nodes import qos

        self.node = rclpy.create_node("test_feeder", context=context)
        self.pubs = [self.node.create_publisher(Transition, topic, qos.TRANSITIONS)
                     for topic in [f"{ns}/{topics.TRANSITIONS}" for ns in namespaces] or [topics.TRANSITIONS] * arms]
        self.progress: list[LearnerProgress] = []
        self.node.create_subscription(LearnerProgress, topics.LEARNER_PROGRESS, self.progress.append, 10)
        self.diagnostics: list[dict[str, str]] = []
        self.node.create_subscription(DiagnosticArray, topics.DIAGNOSTICS, self.on_diagnostics, 10)
        self.published = 0

    def on_diagnostics(self, msg) -> None:
        self.diagnostics += [{kv.key: kv.value for kv in s.values} for s in msg.status
                             if s.name.endswith("tdmpc_learner")]

    def wait(self, predicate, timeout: float) -> bool:
        return spin_until(self.node, predicate, timeout)

    def connected(self) -> bool:
        return all(p.get_subscription_count() for p in self.pubs) and bool(self.progress)

    def publish(self, arm: int, msg) -> None:
        """A message, or serialised bytes as they are; a message without a stamp is stamped now."""
        if not isinstance(msg, bytes) and not msg.header.stamp.sec:
            msg.header.stamp = self.node.get_clock().now().to_msg()
        self.pubs[arm].publish(msg)
        self.published += 1

    def accounted(self) -> bool:
        """The learner has stored or counted lost every message published."""
        last = self.progress[-1]
        return last.stored_transitions + last.lost_transitions == self.published

    def diagnosed(self, key: str) -> int:
        return int(self.diagnostics[-1].get(key, -1)) if self.diagnostics else -1


def start_learner(tmp_path, demo_dir, **params):  # noqa: F811
    return start_node("learner_node", {**LEARNER, "learner.run_dir": str(tmp_path / "run"),
                                       "learner.demos": [str(demo_dir)], **params}, tmp_path / "learner.log")


def bag_steps(folder) -> dict[int, list[int]]:
    """episode id -> its step numbers in the order the online bags hold them."""
    from rosbags.rosbag2 import Reader

    from tdmpc_ros.data.typestore import typestore

    steps: dict[int, list[int]] = {}
    for bag in sorted(p.parent for p in folder.glob("*/metadata.yaml")):
        with Reader(bag) as reader:
            for conn, _, data in reader.messages():
                msg = typestore().deserialize_cdr(data, conn.msgtype)
                steps.setdefault(int(msg.episode_id), []).append(int(msg.step))
    return steps


def rss_mb(pid: int) -> float:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    raise RuntimeError(f"no VmRSS for {pid}")


@pytest.mark.ros
def test_a_learner_discovers_arms_and_keeps_them_apart(tmp_path, demo_dir, rclpy_context):  # noqa: F811
    """learner.discover_arms: arms nobody listed (two namespaces, the same episode ids) are found on the graph and
    taken, each arm's episodes in bags of its own; the learner's own `transitions` stays taken too."""
    proc = start_learner(tmp_path, demo_dir, **{"agent.compile": False, "learner.discover_arms": True})
    feeder = Feeder(rclpy_context, namespaces=("left", "lab/right", ""))
    try:
        assert feeder.wait(feeder.connected, 60), (tmp_path / "learner.log").read_text()
        for episode_id in (0, 1):
            for step in range(5):
                for arm in range(3):
                    feeder.publish(arm, transition(episode_id, step, last=step == 4, value=10.0 * arm))
        assert feeder.wait(lambda: feeder.accounted() and feeder.diagnosed("left/replay_episodes") == 2
                           and feeder.diagnosed("lab/right/replay_episodes") == 2, 30), feeder.diagnostics[-1:]
        assert feeder.progress[-1].lost_transitions == 0 and feeder.diagnosed("left/env_steps") == 10
    finally:
        assert stop(proc) == 0
    online = tmp_path / "run" / "online"
    assert {p.name for p in online.iterdir()} >= {"left", "lab"} and (online / "lab" / "right").is_dir()
    report = read_episodes([online], CFG)
    assert sorted((e.arm, e.episode_id, float(e.observations[0, 0])) for e in report.episodes) == \
        [(arm, i, 10.0 * n) for arm, n in (("", 2), ("lab/right", 1), ("left", 0)) for i in (0, 1)]


@pytest.mark.ros
def test_burst_above_capacity_counts_every_loss_and_splices_no_episode(tmp_path, demo_dir, rclpy_context):  # noqa: F811
    """Two controllers flood 10-step episodes, half of it while the learner is stopped (SIGSTOP: nothing taken,
    so loss is certain) and half while it works off that backlog: lost as reported = published - stored,
    stored as reported = what the bags hold, and every stored episode is steps 0..n-1 without a gap.

    Losses are counted from each publisher's sequence numbers, so the last of them show when its next message
    arrives; a live controller goes on publishing, and so do these after the flood. A stop longer than the DDS
    lease (20 s: a slow machine) unmatches the publishers, and what they send before DDS matches them again is
    lost to the learner, counted the same way."""
    proc = start_learner(tmp_path, demo_dir, **{"agent.compile": False})
    feeder = Feeder(rclpy_context, arms=2)
    steps = 10

    def burst(episodes: int, first_id: int) -> None:
        for i in range(episodes):
            for step in range(steps):
                for arm in (0, 1):
                    feeder.publish(arm, transition(arm * 10**6 + first_id + i, step, last=step == steps - 1))

    try:
        assert feeder.wait(feeder.connected, 60), (tmp_path / "learner.log").read_text()
        burst(1, first_id=0)  # each publisher heard from (its losses count from its first message)
        assert feeder.wait(lambda: feeder.progress[-1].stored_transitions == 2 * steps, 30)
        proc.send_signal(signal.SIGSTOP)
        burst(300, first_id=1)
        proc.send_signal(signal.SIGCONT)
        burst(300, first_id=301)
        heard_before = len(feeder.progress)
        for tick in range(60):  # a one-step episode per arm at a time until all is accounted
            for arm in (0, 1):
                feeder.publish(arm, transition(arm * 10**6 + 601 + tick, 0, last=True))
            if feeder.wait(feeder.accounted, 2.0):
                break
        assert feeder.accounted(), (feeder.published, feeder.progress[-1], len(feeder.progress) - heard_before,
                                    [p.get_subscription_count() for p in feeder.pubs],
                                    (tmp_path / "learner.log").read_text()[-3000:])
        last = feeder.progress[-1]
        assert last.lost_transitions > 0, "the burst never exceeded what the learner takes"
        assert feeder.wait(lambda: feeder.diagnosed("transitions_stored") == last.stored_transitions, 10)
        diag = feeder.diagnostics[-1]
        assert int(diag["transitions_missed"]) > 0 and int(diag["transitions_rejected"]) == 0
        assert feeder.wait(lambda: "transitions lost:" in (tmp_path / "learner.log").read_text(), 10)
    finally:
        proc.send_signal(signal.SIGCONT)
        assert stop(proc) == 0
    stored = bag_steps(tmp_path / "run" / "online")
    assert sum(len(s) for s in stored.values()) == last.stored_transitions
    assert feeder.published - last.stored_transitions == last.lost_transitions
    for episode_id, got in stored.items():
        assert got == list(range(len(got))), episode_id
    print(f"\nburst: {feeder.published} published, {last.stored_transitions} stored, {last.lost_transitions} lost "
          f"(missed {diag['transitions_missed']}, cut {diag['transitions_cut']}), {len(stored)} episodes in bags")


@pytest.mark.ros
def test_a_stopped_learner_stores_what_dds_holds(tmp_path, demo_dir, rclpy_context):  # noqa: F811
    """Transitions DDS delivered but the learner had not taken when told to stop (here: sent while it was paused
    by SIGSTOP, the SIGINT waiting for SIGCONT) are taken and written before the bag closes: none lost. More are
    sent than a paused reader holds (Fast DDS's shared-memory port: 512 messages), so the rest arrive only when the
    writer's next heartbeat (every 3 s) has them resent, and the stop must wait for that."""
    proc = start_learner(tmp_path, demo_dir, **{"agent.compile": False})
    feeder = Feeder(rclpy_context)
    episodes, steps = 80, 10
    try:
        assert feeder.wait(feeder.connected, 60), (tmp_path / "learner.log").read_text()
        feeder.publish(0, transition(0, 0, last=True))
        assert feeder.wait(feeder.accounted, 30)
        proc.send_signal(signal.SIGSTOP)
        for i in range(1, episodes + 1):
            for step in range(steps):
                feeder.publish(0, transition(i, step, last=step == steps - 1))
        proc.send_signal(signal.SIGINT)
        proc.send_signal(signal.SIGCONT)
        assert proc.wait(60) == 0
    finally:
        stop(proc)
    stored = bag_steps(tmp_path / "run" / "online")
    assert stored == {0: [0], **{i: list(range(steps)) for i in range(1, episodes + 1)}}, \
        (tmp_path / "learner.log").read_text()[-2000:]
    assert f"stopping: took the {episodes * steps} transitions" in (tmp_path / "learner.log").read_text()


@pytest.mark.ros
@pytest.mark.slow
def test_sustained_fleet_rate_with_training_loses_nothing(tmp_path, demo_dir, rclpy_context):  # noqa: F811
    """Eight controllers at 50 Hz (400 transitions/s) for 15 s while the learner trains: all stored."""
    arms, rate_hz, seconds, steps = 8, 50.0, 15.0, 50
    proc = start_learner(tmp_path, demo_dir)
    feeder = Feeder(rclpy_context, arms=arms)
    try:
        assert feeder.wait(feeder.connected, 60), (tmp_path / "learner.log").read_text()
        # training runs: past the first update's compile (about a minute from a cold inductor cache)
        assert feeder.wait(lambda: feeder.progress[-1].updates > 0, 300), (tmp_path / "learner.log").read_text()
        updates_before = feeder.progress[-1].updates
        start, ticks = time.monotonic(), int(rate_hz * seconds)
        for tick in range(ticks):
            feeder.wait(lambda: time.monotonic() >= start + tick / rate_hz, 1.0)  # the controllers' period
            for arm in range(arms):
                step = tick % steps
                feeder.publish(arm, transition(arm * 10**6 + tick // steps, step, last=step == steps - 1))
        assert feeder.wait(feeder.accounted, 60), (feeder.published, feeder.progress[-1])
        last = feeder.progress[-1]
        assert last.lost_transitions == 0 and last.stored_transitions == feeder.published == arms * ticks
        assert last.updates > updates_before  # it trained throughout
    finally:
        assert stop(proc) == 0
    stored = bag_steps(tmp_path / "run" / "online")
    assert sum(len(s) for s in stored.values()) == feeder.published
    assert all(got == list(range(steps)) for got in stored.values())


@pytest.mark.ros
def test_malformed_transitions_never_kill_the_learner(tmp_path, demo_dir, rclpy_context):  # noqa: F811
    """Every field malformed, raw garbage, odd stamps, a huge frame id, ids that never close, more open episodes
    than the cap: the learner stays up, rejects exactly the malformed messages, keeps its open episodes within
    `learner.max_open_episodes` and closes them after `learner.open_episode_timeout_s`; memory stays bounded
    (resident memory grows < 300 MB over 30 arrays of 4 MB); the good data around it all is stored whole."""
    max_open = 8
    proc = start_learner(tmp_path, demo_dir, **{"agent.compile": False, "learner.max_open_episodes": max_open,
                                               "learner.open_episode_timeout_s": 3.0})
    feeder = Feeder(rclpy_context, arms=max_open + 4)
    huge = array.array("f", [0.5]) * 1_000_000
    try:
        assert feeder.wait(feeder.connected, 60), (tmp_path / "learner.log").read_text()
        rss_before = rss_mb(proc.pid)
        for arm in range(max_open + 4):  # more controllers mid-episode than the cap
            for step in range(3):
                feeder.publish(arm, transition(5 * 10**6 + arm, step))
        assert feeder.wait(feeder.accounted, 30)  # each controller heard from before the flood
        # typed messages with one bad field each, interleaved with a good episode that must survive them
        bad = [dict(observation=[]), dict(observation=[0.1] * (OBS + 1)), dict(action=[0.0] * (ACT - 1)),
               dict(next_observation=[0.1] * 5), dict(reward=math.nan), dict(reward=-math.inf),
               dict(observation=[math.nan] * OBS), dict(action=[math.inf] * ACT),
               dict(next_observation=[-math.inf] * OBS), dict(step=NODE_MAX_STEPS), dict(step=2**32 - 1)]
        bad += [dict(observation=huge), dict(next_observation=huge), dict(action=huge)] * 10
        rejected = 0
        for step in range(50):
            for fields in bad if step == 25 else bad[:3]:
                msg = transition(77, step)
                for name, value in fields.items():
                    setattr(msg, name, value)
                feeder.publish(0, msg)
                rejected += 1
            feeder.publish(0, transition(77, step, last=step == 49))
        good = cdr(transition(78, 0))
        # (not the empty payload: Fast DDS never delivers one, and holds that writer's later messages behind it)
        garbage = [good[:n] for n in range(1, len(good), 7)] + [b"\x00\x07\x00\x00" + good[4:], b"\xff" * 64]
        for data in garbage:
            feeder.publish(1, data)
        rejected += len(garbage)
        odd = transition(79, 0)  # accepted: stamps and frame ids do not matter to learning
        odd.header.stamp.sec, odd.header.stamp.nanosec, odd.header.frame_id = -2**31, 2**32 - 1, "x" * 1_000_000
        feeder.publish(1, odd)
        feeder.publish(1, transition(2**64 - 1, 0, terminated=True, truncated=True))
        for i in range(500):  # ids that never close, and steps that jump
            feeder.publish(2, transition(10**6 + i, 0))
            feeder.publish(2, transition(10**6 + i, 7))
        for step in range(50):  # good data after it all
            feeder.publish(3, transition(80, step, last=step == 49))
        assert feeder.wait(feeder.accounted, 120), (feeder.published, feeder.progress[-1])
        assert proc.poll() is None
        assert feeder.wait(lambda: feeder.diagnosed("transitions_stored") == feeder.progress[-1].stored_transitions
                           and feeder.diagnosed("open_episodes") == 0, 30)  # the age cap closed the rest
        assert max(int(d["open_episodes"]) for d in feeder.diagnostics) <= max_open
        assert feeder.diagnosed("transitions_rejected") == rejected
        growth = rss_mb(proc.pid) - rss_before
        assert growth < 300, f"resident memory grew {growth:.0f} MB"
        kinds = [f"rejected ({kind})" for kind in ("undecodable", "wrong size", "NaN/inf", "step out of range")]
        assert feeder.wait(lambda: all(k in (tmp_path / "learner.log").read_text() for k in kinds), 10)
    finally:
        assert stop(proc) == 0
    stored = bag_steps(tmp_path / "run" / "online")
    assert stored[77] == list(range(50)) and stored[80] == list(range(50))  # whole, rejected ones never in
    assert stored[79] == [0] and stored[2**64 - 1] == [0]
    assert all(got == list(range(len(got))) for got in stored.values())
    last = feeder.progress[-1]
    assert sum(len(s) for s in stored.values()) == last.stored_transitions
    assert feeder.published - last.stored_transitions == last.lost_transitions
    print(f"\nmalformed: {rejected} rejected, {last.stored_transitions} stored, resident memory +{growth:.0f} MB")
