"""Model weights over DDS (#16): a learner node in its own process sends each checkpoint's bytes on model_weights;
a subscriber puts them back together (WeightsAssembler) into exactly the learner's file, and one that starts
after the publish still gets the newest complete model from DDS's history, without a new publish."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from ros_helpers import spin_until, start_node, stop
from test_learner_node import FAST, Peer
from tdmpc_ros import topics
from tdmpc_ros.config import Config
from tdmpc_ros.learning.checkpoint import checkpoint_from_bytes, load_checkpoint
from tdmpc_ros.learning.weights import WeightsAssembler
from tdmpc_ros.msg import ModelUpdate, ModelWeights
from tdmpc_ros.nodes import qos

pytestmark = pytest.mark.ros

CFG = Config()
CHUNK_BYTES = 256 * 1024  # the small preset's checkpoint (about 4.9 MB) in some 19 pieces
READER_DEPTH = 64


class Receiver:
    """Plays a controller on another machine: only DDS, model_weights reassembled and verified."""

    def __init__(self, context, name: str):
        import rclpy

        self.node = rclpy.create_node(name, context=context)
        self.assembler = WeightsAssembler(CFG.controller.max_checkpoint_bytes, CFG.controller.weights_timeout_s)
        self.models, self.problems, self.counts = [], [], set()
        self.node.create_subscription(ModelWeights, topics.MODEL_WEIGHTS, self.on_piece,
                                      qos.model_weights(READER_DEPTH))
        self.updates: list[ModelUpdate] = []
        self.node.create_subscription(ModelUpdate, topics.MODEL_UPDATES, self.updates.append, qos.LATCHED)

    def on_piece(self, msg: ModelWeights) -> None:
        self.counts.add(msg.chunk_count)
        added = self.assembler.add(msg.version, msg.sha256, msg.total_bytes, msg.chunk_index, msg.chunk_count,
                                   msg.data, time.monotonic())
        self.problems += [added.refused] * bool(added.refused) + list(added.dropped)
        if added.model:
            self.models.append(added.model)


def start_learner(tmp_path: Path, transport: str):
    """No demos: the learner hands over its untrained model at once, then waits for transitions (none come)."""
    return start_node("learner_node", {**FAST, "learner.run_dir": str(tmp_path / "run"),
                                       "learner.demos": ["no_demos"], "learner.weights_transport": transport,
                                       "learner.weights_chunk_bytes": CHUNK_BYTES},
                      tmp_path / "learner.log", env={"ROS_HOME": str(tmp_path)})


def test_the_learners_checkpoints_arrive_whole_and_a_late_joiner_gets_the_newest(tmp_path, rclpy_context):
    log = tmp_path / "learner.log"
    proc = start_learner(tmp_path, "dds")
    first = Receiver(rclpy_context, "first_controller")
    try:
        assert spin_until(first.node, lambda: first.models and first.updates, 120), log.read_text()[-3000:]
        update, model = first.updates[-1], first.models[-1]
        data = Path(update.path).read_bytes()
        assert (model.version, model.sha256) == (update.version, update.sha256)
        assert model.version == 1 and model.sha256 == load_checkpoint(update.path).sha256
        assert bytes(model.data) == data and first.counts == {-(-len(data) // CHUNK_BYTES)} and len(data) > CHUNK_BYTES
        ckpt = checkpoint_from_bytes(model.data, "model_weights v1", expected_sha256=update.sha256,
                                     max_bytes=CFG.controller.max_checkpoint_bytes)
        assert ckpt.meta["version"] == 1 and ckpt.config.learner.weights_transport == "dds"

        # a reader created after the publish is served from the writer's history alone (bench weights times a
        # late participant: a controller process of its own)
        late = Receiver(rclpy_context, "late_controller")
        assert spin_until(late.node, lambda: late.models, 60), late.problems
        assert late.models[0].version == 1 and bytes(late.models[0].data) == data
        assert first.problems == late.problems == [] and len(first.models) == 1
        assert log.read_text().count("published model v") == 1  # no new publish served the late joiner
        assert f"sent on model_weights: {len(data)} bytes in" in log.read_text()

        # trained on a controller's transitions, the next model goes out from the trainer's thread just the same
        peer = Peer(rclpy_context)
        assert spin_until(peer.node, lambda: peer.node.count_subscribers(topics.TRANSITIONS) > 0, 60)
        peer.send_episodes(1, first_id=0)
        newer = lambda: [u for u in first.updates if u.version == first.models[-1].version >= 2]  # noqa: E731
        assert spin_until(first.node, newer, 300), log.read_text()[-3000:]
        update = newer()[0]
        assert bytes(first.models[-1].data) == Path(update.path).read_bytes() and first.problems == []
    finally:
        assert stop(proc) == 0, log.read_text()[-3000:]


def test_file_transport_announces_the_path_only(tmp_path, rclpy_context):
    log = tmp_path / "learner.log"
    proc = start_learner(tmp_path, "file")
    receiver = Receiver(rclpy_context, "same_machine_controller")
    try:
        assert spin_until(receiver.node, lambda: receiver.updates, 120), log.read_text()[-3000:]
        load_checkpoint(receiver.updates[-1].path, expected_sha256=receiver.updates[-1].sha256)
        assert receiver.node.count_publishers(topics.MODEL_WEIGHTS) == 0 and not receiver.models
        assert "sent on model_weights" not in log.read_text()
    finally:
        assert stop(proc) == 0, log.read_text()[-3000:]


def test_bench_weights_measures_a_hand_off(capsys):
    from tdmpc_ros.cli.main import main

    assert main(["bench", "weights", "--presets", "small", "--repeats", "2", "--pause", "0.1", "--json"]) == 0
    [result] = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["results"]
    assert result["models_held"] == 2 and result["pieces"] >= 1 and result["late_join_ms"] > 0
