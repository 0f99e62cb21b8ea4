"""Checkpoints: exact round trip, atomic writes, and every kind of bad file refused with a clear error."""
from __future__ import annotations

import os
import pickle

import pytest
import torch

from tdmpc_ros.config import ModelConfig, load_config
from tdmpc_ros.learning.agent import Agent
from tdmpc_ros.learning.checkpoint import (FORMAT, CheckpointError, agent_from_checkpoint, check_model_config,
                                           file_sha256, load_checkpoint, save_checkpoint, sidecar_path)


def small_config(**agent):
    return load_config(overrides={"model": {"preset": "small"}, "agent": dict({"batch_size": 16}, **agent)})


def batch(cfg, seed=0, h=3, b=16):
    g = torch.Generator().manual_seed(seed)
    return {"obs": torch.randn(h + 1, b, cfg.model.obs_dim, generator=g),
            "action": torch.rand(h, b, cfg.model.action_dim, generator=g) * 2 - 1,
            "reward": -torch.rand(h, b, 1, generator=g), "terminated": torch.zeros(h, b, 1)}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def trained_agent():
    cfg = small_config()
    agent = Agent(cfg)
    for i in range(3):
        agent.update(batch(cfg, i))
    return agent


def test_round_trip_restores_weights_optimisers_and_counters(tmp_path, trained_agent):
    path = tmp_path / "ckpt.pt"
    digest = save_checkpoint(path, trained_agent, {"env_steps": 1234})
    assert digest == file_sha256(path) and sidecar_path(path).read_text().split()[0] == digest
    ckpt = load_checkpoint(path)
    assert ckpt.sha256 == digest and ckpt.meta == {"updates": 3, "env_steps": 1234}
    assert ckpt.config == trained_agent.cfg
    restored = agent_from_checkpoint(ckpt)
    assert restored.updates == 3 and torch.equal(restored.scale.value, trained_agent.scale.value)
    for (name, a), b in zip(trained_agent.model.state_dict().items(), restored.model.state_dict().values()):
        assert torch.equal(a, b), name
    # the optimiser moments came back too: the next update is the same in both
    torch.manual_seed(9)
    expected = trained_agent.update(batch(trained_agent.cfg, 7))
    torch.manual_seed(9)
    assert restored.update(batch(trained_agent.cfg, 7)) == expected


def test_atomic_write_leaves_only_the_file_and_its_checksum(tmp_path, trained_agent):
    save_checkpoint(tmp_path / "a.pt", trained_agent)
    save_checkpoint(tmp_path / "a.pt", trained_agent)  # overwrite in place
    assert sorted(os.listdir(tmp_path)) == ["a.pt", "a.pt.sha256"]


def test_expected_checksum_argument_is_checked(tmp_path, trained_agent):
    path = tmp_path / "c.pt"
    digest = save_checkpoint(path, trained_agent)
    sidecar_path(path).unlink()
    assert load_checkpoint(path, expected_sha256=digest).sha256 == digest
    with pytest.raises(CheckpointError, match="checksum mismatch"):
        load_checkpoint(path, expected_sha256="0" * 64)


def saved(tmp_path, agent, name="c.pt"):
    path = tmp_path / name
    save_checkpoint(path, agent)
    return path


def test_bit_flip_is_a_checksum_mismatch(tmp_path, trained_agent):
    path = saved(tmp_path, trained_agent)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=rf"{path.name}.*checksum mismatch"):
        load_checkpoint(path)


def test_a_required_checksum_must_be_there(tmp_path, trained_agent):
    path = saved(tmp_path, trained_agent)
    sidecar_path(path).unlink()
    assert load_checkpoint(path).sha256 == file_sha256(path)  # a user's bare .pt loads unverified
    with pytest.raises(CheckpointError, match=rf"{path.name}: no checksum file {path.name}.sha256"):
        load_checkpoint(path, require_checksum=True)


def test_truncated_file_is_refused(tmp_path, trained_agent):
    path = saved(tmp_path, trained_agent)
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(CheckpointError, match=rf"{path.name}.*checksum mismatch"):
        load_checkpoint(path)
    sidecar_path(path).unlink()  # without a checksum to compare, the reader still notices
    with pytest.raises(CheckpointError, match=rf"{path.name}.*truncated or unreadable"):
        load_checkpoint(path)


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(CheckpointError, match=r"nope\.pt.*missing"):
        load_checkpoint(tmp_path / "nope.pt")
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"empty\.pt.*empty"):
        load_checkpoint(tmp_path / "empty.pt")


def test_foreign_and_wrong_version_files(tmp_path):
    torch.save({"weights": torch.zeros(3)}, tmp_path / "plain.pt")
    with pytest.raises(CheckpointError, match=r"plain\.pt.*not a tdmpc_ros checkpoint"):
        load_checkpoint(tmp_path / "plain.pt")
    torch.save({"format": FORMAT, "version": 99, "config": {}, "agent": {}, "meta": {}}, tmp_path / "v99.pt")
    with pytest.raises(CheckpointError, match=r"v99\.pt.*version 99"):
        load_checkpoint(tmp_path / "v99.pt")
    (tmp_path / "text.pt").write_text("hello, not a checkpoint\n")
    with pytest.raises(CheckpointError, match=r"text\.pt"):
        load_checkpoint(tmp_path / "text.pt")


class WritesMarker:
    """Unpickling this calls os.system: a checkpoint must never do that."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_payload_cannot_run_code(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"format": FORMAT, "version": 1, "config": {}, "agent": WritesMarker(marker), "meta": {}}, path)
    with pytest.raises(CheckpointError, match=r"evil\.pt.*unsafe"):
        load_checkpoint(path)
    path.write_bytes(pickle.dumps(WritesMarker(marker)))  # a bare pickle, not even a torch zip
    with pytest.raises(CheckpointError, match=r"evil\.pt"):
        load_checkpoint(path)
    assert not marker.exists()


def test_config_mismatches(tmp_path, trained_agent):
    payload = {"format": FORMAT, "version": 1, "config": {"model": {"no_such_field": 1}}, "agent": {}, "meta": {}}
    torch.save(payload, tmp_path / "badcfg.pt")
    with pytest.raises(CheckpointError, match=r"badcfg\.pt.*config mismatch.*no_such_field"):
        load_checkpoint(tmp_path / "badcfg.pt")

    ckpt = load_checkpoint(saved(tmp_path, trained_agent))
    check_model_config(ckpt, trained_agent.cfg.model)
    with pytest.raises(CheckpointError, match=r"config mismatch.*model\.preset: checkpoint 'small' vs expected '5m'"):
        check_model_config(ckpt, ModelConfig(preset="5m", obs_dim=23, action_dim=7))
    ckpt.config.model.mlp_dim = 64  # weights no longer fit the config that claims to describe them
    with pytest.raises(CheckpointError, match=r"config mismatch.*weights do not fit"):
        agent_from_checkpoint(ckpt)
