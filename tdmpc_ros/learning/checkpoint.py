"""Versioned, checksummed agent checkpoints.

A checkpoint is one torch.save'd dict {"format", "version", "config", "agent", "meta"} written atomically,
with `<file>.sha256` beside it. Loading uses torch.load(weights_only=True), so a file cannot run code, and
verifies the checksum (argument or sidecar) before unpickling anything.
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import pickle
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from tdmpc_ros.config import Config, ConfigError, ModelConfig, config_from_dict, config_to_dict
from tdmpc_ros.learning.agent import Agent

FORMAT = "tdmpc_ros.checkpoint"
VERSION = 1


class CheckpointError(RuntimeError):
    """A checkpoint file that cannot be used; the message names the file and the problem."""


@dataclass
class Checkpoint:
    config: Config
    agent_state: dict
    meta: dict = field(default_factory=dict)
    sha256: str = ""
    path: str = ""


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _atomic_write(path: Path, data: bytes) -> None:
    """Temp file in the same folder, flush + fsync, rename over `path`, fsync the folder."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def save_checkpoint(path: str | Path, agent: Agent, meta: dict[str, Any] | None = None) -> str:
    """Write the agent (weights, optimisers, scale, counters) and its config; returns the file's sha256."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": FORMAT, "version": VERSION, "config": config_to_dict(agent.cfg),
               "agent": agent.state_dict(), "meta": dict({"updates": agent.updates}, **(meta or {}))}
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    data = buffer.getvalue()
    digest = hashlib.sha256(data).hexdigest()
    _atomic_write(path, data)
    _atomic_write(sidecar_path(path), f"{digest}  {path.name}\n".encode())
    return digest


def sidecar_path(path: str | Path) -> Path:
    path = Path(path)
    return path.with_name(path.name + ".sha256")


def _expected_digest(path: Path, expected: str | None) -> str | None:
    if expected:
        return expected.strip().lower()
    sidecar = sidecar_path(path)
    if not sidecar.exists():
        return None
    text = sidecar.read_text().split()
    if not text:
        raise CheckpointError(f"{sidecar}: empty checksum file")
    return text[0].lower()


def load_checkpoint(path: str | Path, expected_sha256: str | None = None,
                    require_checksum: bool = False) -> Checkpoint:
    """Read and verify a checkpoint; every problem raises CheckpointError naming the file.

    The checksum is `expected_sha256`, else the `.sha256` file beside it; with neither, the file is loaded
    unverified unless `require_checksum` (a run folder's own checkpoints, whose sidecar is written right after
    the file: a missing one means the write was cut short).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file is missing")
    data = path.read_bytes()
    if not data:
        raise CheckpointError(f"{path}: checkpoint file is empty")
    digest = hashlib.sha256(data).hexdigest()
    expected = _expected_digest(path, expected_sha256)
    if expected is None and require_checksum:
        raise CheckpointError(f"{path}: no checksum file {sidecar_path(path).name} beside it; "
                              "the write was cut short")
    if expected is not None and expected != digest:
        raise CheckpointError(f"{path}: checksum mismatch (expected {expected}, file has {digest}); "
                              "corrupted or partly written")
    payload = _unpickle(path, data)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a tdmpc_ros checkpoint (no format tag {FORMAT!r})")
    if payload.get("version") != VERSION:
        raise CheckpointError(f"{path}: checkpoint format version {payload.get('version')!r} is not supported "
                              f"(this code reads version {VERSION})")
    missing = [k for k in ("config", "agent", "meta") if k not in payload]
    if missing:
        raise CheckpointError(f"{path}: checkpoint lacks {missing}")
    try:
        config = config_from_dict(payload["config"])
    except (ConfigError, TypeError, AttributeError) as exc:
        raise CheckpointError(f"{path}: config mismatch: the stored config does not fit this code's schema: {exc}")
    return Checkpoint(config=config, agent_state=payload["agent"], meta=dict(payload["meta"]), sha256=digest,
                      path=str(path))


def _unpickle(path: Path, data: bytes) -> Any:
    try:
        with warnings.catch_warnings():  # torch warns about odd pickle protocols before refusing them
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(f"{path}: not a loadable checkpoint: unsafe or foreign pickle payload refused: "
                              f"{str(exc).splitlines()[0]}") from None
    except Exception as exc:  # torch.load fails on garbage with many exception types
        raise CheckpointError(f"{path}: truncated or unreadable checkpoint: {type(exc).__name__}: {exc}") from None


def check_model_config(ckpt: Checkpoint, model: ModelConfig) -> None:
    """Raise CheckpointError unless the checkpoint's network is the one `model` describes."""
    stored, wanted = dataclasses.asdict(ckpt.config.model), dataclasses.asdict(model)
    diff = {k: (stored[k], wanted[k]) for k in wanted if stored.get(k) != wanted[k]}
    if diff:
        details = ", ".join(f"model.{k}: checkpoint {a!r} vs expected {b!r}" for k, (a, b) in diff.items())
        raise CheckpointError(f"{ckpt.path}: config mismatch: {details}")


def agent_from_checkpoint(ckpt: Checkpoint, device: str | torch.device = "cpu") -> Agent:
    """An Agent built from the checkpoint's own config with its full state loaded."""
    agent = Agent(ckpt.config, device=device)
    try:
        agent.load_state_dict(ckpt.agent_state)
    except (KeyError, RuntimeError, ValueError) as exc:
        raise CheckpointError(f"{ckpt.path}: config mismatch: weights do not fit the stored config: "
                              f"{str(exc).splitlines()[0]}") from None
    return agent
