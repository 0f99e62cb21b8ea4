"""Transition bags in both storage formats, raw recordings, bad input, and a writer killed mid-run."""
from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from rosbags.rosbag2 import CompressionFormat, CompressionMode, Reader, StoragePlugin, Writer
from rosbags.typesys import Stores, get_types_from_msg, get_typestore

from tdmpc_ros.config import load_config
from tdmpc_ros.data.bags import read_episodes, write_transition_bag
from tdmpc_ros.data.episode import Episode
from tdmpc_ros.data.load_report import LoadReport
from tdmpc_ros.data.online_bags import OnlineBagWriter
from tdmpc_ros.data.transitions import BagEpisodeAssembler, bag_message, episode_messages
from tdmpc_ros.data.typestore import TRANSITION, typestore
from tdmpc_ros.kinematics import ArmKinematics
from tdmpc_ros.tasks.reach import ReachTask

pytestmark = pytest.mark.unit

CFG = load_config()
OBS, ACT = CFG.model.obs_dim, CFG.model.action_dim


def make_episodes(seed: int, lengths, obs_dim: int = OBS) -> list[Episode]:
    rng = np.random.default_rng(seed)
    return [Episode(100 + i, rng.normal(size=(n + 1, obs_dim)), rng.uniform(-1, 1, (n, ACT)), rng.normal(size=n),
                    terminated=i % 2 == 0, truncated=i % 2 == 1) for i, n in enumerate(lengths)]


def assert_same(loaded: list[Episode], expected: list[Episode]) -> None:
    assert len(loaded) == len(expected)
    key = lambda e: (e.episode_id, float(e.observations[0, 0]))
    for got, want in zip(sorted(loaded, key=key), sorted(expected, key=key)):
        assert got.episode_id == want.episode_id
        assert np.array_equal(got.observations, want.observations)
        assert np.array_equal(got.actions, want.actions)
        assert np.array_equal(got.rewards, want.rewards)
        assert (got.terminated, got.truncated) == (want.terminated, want.truncated)


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_transition_bag_round_trip_is_exact(tmp_path, storage):
    episodes = make_episodes(0, [5, 9, 3, 12])
    episodes[1].stamps_ns = 1_000_000_000 + 7 * np.arange(9, dtype=np.int64)
    write_transition_bag(tmp_path / "bag", episodes, storage=storage)
    report = read_episodes([tmp_path], CFG)
    assert not report.skipped and not report.notes, report.summary()
    assert_same(report.episodes, episodes)
    by_id = {e.episode_id: e for e in report.episodes}
    assert np.array_equal(by_id[101].stamps_ns, episodes[1].stamps_ns)
    synthesised = np.concatenate([by_id[i].stamps_ns for i in (100, 102, 103)])
    assert (np.diff(synthesised) > 0).all()  # synthesised stamps increase across episodes
    assert "loaded 4 episodes (29 steps, 2 ended in success)" in report.summary()


def test_assembler_builds_live_episodes_and_reports_bad_ones():
    good, bad = make_episodes(1, [4, 4])
    assembler = BagEpisodeAssembler(CFG, source="live")
    messages = list(episode_messages(good, np.arange(1, 5)))
    bad_messages = list(episode_messages(bad, np.arange(1, 5)))
    del bad_messages[2]  # a lost message
    completed = []
    for msg in messages[:2] + bad_messages + messages[2:]:
        completed += assembler.add(msg)
    assert_same(completed, [good])
    assert assembler.problems() == ["live: episode 101 skipped: gap in step indices: step 1 is followed by step 3"]
    assert assembler.problems() == []  # drained


def test_rclpy_transitions_are_written_byte_identical_to_ros2_serialisation(tmp_path):
    from rclpy.serialization import serialize_message

    from tdmpc_ros.msg import Transition

    (episode,) = make_episodes(10, [3])
    msgs = []
    for t in range(3):
        msg = Transition(episode_id=episode.episode_id, step=t, observation=episode.observations[t].tolist(),
                         action=episode.actions[t].tolist(), reward=float(episode.rewards[t]),
                         next_observation=episode.observations[t + 1].tolist(), terminated=t == 2)
        msg.header.stamp.sec, msg.header.stamp.nanosec, msg.header.frame_id = 5, 1000 * t, "arm"
        msgs.append(msg)
    with OnlineBagWriter(tmp_path) as writer:
        for msg in msgs:
            writer.write(msg)
    store = typestore()
    ours = bytes(store.serialize_cdr(bag_message(msgs[1]), TRANSITION))
    assert ours == serialize_message(msgs[1])  # the bag holds what a ROS 2 recorder would have recorded
    report = read_episodes(tmp_path, CFG)
    assert_same(report.episodes, [episode])
    assert list(report.episodes[0].stamps_ns) == [5_000_000_000, 5_000_001_000, 5_000_002_000]


def write_messages(path, topic: str, msgtype: str, messages, store=None, storage="mcap") -> None:
    store = store or typestore()
    with Writer(path, version=9, storage_plugin=StoragePlugin[storage.upper()]) as writer:
        conn = writer.add_connection(topic, msgtype, typestore=store)
        for stamp, msg in messages:
            writer.write(conn, stamp, store.serialize_cdr(msg, msgtype))


def test_bad_inputs_each_give_one_message_and_good_data_still_loads(tmp_path):
    root = tmp_path / "demos"
    good = make_episodes(2, [6, 6])
    write_transition_bag(root / "good", good)
    write_transition_bag(root / "small_obs", make_episodes(3, [5], obs_dim=OBS - 3))
    nan = make_episodes(4, [5, 5])
    nan[0].observations[3, 2] = np.nan
    write_transition_bag(root / "nan", nan, storage="sqlite3")
    gap = make_episodes(5, [6, 4])
    messages = [m for ep in gap for m in episode_messages(ep, np.arange(1, len(ep) + 1))]
    del messages[3]
    write_messages(root / "gap", "/transitions", TRANSITION, [(i + 1, m) for i, m in enumerate(messages)])
    other = get_typestore(Stores.EMPTY)  # a store that knows a message type this package does not
    other.register(get_types_from_msg("float64 x", "other_pkg/msg/Thing"))
    write_messages(root / "unknown_type", "/transitions", "other_pkg/msg/Thing",
                   [(1, other.types["other_pkg/msg/Thing"](x=1.0))], store=other)
    chatter = typestore().types["std_msgs/msg/String"]
    write_messages(root / "no_topic", "/chatter", "std_msgs/msg/String", [(1, chatter(data="hi"))])
    write_messages(root / "empty", "/transitions", TRANSITION, [])
    (root / "zero_bytes").mkdir()
    (root / "zero_bytes" / "zero_bytes.mcap").write_bytes(b"")

    report = read_episodes([root, tmp_path / "missing"], CFG)
    assert_same(report.episodes, good + [gap[1], nan[1]])
    lines = [str(item) for item in report.skipped]
    text = report.summary()
    expected = {
        "small_obs": f"[/transitions]: episode 100: observation has {OBS - 3} values but the config's "
                     f"model.obs_dim is {OBS}",
        "nan": "[/transitions]: episode 100: NaN/inf in observation at step 3",
        "gap": "[/transitions]: episode 100: gap in step indices: step 2 is followed by step 4",
        "unknown_type": "[/transitions]: unknown message type other_pkg/msg/Thing",
        "no_topic": f"no {TRANSITION} topic, and not a raw recording",
        "empty": "[/transitions]: no messages on this topic",
        "zero_bytes": "cannot open:",
        "missing": "does not exist",
    }
    for name, message in expected.items():
        matching = [line for line in lines if f"/{name}" in line.split(":")[0] and message in line]
        assert len(matching) == 1, (name, lines)
        assert matching[0] in text
    assert len(lines) == len(expected), lines


def cut_short(episodes: list[Episode], steps: int) -> list[Episode]:
    """The episodes a reader keeps of a bag holding only their first `steps` messages, in order."""
    kept = []
    for ep in episodes:
        k, steps = min(len(ep), steps), steps - min(len(ep), steps)
        if k == len(ep):
            kept.append(ep)
        elif k:
            kept.append(Episode(ep.episode_id, ep.observations[:k + 1], ep.actions[:k], ep.rewards[:k],
                                terminated=False, truncated=True))
    return kept


def report_lines(report) -> list[str]:
    return [str(line) for line in report.skipped + report.notes]


@pytest.mark.unit
@pytest.mark.timeout(60)
def test_fifos_devices_sockets_and_directories_are_reported_never_opened(tmp_path):
    root = tmp_path / "demos"
    good = make_episodes(11, [4, 5])
    write_transition_bag(root / "good", good[:1])
    os.mkfifo(root / "x.mcap")  # opening it for reading would block until a writer comes
    os.symlink(root / "x.mcap", root / "link_to_fifo.db3")
    os.symlink("/dev/zero", root / "zero.db3")
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(root / "s.mcap"))
    write_transition_bag(root / "fifo_meta", good[1:])  # metadata.yaml a FIFO: its storage still loads
    os.unlink(root / "fifo_meta" / "metadata.yaml")
    os.mkfifo(root / "fifo_meta" / "metadata.yaml")
    write_transition_bag(root / "fifo_storage", good[:1])  # the storage file metadata.yaml names is a FIFO
    os.unlink(root / "fifo_storage" / "fifo_storage.mcap")
    os.mkfifo(root / "fifo_storage" / "fifo_storage.mcap")
    (root / "fifo_storage" / "extra.mcap").mkdir()
    try:
        report = read_episodes([root, root / "x.mcap"], CFG)
    finally:
        server.close()
    assert_same(report.episodes, good)
    expected = {"x.mcap": "FIFO", "link_to_fifo.db3": "FIFO", "zero.db3": "device", "s.mcap": "socket",
                "fifo_meta/metadata.yaml": "FIFO", "fifo_storage/fifo_storage.mcap": "FIFO",
                "fifo_storage/extra.mcap": "directory"}
    lines = [str(line) for line in report.skipped]
    assert sorted(lines) == sorted(f"{root / name}: not a regular file ({kind}): not opened"
                                   for name, kind in expected.items())


@pytest.mark.unit
def test_cut_mcap_keeps_every_whole_message_before_the_cut(tmp_path):
    episodes = make_episodes(12, [4, 6, 3, 5])
    bag = write_transition_bag(tmp_path / "bag", episodes)
    with Reader(bag) as reader:
        payloads = [bytes(data) for _, _, data in reader.messages()]
    data = (bag / "bag.mcap").read_bytes()
    ends = [data.index(payload) + len(payload) for payload in payloads]  # each message record's last byte + 1
    assert ends == sorted(ends) and len(ends) == 18
    cuts = {3, ends[0] - 1, ends[0], ends[3] - 1, ends[3], ends[9] + 7, ends[-1] - 1, ends[-1], ends[-1] + 30,
            len(data) - 40, len(data) - 1}
    for cut in sorted(cuts):
        path = tmp_path / f"cut_{cut}.mcap"
        path.write_bytes(data[:cut])
        report = read_episodes(path, CFG)
        whole = sum(end <= cut for end in ends)
        assert_same(report.episodes, cut_short(episodes, whole))
        lines = report_lines(report)
        assert not any("empty bag" in line for line in lines), lines
        if cut < 8:
            assert lines == [f"{path}: cannot open: truncated at byte {cut}, inside the MCAP magic"]
        elif whole < len(ends):
            assert any(line.startswith(f"{path}: truncated after {whole} messages at byte {cut} (")
                       for line in map(str, report.skipped)), lines
        else:  # cut after the last message: all kept; the report still says the file is cut or unfinished
            assert any(f"truncated after {whole} messages at byte {cut}" in line or
                       f"summary truncated at byte {cut}" in line or
                       f"no MCAP summary or footer (its writer did not finish): read to its end, {whole} messages"
                       in line for line in lines), lines
    shutil.copyfile(tmp_path / f"cut_{ends[3]}.mcap", bag / "bag.mcap")  # the same inside its bag directory
    report = read_episodes(bag, CFG)
    assert_same(report.episodes, cut_short(episodes, 4))
    assert any(f"truncated after 4 messages at byte {ends[3]}" in line for line in report_lines(report))


@pytest.mark.unit
def test_corrupt_mcap_chunk_is_skipped_and_the_chunks_after_it_still_read(tmp_path):
    episodes = make_episodes(6, [5, 5, 5, 5])
    with OnlineBagWriter(tmp_path / "online", flush_every_s=0.0) as writer:  # one chunk per message
        for ep in episodes:
            for msg in episode_messages(ep, np.arange(1, len(ep) + 1) + 100 * ep.episode_id):
                writer.write(msg)
    bag = writer.paths[0]
    with Reader(bag) as reader:
        payload = [bytes(data) for _, _, data in reader.messages()][7]  # episode 101, step 2
    data = bytearray((bag / f"{bag.name}.mcap").read_bytes())
    chunk = data.index(payload) - 31 - 49  # message record head, chunk record head (no compression)
    data[chunk + 9 + 24:chunk + 9 + 28] = (0xDEADBEEF).to_bytes(4, "little")  # its uncompressed CRC-32
    (tmp_path / "corrupt.mcap").write_bytes(data)
    report = read_episodes(tmp_path / "corrupt.mcap", CFG)
    assert_same(report.episodes, [episodes[0]] + episodes[2:])
    assert [str(line) for line in report.skipped] == [
        f"{tmp_path / 'corrupt.mcap'}: corrupt chunk at byte {chunk} (ValueError: checksum or size mismatch): skipped",
        f"{tmp_path / 'corrupt.mcap'} [/transitions]: the MCAP summary claims 20 messages on this topic, 19 were read",
        f"{tmp_path / 'corrupt.mcap'} [/transitions]: episode 101: gap in step indices: step 1 is followed by step 3"]


@pytest.mark.unit
def test_cut_zstd_mcap_keeps_the_messages_of_its_whole_compressed_blocks(tmp_path):
    episodes = make_episodes(17, [20] * 60)  # ~300 kB in one chunk: several zstd blocks
    writer = Writer(tmp_path / "bag", version=9, storage_plugin=StoragePlugin.MCAP)
    writer.set_compression(CompressionMode.STORAGE, CompressionFormat.ZSTD)
    with writer:
        conn = writer.add_connection("/transitions", TRANSITION, typestore=typestore())
        for ep in episodes:
            for t, msg in enumerate(episode_messages(ep, np.arange(1, 21) + 100 * ep.episode_id)):
                writer.write(conn, 100 * ep.episode_id + t, typestore().serialize_cdr(msg, TRANSITION))
    data = (tmp_path / "bag" / "bag.mcap").read_bytes()
    path = tmp_path / "cut.mcap"
    path.write_bytes(data[:len(data) * 2 // 3])
    report = read_episodes(path, CFG)
    steps = sum(len(e) for e in report.episodes)
    assert 0 < steps < 1200
    assert_same(report.episodes, cut_short(episodes, steps))
    assert str(report.skipped[0]).startswith(f"{path}: truncated after {steps} messages at byte {len(data) * 2 // 3}")


@pytest.mark.unit
def test_cut_sqlite_keeps_the_rows_of_its_whole_pages(tmp_path):
    episodes = make_episodes(13, [5] * 30)
    bag = write_transition_bag(tmp_path / "bag", episodes, storage="sqlite3")
    data = (bag / "bag.db3").read_bytes()
    kept = []
    for fraction in (0.3, 0.5, 0.7, 0.9, 0.99):
        cut = int(len(data) * fraction)
        path = tmp_path / f"cut_{cut}.db3"
        path.write_bytes(data[:cut])
        report = read_episodes(path, CFG)
        steps = sum(len(e) for e in report.episodes)
        assert_same(report.episodes, cut_short(episodes, steps))  # the first rows in order: no garbage rows
        assert any(f"{path}: corrupt or truncated after {steps} messages" in line for line in report_lines(report))
        kept.append(steps)
    assert kept == sorted(kept) and kept[1] > 0 and kept[-1] >= 0.9 * 150, kept
    shutil.copyfile(path, bag / "bag.db3")  # the same inside its bag directory, whose metadata claims more
    report = read_episodes(bag, CFG)
    assert_same(report.episodes, cut_short(episodes, kept[-1]))
    assert f"{bag / 'bag.db3'}: cut at byte {cut}, inside a page: read without that page's " in report.summary()


@pytest.mark.unit
def test_torn_sqlite_write_ahead_log_keeps_its_whole_commits(tmp_path):
    episodes = make_episodes(14, [4, 5, 3, 6])
    bag = write_transition_bag(tmp_path / "bag", episodes[:1], storage="sqlite3")
    store, db_path = typestore(), bag / "bag.db3"
    wal_path = Path(f"{db_path}-wal")
    db = sqlite3.connect(db_path)
    db.execute("PRAGMA journal_mode=WAL")  # as ROS 2's "resilient" sqlite3 preset records
    db.execute("PRAGMA wal_autocheckpoint=0")
    (topic_id,) = db.execute("SELECT id FROM topics").fetchone()
    commit_ends = []
    for ep in episodes[1:]:
        with db:  # one commit per episode
            stamps = np.arange(1, len(ep) + 1) + 1000 * ep.episode_id
            db.executemany("INSERT INTO messages (topic_id, timestamp, data) VALUES (?, ?, ?)",
                           [(topic_id, int(t), bytes(store.serialize_cdr(m, TRANSITION)))
                            for t, m in zip(stamps, episode_messages(ep, stamps))])
        commit_ends.append(wal_path.stat().st_size)
    crashed = tmp_path / "crashed"  # the recorder's files at a crash: no metadata.yaml, the log not checkpointed
    crashed.mkdir()
    shutil.copyfile(db_path, crashed / "bag.db3")
    wal = wal_path.read_bytes()
    db.close()
    for cut in (commit_ends[0] - 1, commit_ends[0], commit_ends[1] + 500, len(wal)):
        (crashed / "bag.db3-wal").write_bytes(wal[:cut])
        report = read_episodes(crashed / "bag.db3", CFG)
        assert_same(report.episodes, episodes[:1 + sum(end <= cut for end in commit_ends)])
        assert not report.skipped, report.summary()
        assert any("bag.db3-wal settled by SQLite on a copy" in line for line in report_lines(report))
        assert (crashed / "bag.db3-wal").read_bytes() == wal[:cut]  # the user's files are left as they were


class CountingStr(str):
    """A topic name that counts how often the report compares or hashes it."""

    operations = 0

    def __eq__(self, other):
        CountingStr.operations += 1
        return str.__eq__(self, other)

    def __hash__(self):
        CountingStr.operations += 1
        return str.__hash__(self)


@pytest.mark.unit
def test_report_costs_grow_linearly_with_the_bad_episodes():
    def operations(n: int) -> int:
        CountingStr.operations = 0
        report = LoadReport()
        for i in range(n):  # distinct reasons (letters, not numbers): one report line each; a fresh topic
            # object each time, as from a reader, so no comparison is skipped by identity
            report.skip("/bags/a.mcap", CountingStr("/transitions"),
                        f"bad in way {''.join(chr(97 + int(d)) for d in str(i))}", f"episode {i}")
        assert len(report.skipped) == n
        return CountingStr.operations

    counts = [operations(n) for n in (2_000, 4_000, 8_000)]  # a search per added line: ~n²/2 comparisons
    assert counts[2] <= 2 * counts[1] <= 4 * counts[0] <= 4 * 3 * 2_000, counts


@pytest.mark.unit
def test_twenty_thousand_bad_episodes_in_one_bag_make_one_report_line(tmp_path):
    (good,) = make_episodes(15, [3])
    messages = list(episode_messages(good, np.arange(1, 4)))
    bad = [dataclasses.replace(messages[1], episode_id=1000 + i, step=1 + i % 7, truncated=True)
           for i in range(20_000)]  # each starts past step 0: a gap, at a varying step
    write_messages(tmp_path / "bag", "/transitions", TRANSITION, list(enumerate(messages + bad, start=1)))
    report = read_episodes(tmp_path / "bag", CFG)
    assert_same(report.episodes, [good])
    (line,) = report.skipped
    assert len(line.items) == 20_000
    assert str(line) == (f"{tmp_path / 'bag'} [/transitions]: episode 1000, episode 1001, episode 1002, episode 1003, "
                         f"episode 1004 (+19995 more): gap in step indices: starts at step 1, not 0 "
                         f"(the first; the numbers differ for others)")
    assert len(report.summary().splitlines()) == 4


@pytest.mark.unit
@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_claimed_message_counts_are_checked(tmp_path, storage):
    episodes = make_episodes(16, [4, 5])
    bag = write_transition_bag(tmp_path / "bag", episodes, storage=storage)
    meta = bag / "metadata.yaml"
    assert meta.read_text().count("- message_count: 9\n") == 1
    meta.write_text(meta.read_text().replace("- message_count: 9\n", "- message_count: 12\n"))
    report = read_episodes(bag, CFG)
    assert_same(report.episodes, episodes)
    assert [str(line) for line in report.skipped] == [
        f"{bag} [/transitions]: metadata.yaml claims 12 messages on this topic, 9 were read"]
    if storage == "mcap":  # a loose MCAP file: its summary's statistics claim the counts
        data = bytearray((bag / "bag.mcap").read_bytes())
        shutil.copyfile(bag / "bag.mcap", tmp_path / "whole.mcap")
        statistics = data.rindex(b"\x0b" + (42 + 4 + 10).to_bytes(8, "little"))  # one channel's count
        data[statistics + 9 + 46 + 2:statistics + 9 + 56] = (7).to_bytes(8, "little")
        (tmp_path / "patched.mcap").write_bytes(data)
        assert not report_lines(read_episodes(tmp_path / "whole.mcap", CFG))
        report = read_episodes(tmp_path / "patched.mcap", CFG)
        assert_same(report.episodes, episodes)
        assert report_lines(report) == [
            f"{tmp_path / 'patched.mcap'} [/transitions]: the MCAP summary claims 7 messages on this topic, 9 were read"]


def test_online_writer_rolls_bags_at_episode_ends(tmp_path):
    episodes = make_episodes(9, [7, 3, 9, 4, 6])
    with OnlineBagWriter(tmp_path, max_bytes=2000, storage="sqlite3") as writer:
        for ep in episodes:
            for msg in episode_messages(ep, np.arange(1, len(ep) + 1) + 100 * ep.episode_id):
                writer.write(msg)
    assert writer.count == 29 and len(writer.paths) >= 3
    report = read_episodes(tmp_path, CFG)
    assert not report.skipped and not report.notes, report.summary()
    assert_same(report.episodes, episodes)
    with OnlineBagWriter(tmp_path) as writer:  # a restarted learner continues the numbering
        writer.write(next(episode_messages(episodes[0], np.arange(1, 8))))
    assert writer.paths[0].name == f"online_{len(report.loaded_from):04d}"


KILLED_WRITER = """
import sys, time, numpy as np
from tdmpc_ros.data.episode import Episode
from tdmpc_ros.data.online_bags import OnlineBagWriter
from tdmpc_ros.data.transitions import episode_messages
data = np.load(sys.argv[1])
writer = OnlineBagWriter(sys.argv[2], storage=sys.argv[3], flush_every_s=3600)
for i in range(4):
    ep = Episode(i, data[f"obs{i}"], data[f"act{i}"], data[f"rew{i}"], terminated=True)
    msgs = list(episode_messages(ep, np.arange(1, len(ep) + 1) + 1000 * i))
    for msg in msgs if i < 3 else msgs[:3]:
        writer.write(msg)
    if i == 2:
        writer.flush()
print("ready", flush=True)
time.sleep(120)
"""


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_sigkilled_online_writer_bag_reads_up_to_the_flushed_tail(tmp_path, storage):
    episodes = make_episodes(7, [4, 6, 5, 8])
    for ep in episodes:
        ep.terminated, ep.truncated = True, False
    np.savez(tmp_path / "eps.npz", **{f"{k}{i}": getattr(ep, name) for i, ep in enumerate(episodes)
                                       for k, name in (("obs", "observations"), ("act", "actions"),
                                                       ("rew", "rewards"))})
    proc = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(tmp_path / "eps.npz"),
                             str(tmp_path / "online"), storage], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert not list((tmp_path / "online").glob("*/metadata.yaml"))  # it never closed its bag
    report = read_episodes(tmp_path / "online", CFG)
    assert not report.skipped, report.summary()
    for ep, episode_id in zip(episodes, range(4)):
        ep.episode_id = episode_id
    assert_same(report.episodes, episodes[:3])  # everything up to the flush; the unflushed tail is lost


def synthetic_recording(kin: ArmKinematics, command_type: str):
    """Joint states at 100 Hz (names shuffled, plus a gripper), commands near 20 Hz, two goals."""
    names = list(CFG.task.joint_names)
    order = [6, 2, 0, 5, 1, 3, 4]
    home = np.array(CFG.sim.home)
    q_of = lambda t: home + 0.2 * np.sin(0.8 * min(t, 2.5) + np.arange(7)) * min(t, 2.5)  # still after 2.5 s
    qd_of = lambda t: np.cos(np.arange(7) + t)
    states = [(int(k * 10e6), q_of(k * 0.01), qd_of(k * 0.01)) for k in range(400)]
    commands = [(int(1e9 + j * 50e6 + (7e6 if j % 2 else 0)), q_of(1.0 + j * 0.05) + 0.01 * j)
                for j in range(50)]
    goals = [(int(0.5e9), np.array([0.45, -0.2, 0.5])), (int(2.2e9), kin.fk(q_of(2.5)))]
    store = typestore()
    T = store.types
    stamp = lambda ns: T["builtin_interfaces/msg/Time"](sec=ns // 10**9, nanosec=ns % 10**9)
    header = lambda ns: T["std_msgs/msg/Header"](stamp=stamp(ns), frame_id="base")
    joint_msgs = [(t, T["sensor_msgs/msg/JointState"](
        header=header(t), name=[names[i] for i in order] + ["gripper"], position=np.append(q[order], 0.02),
        velocity=np.append(qd[order], 0.0), effort=np.zeros(0))) for t, q, qd in states]
    goal_msgs = [(t, T["geometry_msgs/msg/PointStamped"](header=header(t), point=T["geometry_msgs/msg/Point"](
        x=g[0], y=g[1], z=g[2]))) for t, g in goals]
    if command_type == "float64_multi_array":
        topic, msgtype = "/forward_position_controller/commands", "std_msgs/msg/Float64MultiArray"
        layout = T["std_msgs/msg/MultiArrayLayout"](dim=[], data_offset=0)
        command_msgs = [(t, T[msgtype](layout=layout, data=c)) for t, c in commands]
    elif command_type == "joint_trajectory":
        topic, msgtype = "/joint_trajectory_controller/joint_trajectory", "trajectory_msgs/msg/JointTrajectory"
        point = lambda c: T["trajectory_msgs/msg/JointTrajectoryPoint"](
            positions=c[order], velocities=np.zeros(0), accelerations=np.zeros(0), effort=np.zeros(0),
            time_from_start=T["builtin_interfaces/msg/Duration"](sec=0, nanosec=50_000_000))
        command_msgs = [(t, T[msgtype](header=header(t), joint_names=[names[i] for i in order], points=[point(c)]))
                        for t, c in commands]
    else:
        topic, msgtype = "/joint_command", "sensor_msgs/msg/JointState"
        command_msgs = [(t, T[msgtype](header=header(t), name=[names[i] for i in order], position=c[order],
                                       velocity=np.zeros(0), effort=np.zeros(0))) for t, c in commands]
    return states, commands, goals, [("/joint_states", "sensor_msgs/msg/JointState", joint_msgs),
                                     (topic, msgtype, command_msgs),
                                     ("/goal", "geometry_msgs/msg/PointStamped", goal_msgs)]


def expected_raw_episodes(kin, states, commands, goals) -> list[Episode]:
    """What the controller would have sent, worked out apart from data/raw.py: a step per command, closed by the
    state at the next command (a goal's last one by the newest state before the next goal, kept if that ends the
    episode); an ended episode is followed at the same command by the next one on the same goal."""
    task, scale = ReachTask(CFG.task), CFG.task.action_scale
    state_at = lambda t: states[min(int(t // 10_000_000), len(states) - 1)]  # states every 10 ms from 0
    episodes = []

    def finish(obs, actions, rewards, terminated):
        episodes.append(Episode(len(episodes), np.stack(obs), np.stack(actions), rewards, terminated=terminated,
                                truncated=not terminated))

    for index, (start, goal) in enumerate(goals):
        end = goals[index + 1][0] if index + 1 < len(goals) else np.inf
        cmds = [(t, c) for t, c in commands if start <= t < end]
        obs, actions, rewards, streak, previous = [], [], [], 0, None

        def close(o, ee):
            """The step's outcome observed in o: whether it ends the episode (terminated, ended)."""
            nonlocal streak
            distance = np.linalg.norm(goal - ee)
            obs.append(o)
            rewards.append(-distance)
            streak = streak + 1 if distance <= CFG.task.success_radius else 0
            terminated = streak >= CFG.task.success_hold_steps
            return terminated, terminated or len(actions) >= CFG.task.max_episode_steps

        for t, c in cmds:
            _, q, qd = state_at(t)
            ee = kin.fk(q)
            o = task.observation(q, qd, ee, goal)
            if not actions:
                obs = [o]
            elif (outcome := close(o, ee))[1]:
                finish(obs, actions, rewards, outcome[0])
                obs, actions, rewards, streak, previous = [o], [], [], 0, None
            if previous is None:
                previous = np.clip(q, kin.safe_lower, kin.safe_upper)
            actions.append(np.clip((c - previous) / scale, -1, 1))
            previous = c
        _, q, qd = state_at(min(end, 1e18) - 1)  # the newest state before the next goal
        outcome = close(task.observation(q, qd, kin.fk(q), goal), kin.fk(q)) if actions else (False, False)
        if outcome[1]:
            finish(obs, actions, rewards, outcome[0])
        elif len(actions) > 1:  # the last command's outcome was not seen: cut short before it
            finish(obs[:len(actions)], actions[:-1], rewards[:len(actions) - 1], False)
    return episodes


@pytest.mark.parametrize("command_type", ["float64_multi_array", "joint_trajectory", "joint_state"])
def test_raw_recording_rebuilds_the_controllers_transitions_exactly(tmp_path, command_type):
    kin = ArmKinematics(CFG.task)
    try:
        states, commands, goals, topics = synthetic_recording(kin, command_type)
        write_recording(tmp_path / "raw", topics)
        report = read_episodes(tmp_path / "raw", CFG, kinematics=kin)
        expected = expected_raw_episodes(kin, states, commands, goals)
    finally:
        kin.close()
    # the second goal is reached in 4 steps; the arm stays there, so each next episode on it succeeds in 3
    assert [(e.terminated, len(e)) for e in expected] == [(False, 23), (True, 4)] + [(True, 3)] * 7
    assert not report.skipped, report.summary()
    assert_same(report.episodes, expected)
    assert np.array_equal(report.episodes[0].stamps_ns, [t for t, _ in commands[:23]])


def write_recording(path, topics) -> None:
    store = typestore()
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        conns = {topic: writer.add_connection(topic, msgtype, typestore=store) for topic, msgtype, _ in topics}
        for t, topic, msgtype, msg in sorted((t, tp, mt, m) for tp, mt, msgs in topics for t, m in msgs):
            writer.write(conns[topic], t, store.serialize_cdr(msg, msgtype))


def test_raw_recording_problems_are_reported(tmp_path):
    kin = ArmKinematics(CFG.task)
    try:
        _, _, _, topics = synthetic_recording(kin, "float64_multi_array")
        write_recording(tmp_path / "no_goal", topics[:2])
        topics[1][2][5][1].data = np.full(7, np.nan)  # one command of the first episode
        write_recording(tmp_path / "nan_command", topics)
        report = read_episodes(tmp_path, CFG, kinematics=kin)
    finally:
        kin.close()
    lines = [str(item) for item in report.skipped]
    assert len(lines) == 2, lines
    assert "/no_goal: no tdmpc_ros/msg/Transition topic, and not a raw recording: missing /goal" in lines[1]
    assert lines[0].endswith("/nan_command [/forward_position_controller/commands]: 1 commands skipped: "
                             "command holds NaN/inf")
    assert [len(e) for e in report.episodes] == [22, 4] + [3] * 7  # the bad command is left out, the rest loads


def test_crashed_bag_copy_without_metadata_reads_and_folder_of_many_bags(tmp_path):
    episodes = make_episodes(8, [3, 4, 5])
    for i, ep in enumerate(episodes):
        write_transition_bag(tmp_path / "many" / f"sub{i % 2}" / f"bag{i}", [ep], storage=["mcap", "sqlite3"][i % 2])
    shutil.copytree(tmp_path / "many" / "sub0" / "bag0", tmp_path / "loose")
    (tmp_path / "loose" / "metadata.yaml").unlink()
    report = read_episodes([tmp_path / "many", tmp_path / "loose"], CFG)
    assert_same(report.episodes, [episodes[0], episodes[0], episodes[1], episodes[2]])
    assert len(report.loaded_from) == 4
