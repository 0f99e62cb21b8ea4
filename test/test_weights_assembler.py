"""Model weights in pieces (learning/weights.py): split, and the assembler a controller feeds from model_weights:
any order, repeats, timeouts, every inconsistent piece refused with a reason, bytes only once size and sha256
match; ModelLoader.request_bytes loads what it hands out."""
from __future__ import annotations

import array
import hashlib
import queue

import numpy as np
import pytest

from tdmpc_ros.config import load_config
from tdmpc_ros.control.models import ModelLoader
from tdmpc_ros.learning.agent import Agent
from tdmpc_ros.learning.checkpoint import save_checkpoint
from tdmpc_ros.learning.weights import MIN_CHUNK_BYTES, WeightsAssembler, split

pytestmark = pytest.mark.unit

MAX_BYTES = 1 << 20
TIMEOUT_S = 30.0
CHUNK = MIN_CHUNK_BYTES


def payload(seed: int = 0, size: int = 10 * CHUNK + 300) -> tuple[bytes, str]:
    data = np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8).tobytes()
    return data, hashlib.sha256(data).hexdigest()


def feed(assembler, chunks, now=0.0, data=None):
    """Add each chunk (its data replaced where `data` maps its index); the Added of each."""
    return [assembler.add(c.version, c.sha256, c.total_bytes, c.index, c.count,
                          (data or {}).get(c.index, c.data), now) for c in chunks]


def assembler(newest: int = 0) -> WeightsAssembler:
    return WeightsAssembler(MAX_BYTES, TIMEOUT_S, newest)


def test_split_gives_views_of_at_most_chunk_bytes_that_join_to_the_payload():
    data, sha = payload()
    chunks = split(data, 3, sha, CHUNK)
    assert [len(c.data) for c in chunks] == [CHUNK] * 10 + [300]
    assert {(c.version, c.sha256, c.total_bytes, c.count) for c in chunks} == {(3, sha, len(data), 11)}
    assert [c.index for c in chunks] == list(range(11)) and b"".join(c.data for c in chunks) == data
    assert len(split(data[:CHUNK], 1, sha, CHUNK)) == 1
    with pytest.raises(ValueError, match="below"):
        split(data, 1, sha, CHUNK - 1)
    with pytest.raises(ValueError, match="empty"):
        split(b"", 1, sha, CHUNK)


@pytest.mark.parametrize("order", ["in_order", "shuffled", "reversed"])
def test_a_model_is_complete_and_verified_in_any_order(order):
    data, sha = payload()
    chunks = split(data, 1, sha, CHUNK)
    if order == "shuffled":
        chunks = [chunks[i] for i in np.random.default_rng(1).permutation(len(chunks))]
    elif order == "reversed":
        chunks = chunks[::-1]
    a = assembler()
    added = feed(a, chunks)
    assert all(x.model is None and not x.refused and not x.dropped for x in added[:-1])
    assert a.in_flight is None and added[-1].model.version == 1 and added[-1].model.sha256 == sha
    assert bytes(added[-1].model.data) == data and a.newest == 1


def test_message_arrays_are_taken_as_they_come():
    """rclpy hands uint8[] over as array('B'): held without a copy until the model is complete."""
    data, sha = payload()
    a = assembler()
    chunks = split(data, 1, sha, CHUNK)
    added = feed(a, chunks, data={c.index: array.array("B", c.data) for c in chunks})
    assert bytes(added[-1].model.data) == data


def test_repeats_change_nothing_a_different_copy_is_refused_and_a_completed_version_is_not_taken_again():
    data, sha = payload()
    chunks = split(data, 2, sha, CHUNK)
    a = assembler()
    first = feed(a, chunks[:5]) + feed(a, chunks[:5])
    assert all(x.model is None and not x.refused for x in first) and a.in_flight == (2, 5, 11)
    changed = bytearray(chunks[0].data)
    changed[7] ^= 1
    assert feed(a, chunks[:1], data={0: changed})[0].refused == "piece 0 of model v2 differs from the copy already held"
    added = feed(a, chunks[5:])
    assert bytes(added[-1].model.data) == data
    again = feed(a, chunks[:1])[0]
    assert again.model is None and again.refused == "piece 0 of model v2: not newer than the newest model, v2"


def test_a_missing_piece_times_out_and_the_partial_model_is_dropped():
    data, sha = payload()
    chunks = split(data, 4, sha, CHUNK)
    a = assembler()
    feed(a, chunks[:3], now=100.0)
    feed(a, chunks[4:], now=110.0)  # the deadline runs from the first piece, not the latest
    assert a.in_flight == (4, 10, 11)
    assert a.expire(100.0 + TIMEOUT_S - 0.001) == "" and a.in_flight == (4, 10, 11)
    assert a.expire(100.0 + TIMEOUT_S) == f"model v4 dropped: 10 of 11 pieces ({len(data) - CHUNK} of {len(data)} " \
                                          "bytes) arrived within 30 s"
    assert a.in_flight is None and a.newest == 0
    # the missing piece alone now starts over, and cannot complete the model by itself
    late = feed(a, chunks[3:4], now=131.0)[0]
    assert late.model is None and not late.refused and a.in_flight == (4, 1, 11)


def test_a_piece_arriving_after_the_deadline_drops_the_partial_model_itself():
    data, sha = payload()
    chunks = split(data, 4, sha, CHUNK)
    a = assembler()
    feed(a, chunks[:-1], now=0.0)
    added = feed(a, chunks[-1:], now=TIMEOUT_S)[0]
    assert added.model is None and added.dropped == ("model v4 dropped: 10 of 11 pieces (10240 of 10540 bytes) "
                                                     "arrived within 30 s",)
    assert a.in_flight == (4, 1, 11)


def test_a_corrupted_byte_fails_the_sha256_and_nothing_is_handed_out():
    data, sha = payload()
    chunks = split(data, 5, sha, CHUNK)
    bad = bytearray(chunks[6].data)
    bad[100] ^= 0x10
    a = assembler()
    added = feed(a, chunks, data={6: bad})
    assert added[-1].model is None and len(added[-1].dropped) == 1
    assert added[-1].dropped[0].startswith(f"model v5 refused: sha256 mismatch (announced {sha}, the bytes have ")
    assert a.newest == 0 and a.in_flight is None


def test_a_truncated_model_fails_its_size_check():
    data, sha = payload()
    chunks = split(data, 5, sha, CHUNK)
    added = feed(a := assembler(), chunks, data={10: chunks[10].data[:-1]})
    assert added[-1].model is None
    assert added[-1].dropped == (f"model v5 refused: truncated, its pieces hold {len(data) - 1} of {len(data)} bytes",)
    assert a.newest == 0


def test_pieces_overflowing_the_declared_size_are_refused():
    data, sha = payload()
    chunks = split(data, 5, sha, CHUNK)
    a = assembler()
    added = feed(a, chunks[:10], data={0: data[:CHUNK + 301]})  # one piece too long: the others no longer fit
    assert added[9].refused == f"piece 9 of model v5: {CHUNK} bytes overflow the declared {len(data)} (9517 held)"
    assert a.in_flight == (5, 9, 11)


@pytest.mark.parametrize("field, value, reason", [
    ("total_bytes", MAX_BYTES + 1, f"declares {MAX_BYTES + 1} bytes, outside 1..{MAX_BYTES} "
                                   "(controller.max_checkpoint_bytes)"),
    ("total_bytes", 0, f"declares 0 bytes, outside 1..{MAX_BYTES}"),
    ("count", 0, "chunk_count 0 is outside 1..11 for 10540 bytes"),
    ("count", 12, "chunk_count 12 is outside 1..11 for 10540 bytes"),
    ("index", 11, "chunk_index out of range (chunk_count 11)"),
    ("sha256", "ab" * 31, "sha256 is not 64 lowercase hex digits"),
    ("sha256", "AB" * 32, "sha256 is not 64 lowercase hex digits"),
    ("data", b"", "holds 0 bytes, outside 1..10540 (the declared size)"),
])
def test_inconsistent_pieces_are_refused_with_a_reason_and_change_nothing(field, value, reason):
    data, sha = payload()
    chunks = split(data, 6, sha, CHUNK)
    a = assembler()
    feed(a, chunks[:2])
    c = chunks[2]
    fields = dict(version=c.version, sha256=c.sha256, total_bytes=c.total_bytes, index=c.index, count=c.count,
                  data=c.data)
    fields[field] = value
    added = a.add(fields["version"], fields["sha256"], fields["total_bytes"], fields["index"], fields["count"],
                  fields["data"], 0.0)
    assert added.refused.startswith(f"piece {fields['index']} of model v6: {reason}") and added.model is None
    assert a.in_flight == (6, 2, 11)
    assert bytes(feed(a, chunks[2:])[-1].model.data) == data  # the model still completes


def test_a_piece_disagreeing_with_the_first_of_its_version_is_refused():
    data, sha = payload()
    other, other_sha = payload(seed=1, size=len(data) + CHUNK)
    a = assembler()
    feed(a, split(data, 7, sha, CHUNK)[:1])
    for stranger in (split(data, 7, other_sha, CHUNK)[1], split(other, 7, sha, CHUNK)[1]):
        added = feed(a, [stranger])[0]
        assert "differ from its first piece's" in added.refused and a.in_flight == (7, 1, 11)


def test_a_declared_size_over_the_limit_is_refused_before_anything_is_held():
    data, sha = payload()
    a = WeightsAssembler(max_bytes=len(data) - 1, timeout_s=TIMEOUT_S)
    added = feed(a, split(data, 1, sha, CHUNK))
    assert all("outside 1..10539 (controller.max_checkpoint_bytes)" in x.refused for x in added)
    assert a.in_flight is None


def test_versions_out_of_order_newest_wins_and_older_ones_are_refused():
    (d2, s2), (d3, s3) = payload(2), payload(3)
    v2, v3 = split(d2, 2, s2, CHUNK), split(d3, 3, s3, CHUNK)
    a = assembler()
    feed(a, v2[:4])
    added = feed(a, v3[:1])[0]
    assert added.dropped == ("model v2 dropped for v3: 4 of 11 pieces (4096 of 10540 bytes) had arrived",)
    assert a.in_flight == (3, 1, 11)
    assert feed(a, v2[4:5])[0].refused == "piece 4 of model v2: older than v3, which is arriving"
    assert bytes(feed(a, v3[1:])[-1].model.data) == d3
    assert all("not newer than the newest model, v3" in x.refused for x in feed(a, v2 + v3[:1]))
    # a caller that already runs v9 (loaded from a file, say) says so
    assert "not newer than the newest model, v9" in feed(assembler(newest=9), v3[:1])[0].refused


def test_a_good_model_after_bad_ones_is_taken():
    data, sha = payload()
    a = assembler()
    corrupted = bytearray(data[:CHUNK])
    corrupted[0] ^= 1
    assert feed(a, split(data, 1, sha, CHUNK), data={0: corrupted})[-1].model is None
    assert feed(a, split(data, 2, sha, CHUNK)[:1], data={0: b""})[0].refused
    feed(a, split(data, 3, sha, CHUNK)[:5], now=0.0)
    assert a.expire(TIMEOUT_S)  # v3 timed out
    # the same version again, whole and correct, is taken after its corrupted copy; then a newer one
    assert bytes(feed(a, split(data, 1, sha, CHUNK), now=40.0)[-1].model.data) == data
    d4, s4 = payload(4)
    assert feed(a, split(d4, 4, s4, CHUNK), now=41.0)[-1].model.version == 4 and a.newest == 4


@pytest.fixture(scope="module")
def checkpoint_file(tmp_path_factory, one_torch_thread):
    cfg = load_config(overrides={"model": {"preset": "small"}, "agent": {"compile": False}})
    path = tmp_path_factory.mktemp("ckpt") / "ckpt.pt"
    return cfg, path, save_checkpoint(path, Agent(cfg))


def test_the_loader_takes_a_models_bytes_and_refuses_bad_ones(checkpoint_file):
    cfg, path, sha = checkpoint_file
    ready, errors = queue.Queue(), queue.Queue()
    loader = ModelLoader(cfg, lambda: cfg.model, lambda *args: ready.put(args), errors.put)
    try:
        data = bytearray(path.read_bytes())
        loader.request_bytes(data, sha, 7)
        planner, model, version, name = ready.get(timeout=60)
        assert planner is None and model.cfg == cfg.model and (version, name) == (7, "model_weights v7")
        data[-1] ^= 1
        loader.request_bytes(data, sha, 8)
        assert errors.get(timeout=60).startswith("rejected model v8: model_weights v8: checksum mismatch")
        loader.request(str(path), sha, 9)  # files still load as before
        assert ready.get(timeout=60)[2:] == (9, str(path))
    finally:
        loader.close()
