"""Versioned, self-checking agent checkpoints, validated before anything is allocated, built or used.

File layout (format version 2), written atomically with `<file>.sha256` beside it (`sha256sum -c` format, over
the whole file):

    magic        b"tdmpc_ros.checkpoint\\n"  (21 bytes; `head -1 file` names the format)
    version      uint32, little-endian: 2
    body length  uint64, little-endian
    body sha256  32 bytes
    body         torch.save({"config": {section: {field: value}}, "agent": Agent.state_dict(), "meta": {...}})

The body digest catches a damaged copy that travels without its sidecar. Loading checks, in this order, and
each failure is one CheckpointError naming the file and the reason:

1. the file (`load_checkpoint` only): symlinks resolved once; the target must be a regular file (os.stat,
   before opening, so a FIFO or device never blocks; opened O_NONBLOCK | O_NOFOLLOW and checked again with
   fstat against a swap) of at most `max_bytes` (controller.max_checkpoint_bytes). Its header is checked
   against its size (step 3's magic, version and body length) before a buffer for the rest is allocated; it is
   read once into that one buffer, at most its stat size, hashed chunk by chunk as it comes in;
2. the whole-file sha256 against the digest passed in, else the sidecar (itself a regular file of at most
   4 KiB): a required one that is missing means the write was cut short;
3. magic, version, body length and body sha256, then the body's zip directory (stored entries only: torch
   would inflate a compressed one to its declared size before checking it), all before unpickling;
4. torch.load(weights_only=True): a file cannot run code;
5. the config through config_from_dict (every field's type and range), model sizes at most the largest preset's
   (checked again in agent_from_checkpoint, which also compares every weight's shape with a model built on the
   meta device before building the real one), the agent state's structure, and every float in it finite.

Steps 1-4 (the file, its digests, header, zip directory and unpickling) are in `checkpoint_file`; this module
checks what the payload holds (step 5) and whether a checkpoint fits an arm or a config (check_arm,
check_model_config). `checkpoint_from_bytes` runs steps 2-5 on bytes that arrive by other means. Version-1
files (a bare torch zip whose only digest is the sidecar) are refused with the command that converts them,
weights unchanged: `python -m tdmpc_ros.learning.checkpoint upgrade FILE [OUT]`.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import io
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from tdmpc_ros.arm_description import arm_identity
from tdmpc_ros.config import (MODEL_PRESETS, Config, ControllerConfig, ModelConfig, TaskConfig, config_from_dict,
                              config_to_dict, AgentConfig)
from tdmpc_ros.learning.agent import Agent
from tdmpc_ros.learning.checkpoint_file import (FORMAT, HEADER, CheckpointError, check_digest, check_header,
                                                check_zip_entries, expected_digest, hex_digest, pack,
                                                read_regular, sidecar_path, unpickle, write_file)
from tdmpc_ros.model.world_model import WorldModel

MAX_CHECKPOINT_BYTES = ControllerConfig().max_checkpoint_bytes
AGENT_KEYS = ("model", "optim", "pi_optim", "scale", "updates")


@dataclass
class Checkpoint:
    config: Config
    agent_state: dict
    meta: dict = field(default_factory=dict)
    sha256: str = ""
    """sha256 of the whole file (what the sidecar and ModelUpdate carry)."""
    path: str = ""


def _serialize(payload: dict) -> bytes:
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return buffer.getvalue()


def save_checkpoint(path: str | Path, agent: Agent, meta: dict[str, Any] | None = None) -> str:
    """Write the agent (weights, optimisers, scale, counters) and its config; returns the file's sha256."""
    payload = {"config": config_to_dict(agent.cfg), "agent": agent.state_dict(),
               "meta": dict({"updates": agent.updates, "arm": arm_identity(agent.cfg.task)}, **(meta or {}))}
    return write_file(Path(path), _serialize(payload))


def load_checkpoint(path: str | Path, expected_sha256: str | None = None, require_checksum: bool = False,
                    max_bytes: int = MAX_CHECKPOINT_BYTES) -> Checkpoint:
    """Read, verify and validate a checkpoint file (module docstring); every problem raises CheckpointError.

    The checksum is `expected_sha256`, else the `.sha256` file beside it; with neither, only the embedded body
    digest is checked, unless `require_checksum` (a run folder's own checkpoints, whose sidecar is written right
    after the file: a missing one means the write was cut short).
    """
    path = Path(path)
    data, digest = read_regular(path, max_bytes, "checkpoint file", check_start=check_header)
    expected = expected_digest(path, expected_sha256)
    if expected is None and require_checksum:
        raise CheckpointError(f"{path}: no checksum file {sidecar_path(os.path.realpath(path)).name} beside it; "
                              "the write was cut short")
    check_digest(str(path), digest, expected)
    return _decode(data, str(path), digest)


def checkpoint_from_bytes(data: bytes | bytearray | memoryview, name: str, expected_sha256: str | None = None,
                          max_bytes: int = MAX_CHECKPOINT_BYTES) -> Checkpoint:
    """The same checks as load_checkpoint on a checkpoint's bytes (e.g. received in a message); `name` goes in
    error messages and Checkpoint.path."""
    if len(data) > max_bytes:
        raise CheckpointError(f"{name}: checkpoint is {len(data)} bytes, over the limit of {max_bytes} bytes")
    expected = hex_digest(expected_sha256, f"{name}: expected sha256") if expected_sha256 else None
    digest = hashlib.sha256(data).hexdigest()
    check_digest(name, digest, expected)
    return _decode(data, name, digest)


def _decode(data: bytes | bytearray | memoryview, name: str, digest: str) -> Checkpoint:
    """Steps 3-5 of the module docstring on a whole file's bytes whose sha256 is `digest`."""
    with memoryview(data) as view:
        body_sha = check_header(view[:HEADER.size], len(view), name)
        body = view[HEADER.size:]
        if hashlib.sha256(body).digest() != body_sha:
            raise CheckpointError(f"{name}: body checksum mismatch: the embedded sha256 does not match the body; "
                                  "corrupted")
        check_zip_entries(body, name)
        payload = unpickle(body, name)
    config, agent_state, meta = _check_payload(payload, name)
    return Checkpoint(config=config, agent_state=agent_state, meta=meta, sha256=digest, path=name)


def _check_payload(payload: Any, name: str) -> tuple[Config, dict, dict]:
    """Config, agent state and meta of an unpickled body, each checked; nothing is built from them yet."""
    if not isinstance(payload, dict) or set(payload) != {"agent", "config", "meta"}:
        keys = sorted(map(str, payload)) if isinstance(payload, dict) else type(payload).__name__
        raise CheckpointError(f"{name}: checkpoint body must be a dict of config, agent and meta; got {keys}")
    raw, agent_state, meta = payload["config"], payload["agent"], payload["meta"]
    if not isinstance(raw, dict) or not all(isinstance(v, dict) for v in raw.values()):
        raise CheckpointError(f"{name}: stored config invalid: not a {{section: {{field: value}}}} dict")
    try:
        config = config_from_dict(raw)
    except (TypeError, ValueError, AttributeError) as exc:  # ConfigError is a ValueError; it names the field
        raise CheckpointError(f"{name}: stored config invalid: {exc}") from None
    check_model_sizes(config.model, name)
    if not isinstance(meta, dict):
        raise CheckpointError(f"{name}: checkpoint meta is {type(meta).__name__}, not a dict")
    _check_agent_state(agent_state, name)
    return config, agent_state, meta


def check_model_sizes(model: ModelConfig, name: str) -> None:
    """Sizes at most the largest preset's (explicit sizes are allowed, as in the config): a checkpoint cannot
    make anything build an arbitrarily large network."""
    for key in MODEL_PRESETS[model.preset]:
        largest = max(sizes[key] for sizes in MODEL_PRESETS.values())
        if getattr(model, key) > largest:
            raise CheckpointError(f"{name}: stored config invalid: model.{key}: {getattr(model, key)} is above "
                                  f"the largest preset's {largest}")


def _check_agent_state(state: Any, name: str) -> None:
    if not isinstance(state, dict) or any(k not in state for k in AGENT_KEYS):
        keys = sorted(map(str, state)) if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(f"{name}: agent state must hold {list(AGENT_KEYS)}; got {keys}")
    if not all(isinstance(state[k], dict) for k in ("model", "optim", "pi_optim")):
        raise CheckpointError(f"{name}: agent state's model, optim and pi_optim must be dicts")
    if not isinstance(state["scale"], torch.Tensor) or not isinstance(state["updates"], int) or state["updates"] < 0:
        raise CheckpointError(f"{name}: agent state's scale must be a tensor and updates a count")
    bad = _first_bad_value(state)
    if bad:
        raise CheckpointError(f"{name}: agent state refused: agent.{bad}")


def _first_bad_value(tree: dict) -> str | None:
    """'dotted.name: problem' for the first float tensor or float holding NaN/inf, or a tensor that is not
    dense; iterative, so deep nesting cannot overflow the stack."""
    stack: list[tuple[str, Any]] = [("", tree)]
    while stack:
        prefix, node = stack.pop()
        if isinstance(node, dict):
            stack.extend((f"{prefix}{k}.", v) for k, v in reversed(list(node.items())))
        elif isinstance(node, (list, tuple)):
            stack.extend((f"{prefix}{i}.", v) for i, v in reversed(list(enumerate(node))))
        elif isinstance(node, torch.Tensor):
            if node.layout != torch.strided:
                return f"{prefix[:-1]}: a {node.layout} tensor, not a dense one"
            if (node.is_floating_point() or node.is_complex()) and not bool(torch.isfinite(node).all()):
                return f"{prefix[:-1]}: {int((~torch.isfinite(node)).sum())} NaN/inf values (non-finite weights)"
        elif isinstance(node, float) and not math.isfinite(node):
            return f"{prefix[:-1]}: {node} is not finite"
    return None


def check_arm(ckpt: Checkpoint, task: TaskConfig) -> None:
    """Raise CheckpointError unless the checkpoint's model is for this arm (joints, end effector, action space)."""
    stored = ckpt.config.task
    if (stored.joint_names, stored.ee_link, stored.action_space) != (task.joint_names, task.ee_link,
                                                                     task.action_space):
        urdf = ckpt.meta.get("arm", {}).get("urdf_sha256") if isinstance(ckpt.meta.get("arm"), dict) else None
        raise CheckpointError(
            f"{ckpt.path}: model for {len(stored.joint_names)} joints [{' '.join(stored.joint_names)}] (ee "
            f"{stored.ee_link}, {stored.action_space} actions{f', URDF sha256 {urdf[:12]}' if urdf else ''}), "
            f"this arm has {len(task.joint_names)} [{' '.join(task.joint_names)}] (ee {task.ee_link}, "
            f"{task.action_space} actions)")


def check_model_config(ckpt: Checkpoint, model: ModelConfig, agent: AgentConfig | None = None) -> None:
    """Raise CheckpointError unless the checkpoint's network is the one `model` describes (a variant's switch,
    e.g. model.latent or model.preset, is named like any other field); with `agent`, also unless the agent's
    own networks match (agent.decoder_coef: a decoder or none)."""
    stored, wanted = dataclasses.asdict(ckpt.config.model), dataclasses.asdict(model)
    diff = {f"model.{k}": (stored[k], wanted[k]) for k in wanted if stored.get(k) != wanted[k]}
    if agent is not None and (ckpt.config.agent.decoder_coef > 0) != (agent.decoder_coef > 0):
        diff["agent.decoder_coef"] = (ckpt.config.agent.decoder_coef, agent.decoder_coef)
    if diff:
        details = ", ".join(f"{k}: checkpoint {a!r} vs expected {b!r}" for k, (a, b) in diff.items())
        raise CheckpointError(f"{ckpt.path}: config mismatch: {details}")


def _check_weight_shapes(ckpt: Checkpoint) -> None:
    """Every stored weight has the shape the config gives it, compared on a meta-device model (no memory)."""
    with torch.device("meta"):
        expected = WorldModel(ckpt.config.model).state_dict()
    stored = ckpt.agent_state["model"]
    problems = sorted(f"{k}: only in {'config' if k in expected else 'checkpoint'}"
                      for k in set(expected) ^ set(stored))
    problems += [f"{k}: stored {tuple(getattr(stored[k], 'shape', ()))} vs config {tuple(v.shape)}"
                 for k, v in expected.items()
                 if k in stored and (not isinstance(stored[k], torch.Tensor) or stored[k].shape != v.shape)]
    if problems:
        raise CheckpointError(f"{ckpt.path}: config mismatch: weights do not fit the stored config: "
                              f"{'; '.join(problems[:3])}{' …' if len(problems) > 3 else ''}")


def agent_from_checkpoint(ckpt: Checkpoint, device: str | torch.device = "cpu") -> Agent:
    """An Agent built from the checkpoint's own config with its full state loaded; sizes and weight shapes are
    checked before anything is built."""
    check_model_sizes(ckpt.config.model, ckpt.path)
    _check_weight_shapes(ckpt)
    agent = Agent(ckpt.config, device=device)
    try:
        agent.load_state_dict(ckpt.agent_state)
    except (KeyError, RuntimeError, ValueError) as exc:
        raise CheckpointError(f"{ckpt.path}: config mismatch: weights do not fit the stored config: "
                              f"{str(exc).splitlines()[0]}") from None
    return agent


def upgrade(path: str | Path, out: str | Path | None = None) -> str:
    """Rewrite a version-1 checkpoint (a bare torch zip) as version 2 at `out` (default: in place), weights and
    config unchanged and the result validated before it is written; returns the new file's sha256."""
    path = Path(path)
    data, digest = read_regular(path, MAX_CHECKPOINT_BYTES, "checkpoint file")
    check_digest(str(path), digest, expected_digest(path, None))
    with memoryview(data) as view:
        old = unpickle(view, str(path))
    if not isinstance(old, dict) or old.get("format") != FORMAT or old.get("version") != 1:
        raise CheckpointError(f"{path}: not a version-1 tdmpc_ros checkpoint")
    body = _serialize({k: old.get(k) for k in ("config", "agent", "meta")})
    _decode(pack(body), str(path), "")
    return write_file(Path(out or path), body)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tdmpc_ros.learning.checkpoint")
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("upgrade", help="convert a version-1 checkpoint to the current format")
    up.add_argument("file")
    up.add_argument("out", nargs="?", help="output file (default: FILE, rewritten in place with its .sha256)")
    args = parser.parse_args(argv)
    try:
        print(upgrade(args.file, args.out))
    except CheckpointError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
