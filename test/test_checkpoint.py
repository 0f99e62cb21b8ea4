"""Checkpoints: exact round trip, atomic writes, and every kind of bad file refused with a clear error, before
anything is read (size, file type), unpickled (digests) or built (config, sizes, weights)."""
from __future__ import annotations

import hashlib
import io
import os
import pickle
import zipfile

import pytest
import torch

from tdmpc_ros.arm_description import arm_identity
from tdmpc_ros.config import ControllerConfig, ModelConfig, config_to_dict, load_config
from tdmpc_ros.control.models import ModelRejected, load_model
from tdmpc_ros.learning.agent import Agent
from tdmpc_ros.learning.checkpoint import (MAX_CHECKPOINT_BYTES, agent_from_checkpoint, check_model_config,
                                           checkpoint_from_bytes, load_checkpoint, main, save_checkpoint)
from tdmpc_ros.learning.checkpoint_file import (FORMAT, HEADER, MAGIC, CheckpointError, file_sha256, pack,
                                                sidecar_path)


def small_config(**agent):
    # Eager training: what a checkpoint holds does not depend on compiling, which would cost the first update
    return load_config(overrides={"model": {"preset": "small"},
                                  "agent": dict({"batch_size": 16, "compile": False}, **agent)})


def batch(cfg, seed=0, h=3, b=16):
    g = torch.Generator().manual_seed(seed)
    return {"obs": torch.randn(h + 1, b, cfg.model.obs_dim, generator=g),
            "action": torch.rand(h, b, cfg.model.action_dim, generator=g) * 2 - 1,
            "reward": -torch.rand(h, b, 1, generator=g), "terminated": torch.zeros(h, b, 1)}


pytestmark = [pytest.mark.usefixtures("one_torch_thread"), pytest.mark.unit]


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
    assert ckpt.sha256 == digest and ckpt.meta == {"updates": 3, "env_steps": 1234,
                                                   "arm": arm_identity(trained_agent.cfg.task)}
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
    truncated = rf"{path.name}: truncated checkpoint: header says \d+ body bytes, file holds {5000 - HEADER.size}"
    with pytest.raises(CheckpointError, match=truncated):  # the header notices before the sidecar is read
        load_checkpoint(path)
    sidecar_path(path).unlink()
    with pytest.raises(CheckpointError, match=truncated):
        load_checkpoint(path)
    path.write_bytes(path.read_bytes()[:HEADER.size - 1])
    with pytest.raises(CheckpointError, match=rf"{path.name}: truncated checkpoint: shorter than its "
                                              rf"{HEADER.size}-byte header"):
        load_checkpoint(path)


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(CheckpointError, match=r"nope\.pt.*missing"):
        load_checkpoint(tmp_path / "nope.pt")
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"empty\.pt.*empty"):
        load_checkpoint(tmp_path / "empty.pt")


def torch_bytes(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def payload_of(agent, **config_changes):
    """A checkpoint body for `agent`, with {"section.field": value} written into its stored config."""
    config = config_to_dict(agent.cfg)
    for key, value in config_changes.items():
        section, _, name = key.partition(".")
        config[section][name] = value
    return {"config": config, "agent": agent.state_dict(), "meta": {}}


def write_payload(path, payload):
    """A well-formed version-2 file (valid digests) around `payload`: what a hostile writer could produce."""
    path.write_bytes(pack(torch_bytes(payload)))
    return path


def test_foreign_and_wrong_version_files(tmp_path):
    torch.save({"weights": torch.zeros(3)}, tmp_path / "plain.pt")
    with pytest.raises(CheckpointError, match=r"plain\.pt: a bare torch file, not a version-2 checkpoint"):
        load_checkpoint(tmp_path / "plain.pt")
    body = torch_bytes({"config": {}, "agent": {}, "meta": {}})
    (tmp_path / "v99.pt").write_bytes(HEADER.pack(MAGIC, 99, len(body), hashlib.sha256(body).digest()) + body)
    with pytest.raises(CheckpointError, match=r"v99\.pt.*version 99 is not supported"):
        load_checkpoint(tmp_path / "v99.pt")
    (tmp_path / "text.pt").write_text("hello, not a checkpoint\n")
    with pytest.raises(CheckpointError, match=r"text\.pt: not a tdmpc_ros checkpoint"):
        load_checkpoint(tmp_path / "text.pt")
    write_payload(tmp_path / "list.pt", [1, 2, 3])
    with pytest.raises(CheckpointError, match=r"list\.pt: checkpoint body must be a dict"):
        load_checkpoint(tmp_path / "list.pt")


class WritesMarker:
    """Unpickling this calls os.system: a checkpoint must never do that."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_payload_cannot_run_code(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    # valid header and digests: the unpickler itself must refuse
    write_payload(path, {"config": {}, "agent": WritesMarker(marker), "meta": {}})
    with pytest.raises(CheckpointError, match=r"evil\.pt.*unsafe"):
        load_checkpoint(path)
    path.write_bytes(pack(pickle.dumps(WritesMarker(marker))))  # a bare pickle body, not even a torch zip
    with pytest.raises(CheckpointError, match=r"evil\.pt: unreadable checkpoint body"):
        load_checkpoint(path)
    assert not marker.exists()


def test_config_mismatches(tmp_path, trained_agent):
    write_payload(tmp_path / "badcfg.pt", payload_of(trained_agent, **{"model.no_such_field": 1}))
    with pytest.raises(CheckpointError, match=r"badcfg\.pt: stored config invalid: .*no_such_field"):
        load_checkpoint(tmp_path / "badcfg.pt")

    ckpt = load_checkpoint(saved(tmp_path, trained_agent))
    check_model_config(ckpt, trained_agent.cfg.model)
    with pytest.raises(CheckpointError, match=r"config mismatch.*model\.preset: checkpoint 'small' vs expected '5m'"):
        check_model_config(ckpt, ModelConfig(preset="5m", obs_dim=23, action_dim=7))
    ckpt.config.model.mlp_dim = 64  # explicit sizes are allowed, but these weights are not that network
    with pytest.raises(CheckpointError, match=r"weights do not fit the stored config: .*\(128, .*\) vs config \(64, "):
        agent_from_checkpoint(ckpt)
    ckpt.config.model.mlp_dim = 8192  # larger than any preset: refused before anything is built
    with pytest.raises(CheckpointError, match=r"model\.mlp_dim: 8192 is above the largest preset's 4096"):
        agent_from_checkpoint(ckpt)
    ckpt.config.model.mlp_dim = 128
    ckpt.config.model = ModelConfig(preset="medium", obs_dim=23, action_dim=7)  # weights no longer fit the config
    with pytest.raises(CheckpointError, match=r"config mismatch: weights do not fit the stored config: "
                                              r"_encoder\.0\.weight: stored \(128, 23\) vs config \(256, 23\)"):
        agent_from_checkpoint(ckpt)


def test_size_cap_is_checked_before_anything_is_read(tmp_path):
    assert MAX_CHECKPOINT_BYTES == ControllerConfig().max_checkpoint_bytes
    path = tmp_path / "huge.pt"
    with open(path, "wb") as f:
        f.truncate(64 << 20)  # sparse: 64 MiB of size, no data on disk
    with pytest.raises(CheckpointError, match=r"huge\.pt: checkpoint file is 67108864 bytes, over the limit of "
                                              r"1048576 bytes; nothing read"):
        load_checkpoint(path, max_bytes=1 << 20)
    # the controller's loader applies the configured cap
    cfg = load_config(overrides={"controller": {"max_checkpoint_bytes": 1 << 20}})
    with pytest.raises(ModelRejected, match=r"huge\.pt: checkpoint file is 67108864 bytes, over the limit"):
        load_model(str(path), None, cfg)
    with pytest.raises(CheckpointError, match=r"msg: checkpoint is 2048 bytes, over the limit of 1024 bytes"):
        checkpoint_from_bytes(bytes(2048), "msg", max_bytes=1024)
    # under the cap, the header is checked against the file's size before a buffer for the rest is allocated
    path.write_bytes(HEADER.pack(MAGIC, 2, 1000, bytes(32)))
    with open(path, "r+b") as f:
        f.truncate(256 << 20)
    with pytest.raises(CheckpointError, match=rf"huge\.pt: trailing bytes in checkpoint: header says 1000 body "
                                              rf"bytes, file holds {(256 << 20) - HEADER.size}"):
        load_checkpoint(path)


@pytest.mark.timeout(60)  # a FIFO opened for reading blocks until a writer comes: the old code hung here
def test_fifo_checkpoint_and_fifo_sidecar_are_refused_without_blocking(tmp_path, trained_agent):
    os.mkfifo(tmp_path / "pipe.pt")
    with pytest.raises(CheckpointError, match=r"pipe\.pt: checkpoint file is a FIFO, not a regular file"):
        load_checkpoint(tmp_path / "pipe.pt")
    path = saved(tmp_path, trained_agent)
    sidecar_path(path).unlink()
    os.mkfifo(sidecar_path(path))
    with pytest.raises(CheckpointError, match=rf"{path.name}\.sha256: checksum file is a FIFO, not a regular file"):
        load_checkpoint(path)


def test_directories_and_devices_are_refused(tmp_path):
    (tmp_path / "dir.pt").mkdir()
    with pytest.raises(CheckpointError, match=r"dir\.pt: checkpoint file is a directory, not a regular file"):
        load_checkpoint(tmp_path / "dir.pt")
    with pytest.raises(CheckpointError, match=r"/dev/zero: checkpoint file is a character device"):
        load_checkpoint("/dev/zero")


@pytest.mark.timeout(60)
def test_symlink_is_resolved_once_and_its_target_must_be_a_regular_file(tmp_path, trained_agent):
    target = saved(tmp_path, trained_agent, "ckpt_000001.pt")
    link = tmp_path / "current.pt"
    link.symlink_to(target.name)
    ckpt = load_checkpoint(link)  # verified against the target's own sidecar
    assert ckpt.sha256 == file_sha256(target) and ckpt.path == str(link)
    sidecar_path(target).write_text(f"{'0' * 64}  {target.name}\n")
    with pytest.raises(CheckpointError, match=r"current\.pt: checksum mismatch"):
        load_checkpoint(link)
    os.mkfifo(tmp_path / "pipe")
    (tmp_path / "to_pipe.pt").symlink_to(tmp_path / "pipe")
    with pytest.raises(CheckpointError, match=r"to_pipe\.pt \(-> .*pipe\): checkpoint file is a FIFO"):
        load_checkpoint(tmp_path / "to_pipe.pt")


def test_bad_sidecars_are_refused(tmp_path, trained_agent):
    path = saved(tmp_path, trained_agent)
    sidecar_path(path).write_text("not-a-digest  c.pt\n")
    with pytest.raises(CheckpointError, match=r"c\.pt\.sha256: not a sha256 digest"):
        load_checkpoint(path)
    with open(sidecar_path(path), "wb") as f:
        f.truncate(1 << 20)
    with pytest.raises(CheckpointError, match=r"c\.pt\.sha256: checksum file is 1048576 bytes, over the limit of 4096"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match=r"c\.pt: expected sha256: not a sha256 digest"):
        load_checkpoint(path, expected_sha256="abc")


@pytest.mark.parametrize("change, message", [
    ({"agent.discount_min": float("nan")}, r"agent\.discount_min: nan is not finite"),
    ({"agent.discount_max": float("inf")}, r"agent\.discount_max: inf is not finite"),
    ({"task.action_scale": -0.05}, r"task\.action_scale: -0\.05 is out of range"),
    ({"model.preset": "huge"}, r"model\.preset: unknown value 'huge'"),
    ({"model.latent_dim": 4096}, r"model\.latent_dim: 4096 is above the largest preset's 1376"),
])
def test_bad_config_values_inside_a_checkpoint_are_refused(tmp_path, trained_agent, change, message):
    path = write_payload(tmp_path / "cfg.pt", payload_of(trained_agent, **change))
    with pytest.raises(CheckpointError, match=rf"cfg\.pt: stored config invalid: {message}"):
        load_checkpoint(path)


@pytest.mark.parametrize("where", ["model", "optimiser", "scale"])
def test_non_finite_weights_are_refused_before_building(tmp_path, trained_agent, where):
    payload = payload_of(trained_agent)
    state = payload["agent"]
    if where == "model":
        state["model"]["_qs.weight.0"].view(-1)[:3] = float("nan")
        name, count = r"model\._qs\.weight\.0", 3
    elif where == "optimiser":
        state["optim"]["state"][0]["exp_avg_sq"].view(-1)[0] = float("inf")
        name, count = r"optim\.state\.0\.exp_avg_sq", 1
    else:
        state["scale"][0] = float("nan")
        name, count = "scale", 1
    path = write_payload(tmp_path / "nan.pt", payload)
    with pytest.raises(CheckpointError, match=rf"nan\.pt: agent state refused: agent\.{name}: {count} NaN/inf"):
        load_checkpoint(path)
    with pytest.raises(ModelRejected, match=r"nan\.pt: agent state refused"):
        load_model(str(path), None, trained_agent.cfg)


@pytest.mark.parametrize("offset", [HEADER.size - 1, HEADER.size + 100, -1])  # digest, body start, body end
def test_bit_flip_without_a_sidecar_is_caught_by_the_embedded_digest(tmp_path, trained_agent, offset):
    path = saved(tmp_path, trained_agent)
    sidecar_path(path).unlink()
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"c\.pt: body checksum mismatch"):
        load_checkpoint(path)


def test_compressed_body_entries_are_refused_before_torch_inflates_them(tmp_path):
    body = io.BytesIO()
    with zipfile.ZipFile(body, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("archive/data/0", bytes(10 << 20))  # 10 MiB of zeros in ~10 KB
    path = tmp_path / "bomb.pt"
    path.write_bytes(pack(body.getvalue()))
    with pytest.raises(CheckpointError, match=r"bomb\.pt: checkpoint body entry 'archive/data/0' is compressed"):
        load_checkpoint(path)


def test_obs_action_mismatch_is_refused_before_building_a_model(tmp_path, trained_agent):
    """The stored config claims a 6-joint arm but the weights are the 7-joint agent's: building first would
    fail on the weights instead."""
    six = [f"j{i}" for i in range(6)]
    payload = payload_of(trained_agent, **{"task.joint_names": six, "sim.home": [0.0] * 6, "model.obs_dim": 21,
                                           "model.action_dim": 6})
    path = write_payload(tmp_path / "six.pt", payload)
    assert load_checkpoint(path).config.model.action_dim == 6
    with pytest.raises(ModelRejected, match=r"six\.pt: model for 6 joints \[j0 j1 j2 j3 j4 j5\] .*this arm has 7 "
                                            r"\[lbr_iiwa_joint_1 "):
        load_model(str(path), None, trained_agent.cfg)
    with pytest.raises(CheckpointError, match=r"weights do not fit"):
        agent_from_checkpoint(load_checkpoint(path))


def test_bytes_path_gives_the_same_checkpoint(tmp_path, trained_agent):
    path = saved(tmp_path, trained_agent)
    data = path.read_bytes()
    ckpt = checkpoint_from_bytes(data, "update v7", expected_sha256=file_sha256(path))
    assert ckpt.sha256 == load_checkpoint(path).sha256 and ckpt.path == "update v7"
    with pytest.raises(CheckpointError, match=r"update v7: checksum mismatch"):
        checkpoint_from_bytes(data, "update v7", expected_sha256="0" * 64)
    flipped = bytearray(data)
    flipped[-1] ^= 0x01
    with pytest.raises(CheckpointError, match=r"update v7: body checksum mismatch"):
        checkpoint_from_bytes(flipped, "update v7")


def test_version_1_file_is_refused_and_the_upgrade_command_converts_it(tmp_path, trained_agent, capsys):
    old = tmp_path / "old.pt"
    payload = dict(payload_of(trained_agent), format=FORMAT, version=1)
    old.write_bytes(torch_bytes(payload))
    sidecar_path(old).write_text(f"{file_sha256(old)}  old.pt\n")
    with pytest.raises(CheckpointError, match=rf"old\.pt: a bare torch file.*python -m tdmpc_ros\.learning\."
                                              rf"checkpoint upgrade {old}"):
        load_checkpoint(old)
    assert main(["upgrade", str(old), str(tmp_path / "new.pt")]) == 0
    new = load_checkpoint(tmp_path / "new.pt")  # its fresh sidecar verifies
    assert capsys.readouterr().out.strip() == new.sha256
    for (name, a), b in zip(trained_agent.model.state_dict().items(), new.agent_state["model"].values()):
        assert torch.equal(a, b), name
    assert main(["upgrade", str(tmp_path / "new.pt")]) == 1  # already version 2
