"""The controller's side of weights over DDS (#16): on another machine (the learner's folder hidden from it) and
started late, it still receives, verifies and swaps in the learner's newest model; damaged or stale pieces are
refused with a log line while the old model keeps running, and a good model after them is taken."""
from __future__ import annotations

import hashlib
import os

import pytest

from ros_helpers import next_items, spin_until, start_node, stop, untrained_checkpoint
from test_controller_node import FAST_PLANNER, FakeArm, controller  # noqa: F401  (fixture)
from test_learner_node import FAST
from tdmpc_ros import topics
from tdmpc_ros.config import Config
from tdmpc_ros.learning.weights import split
from tdmpc_ros.msg import ModelWeights
from tdmpc_ros.nodes import qos

pytestmark = pytest.mark.ros

CFG = Config()
DDS = {"learner.weights_transport": "dds"}


@pytest.mark.skipif(os.geteuid() != 0, reason="a mount namespace needs root (CI runs as root)")
def test_a_late_controller_that_cannot_see_the_learners_files_gets_the_newest_model(tmp_path, rclpy_context):
    learner_home = tmp_path / "learner_machine"
    learner_log, controller_log = tmp_path / "learner.log", tmp_path / "controller.log"
    learner = start_node("learner_node", {**FAST, **DDS, "learner.run_dir": str(learner_home / "run"),
                                          "learner.demos": [str(learner_home / "no_demos")]}, learner_log)
    arm = FakeArm(rclpy_context)
    controller = None
    try:
        # No demos: the learner hands over its untrained v1 at once, and with no transitions publishes nothing more.
        assert spin_until(arm.node, lambda: "published model v1" in learner_log.read_text(), 120), \
            learner_log.read_text()
        controller = start_node("controller_node", {**FAST_PLANNER, **DDS}, controller_log, hidden=learner_home)
        assert spin_until(arm.node, lambda: (s := arm.last_status()) is not None and s.model_version == 1
                          and s.mode == "planning", 120), controller_log.read_text()[-3000:]
        text = controller_log.read_text()
        assert "model v1 received" in text and "over model_weights" in text and "error" not in text.lower()
        assert learner_log.read_text().count("published model v") == 1  # from DDS's history: no new publish
    finally:
        if controller is not None:
            assert stop(controller) == 0
        assert stop(learner) == 0


def pieces(data: bytes, version: int, sha256: str | None = None, total: int | None = None) -> list[ModelWeights]:
    return [ModelWeights(version=c.version, sha256=c.sha256, total_bytes=total or c.total_bytes,
                         chunk_index=c.index, chunk_count=c.count, data=bytes(c.data))
            for c in split(data, version, sha256 or hashlib.sha256(data).hexdigest(), 1 << 20)]


def test_damaged_or_stale_weights_are_refused_and_a_good_model_after_them_is_taken(controller, tmp_path):
    arm, log = controller(**DDS)  # running v1 from controller.model_path
    weights_pub = arm.node.create_publisher(ModelWeights, topics.MODEL_WEIGHTS, qos.model_weights(64))
    untrained_checkpoint(tmp_path / "v3.pt", seed=3)
    good = (tmp_path / "v3.pt").read_bytes()
    flipped = bytearray(good)
    flipped[len(good) // 2] ^= 0x10
    bad = {
        "corrupted": pieces(bytes(flipped), 2, sha256=hashlib.sha256(good).hexdigest()),
        "truncated": pieces(good[:-1000], 2, sha256=hashlib.sha256(good).hexdigest(), total=len(good)),
        "oversized": [ModelWeights(version=2, sha256="0" * 64, total_bytes=CFG.controller.max_checkpoint_bytes + 1,
                                   chunk_index=0, chunk_count=2, data=b"x" * 2048)],
    }
    assert spin_until(arm.node, lambda: weights_pub.get_subscription_count() > 0, 30)
    for messages in bad.values():
        for msg in messages:
            weights_pub.publish(msg)
    refusals = ["model v2 refused: sha256 mismatch", "model v2 refused: truncated",
                f"rejected model v2 piece 0/2: piece 0 of model v2: declares {CFG.controller.max_checkpoint_bytes + 1}"]
    assert spin_until(arm.node, lambda: all(r in log.read_text() for r in refusals), 30), log.read_text()[-3000:]
    next_items(arm.node, arm.status, 1, timeout=10)  # a status from after the damaged ones were handled
    assert arm.last_status().model_version == 1 and arm.last_status().mode == "planning"  # the old model runs

    for msg in pieces(good, 3):
        weights_pub.publish(msg)
    assert spin_until(arm.node, lambda: arm.last_status().model_version == 3, 60), log.read_text()[-3000:]
    for msg in pieces(good, 2):  # a good model, but older than the one running: out of order
        weights_pub.publish(msg)
    assert spin_until(arm.node, lambda: "not newer than the newest model, v3" in log.read_text(), 30)
    next_items(arm.node, arm.status, 1, timeout=10)
    assert arm.last_status().model_version == 3
