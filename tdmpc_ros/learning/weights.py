"""A checkpoint's bytes in pieces for model_weights (msg/ModelWeights), and put back together on the other end.

A model is the checkpoint file's bytes (format v2) split into `chunk_count` pieces of at most
`learner.weights_chunk_bytes`, each carrying the version and the whole file's size and sha256. WeightsAssembler
is the receiving end, pure (no rclpy, no clock: the caller passes `now`): at most one model in flight, every
piece checked against the first of its version, the bytes handed out only once their size and sha256 match.
What the bytes hold is checked afterwards by checkpoint_from_bytes (ModelLoader.request_bytes).
"""
from __future__ import annotations

import array
import hashlib
import string
from dataclasses import dataclass, field
from typing import Union

Bytes = Union[bytes, bytearray, memoryview, array.array]

MIN_CHUNK_BYTES = 1024
"""learner.weights_chunk_bytes' lower bound: caps the pieces a declared size allows, so a flood of tiny pieces
cannot grow the assembler's bookkeeping far beyond the bytes it holds."""


@dataclass(frozen=True)
class Chunk:
    version: int
    sha256: str
    total_bytes: int
    index: int
    count: int
    data: memoryview
    """A view into the payload given to split (no copy)."""


def split(payload: Bytes, version: int, sha256: str, chunk_bytes: int) -> list[Chunk]:
    """`payload` as pieces of at most `chunk_bytes`, in order; the last holds the rest."""
    if chunk_bytes < MIN_CHUNK_BYTES:
        raise ValueError(f"chunk_bytes {chunk_bytes} is below {MIN_CHUNK_BYTES}")
    view = memoryview(payload).cast("B")
    if not view:
        raise ValueError("nothing to split: the payload is empty")
    count = -(-len(view) // chunk_bytes)
    return [Chunk(version, sha256, len(view), i, count, view[i * chunk_bytes:(i + 1) * chunk_bytes])
            for i in range(count)]


@dataclass(frozen=True)
class Model:
    """A complete model whose size and sha256 were verified."""

    version: int
    sha256: str
    data: bytearray


@dataclass(frozen=True)
class Added:
    """What one WeightsAssembler.add did. `refused`: why this piece was not taken (nothing else changed by it);
    `dropped`: partial models let go by this call (timed out, replaced by a newer version, or failing their
    size or sha256 check once complete); `model`: the model this piece completed."""

    model: Model | None = None
    refused: str = ""
    dropped: tuple[str, ...] = ()


@dataclass
class _Partial:
    version: int
    sha256: str
    total_bytes: int
    count: int
    deadline: float
    pieces: dict[int, Bytes] = field(default_factory=dict)
    held: int = 0

    def progress(self) -> str:
        return f"{len(self.pieces)} of {self.count} pieces ({self.held} of {self.total_bytes} bytes)"


class WeightsAssembler:
    """Puts models back together from their pieces, which may come in any order and more than once.

    At most one model is in flight: a piece of a newer version drops the partial one, a piece older than it or
    not newer than `newest` (the newest model completed, or one the caller already runs) is refused. A partial
    model not complete `timeout_s` after its first piece is dropped (checked by each add and by expire).
    """

    def __init__(self, max_bytes: int, timeout_s: float, newest: int = 0):
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s
        self.newest = newest
        self._partial: _Partial | None = None

    @property
    def in_flight(self) -> tuple[int, int, int] | None:
        """(version, pieces held, piece count) of the partial model, if any."""
        p = self._partial
        return (p.version, len(p.pieces), p.count) if p else None

    def expire(self, now: float) -> str:
        """Drop the partial model if its time is up; the reason, or "" if nothing was dropped."""
        p = self._partial
        if p is None or now < p.deadline:
            return ""
        self._partial = None
        return f"model v{p.version} dropped: {p.progress()} arrived within {self.timeout_s:g} s"

    def add(self, version: int, sha256: str, total_bytes: int, chunk_index: int, chunk_count: int,
            data: Bytes, now: float) -> Added:
        """Take one piece (the message's fields; `data` any bytes-like object, kept without a copy until the
        model is complete)."""
        dropped = [reason] if (reason := self.expire(now)) else []
        if problem := self._problem(version, sha256, total_bytes, chunk_index, chunk_count, len(data)):
            return Added(refused=f"piece {chunk_index} of model v{version}: {problem}", dropped=tuple(dropped))
        p = self._partial
        if p is None or version > p.version:
            if p is not None:
                dropped.append(f"model v{p.version} dropped for v{version}: {p.progress()} had arrived")
            p = self._partial = _Partial(version, sha256, total_bytes, chunk_count, now + self.timeout_s)
        held = p.pieces.get(chunk_index)
        if held is not None:  # a repeat (a re-announced model) changes nothing; a different copy is refused
            same = memoryview(held).cast("B") == memoryview(data).cast("B")
            return Added(refused="" if same else f"piece {chunk_index} of model v{version} differs from the copy "
                                                 "already held", dropped=tuple(dropped))
        if p.held + len(data) > total_bytes:
            return Added(refused=f"piece {chunk_index} of model v{version}: {len(data)} bytes overflow the declared "
                                 f"{total_bytes} ({p.held} held)", dropped=tuple(dropped))
        p.pieces[chunk_index] = data
        p.held += len(data)
        if len(p.pieces) < p.count:
            return Added(dropped=tuple(dropped))
        self._partial = None
        model, problem = self._join(p)
        return Added(model=model, dropped=tuple(dropped + ([problem] if problem else [])))

    def _problem(self, version: int, sha256: str, total_bytes: int, index: int, count: int, size: int) -> str:
        """Why a piece cannot be taken, judged before it touches the model in flight; "" if it can."""
        p = self._partial
        if version <= self.newest:
            return f"not newer than the newest model, v{self.newest}"
        if p is not None and version < p.version:
            return f"older than v{p.version}, which is arriving"
        if len(sha256) != 64 or not set(sha256) <= set(string.hexdigits.lower()):
            return f"sha256 is not 64 lowercase hex digits: {sha256[:80]!r}"
        if not 1 <= total_bytes <= self.max_bytes:
            return f"declares {total_bytes} bytes, outside 1..{self.max_bytes} (controller.max_checkpoint_bytes)"
        if not 1 <= count <= -(-total_bytes // MIN_CHUNK_BYTES):
            return f"chunk_count {count} is outside 1..{-(-total_bytes // MIN_CHUNK_BYTES)} for {total_bytes} bytes"
        if index >= count:
            return f"chunk_index out of range (chunk_count {count})"
        if not 1 <= size <= total_bytes:
            return f"holds {size} bytes, outside 1..{total_bytes} (the declared size)"
        if p is not None and version == p.version and (sha256, total_bytes, count) != (p.sha256, p.total_bytes,
                                                                                      p.count):
            return (f"sha256/total_bytes/chunk_count ({sha256[:12]}…, {total_bytes}, {count}) differ from its first "
                    f"piece's ({p.sha256[:12]}…, {p.total_bytes}, {p.count})")
        return ""

    def _join(self, p: _Partial) -> tuple[Model | None, str]:
        """The pieces in order, each let go once copied (peak memory: the model plus one piece), then checked."""
        data, at = bytearray(p.total_bytes), 0
        for index in range(p.count):
            piece = memoryview(p.pieces.pop(index)).cast("B")
            data[at:at + len(piece)] = piece
            at += len(piece)
        if at != p.total_bytes:
            return None, f"model v{p.version} refused: truncated, its pieces hold {at} of {p.total_bytes} bytes"
        digest = hashlib.sha256(data).hexdigest()
        if digest != p.sha256:
            return None, (f"model v{p.version} refused: sha256 mismatch (announced {p.sha256}, the bytes have "
                          f"{digest}); corrupted in transit")
        self.newest = p.version
        return Model(p.version, p.sha256, data), ""
