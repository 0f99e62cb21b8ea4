"""The learner's live intake of Transition messages: serialised (CDR) messages decoded and checked before
anything is converted, then assembled into episodes per publisher with every loss counted.

`decode_transition` reads one serialised Transition, checking its sizes against the config before reading any
value; `LiveIntake` is the learner's subscription: messages from any number of publishers -> bag + episodes.
"""
from __future__ import annotations

import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from tdmpc_ros.config import Config
from tdmpc_ros.data.episode import Episode, Transition
from tdmpc_ros.data.transitions import episode_of


class TransitionError(ValueError):
    """A serialised Transition that cannot be used (malformed, or not matching the config): `kind` names the
    problem in a word or two, the message says exactly what."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


_CDR_ENDIAN = {b"\x00\x01": "<", b"\x00\x00": ">"}  # XCDR1 little / big endian: what rmw and rosbags write
_STRUCTS = {(e, c): struct.Struct(e + c) for e in _CDR_ENDIAN.values() for c in "iIQf?"}


class _CdrReader:
    """Reads the fields of a CDR buffer in order, each aligned to its size from the end of the 4-byte
    encapsulation header, never past the buffer's end."""

    def __init__(self, data: bytes, endian: str):
        self.data, self.endian, self.pos = data, endian, 4

    def _take(self, size: int, align: int) -> int:
        self.pos += -(self.pos - 4) % align
        at = self.pos
        if at + size > len(self.data):
            raise TransitionError("undecodable", f"truncated: the message ends at byte {len(self.data)}, "
                                                 f"inside a field")
        self.pos += size
        return at

    def scalar(self, code: str):
        unpack = _STRUCTS[self.endian, code]
        return unpack.unpack_from(self.data, self._take(unpack.size, unpack.size))[0]

    def skip_string(self) -> None:
        self._take(self.scalar("I"), 1)

    def floats(self, name: str, expected: int, setting: str) -> np.ndarray:
        count = self.scalar("I")
        if count != expected:  # before reading a single value: a huge array costs nothing more
            raise TransitionError("wrong size", f"{name} has {count} values but the config's {setting} is "
                                                f"{expected}")
        return np.frombuffer(self.data, self.endian + "f4", count, self._take(4 * count, 4))


def transition_cdr_bytes(obs_dim: int, action_dim: int) -> int:
    """Size of a serialised Transition with an empty frame_id: what the learner's queue holds per message."""
    # encapsulation 4, header + ids 28 (aligned), three array lengths 12, reward 4, flags 2, then the floats
    return 4 + 28 + 12 + 4 + 2 + 4 * (2 * obs_dim + action_dim)


def decode_transition(data: bytes, obs_dim: int, action_dim: int, max_steps: int) -> Transition:
    """One CDR-serialised Transition message, as a raw subscription receives it and a
    bag stores it. Every array's length is checked against the config before any value is read, then the step
    against `max_steps` and the values for NaN/inf; TransitionError says what is wrong."""
    endian = _CDR_ENDIAN.get(bytes(data[:2]))
    if endian is None:
        raise TransitionError("undecodable", f"not CDR-encoded (encapsulation {bytes(data[:4]).hex() or 'none'})")
    reader = _CdrReader(data, endian)
    stamp_ns = reader.scalar("i") * 1_000_000_000 + reader.scalar("I")
    reader.skip_string()  # header.frame_id
    episode_id, step = reader.scalar("Q"), reader.scalar("I")
    try:
        observation = reader.floats("observation", obs_dim, "model.obs_dim")
        action = reader.floats("action", action_dim, "model.action_dim")
        reward = reader.scalar("f")
        next_observation = reader.floats("next_observation", obs_dim, "model.obs_dim")
        terminated, truncated = reader.scalar("?"), reader.scalar("?")
        if step >= max_steps:
            raise TransitionError("step out of range", f"step {step} is beyond task.max_episode_steps ({max_steps})")
        for name, values in (("observation", observation), ("action", action), ("reward", reward),
                             ("next_observation", next_observation)):
            if not np.isfinite(values).all():
                raise TransitionError("NaN/inf", f"NaN/inf in {name}")
    except TransitionError as exc:
        raise TransitionError(exc.kind, f"episode {episode_id} step {step}: {exc}") from None
    return Transition(episode_id, step, observation, action, float(reward), next_observation, terminated, truncated,
                      stamp_ns)


@dataclass
class _Stream:
    """One publisher (a controller) of one arm: the last sequence number it was heard with and its open episode."""

    arm: str = ""
    last_seq: int | None = None
    heard: bool = False
    """Whether a message of it was accepted yet."""
    episode_id: int = 0
    first_step: int = 0
    steps: list[Transition] = field(default_factory=list)
    """Steps first_step.. of the open episode, stored in the bag; empty when none is open."""
    last_seen: float = 0.0
    """When it last sent anything."""
    last_stored: float = 0.0
    """When its open episode last grew."""


class LiveIntake:
    """The learner's live transitions: serialised messages from any number of publishers -> bag + episodes.

    Each publisher of each arm is a stream (a controller runs one episode at a time, in step order); episode ids
    are each arm's own (every controller counts from 0), so episodes go out tagged with their arm and the
    bag gets each arm's messages apart (`write`'s `arm`). Its DDS publication
    sequence numbers reveal every message missed on the way (counted exactly from the first message heard from it);
    a missed message, or a step out of order, closes the stream's open episode as cut short at its last consecutive
    step, and the rest of that episode is not stored (counted `cut`), so replay and the bags never hold a spliced
    episode. A new episode id closes the previous one as cut short (the controller's episode was interrupted: a
    fault, a new goal from outside, a reset, disabling, a restarted controller). The first episode heard from a
    publisher may start past step 0 (the learner started while that controller was mid-episode): it is kept from
    there, a whole tail. A malformed message (undecodable, sizes not the config's, NaN/inf, step beyond the episode
    limit) is rejected before it changes any episode or the bag. Open episodes are capped in number
    (`learner.max_open_episodes`, oldest closed first) and in age (`learner.open_episode_timeout_s`, by `expire`),
    each in length by `task.max_episode_steps`.

    published = stored + lost for every publisher since its first message heard; lost = missed + rejected + cut.
    """

    def __init__(self, cfg: Config, write: Callable[[bytes, int, bool], None], source: str = "",
                 clock: Callable[[], float] = time.monotonic):
        """`write(data, log_time_ns, episode_end, arm)` stores an accepted message (the online bags)."""
        self.obs_dim, self.action_dim = cfg.model.obs_dim, cfg.model.action_dim
        self.max_steps = cfg.task.max_episode_steps
        self.max_open = max(1, cfg.learner.max_open_episodes)
        self.timeout_s = cfg.learner.open_episode_timeout_s
        self.write = write
        self.source = source
        self.clock = clock
        self.received = self.stored = self.missed = self.rejected = self.cut = 0
        self._streams: dict[tuple[str, bytes], _Stream] = {}
        self._problems: dict[str, list] = {}  # kind -> [count, first example] since take_problems()

    @property
    def lost(self) -> int:
        """Messages published to this learner and not stored (missed in transport, rejected or cut)."""
        return self.missed + self.rejected + self.cut

    @property
    def open_episodes(self) -> int:
        return sum(1 for s in self._streams.values() if s.steps)

    def add(self, data: bytes, publisher: bytes, seq: int | None, log_time_ns: int, arm: str = "") -> list[Episode]:
        """One message from `publisher` (its GID) of `arm` (the namespace of the topic it came on, '' for a
        lone arm) with its publication sequence number (None where the middleware gives none: then only step
        gaps are seen); returns the episodes it completes or closes."""
        self.received += 1
        stream = self._streams.get((arm, publisher))
        if stream is None:
            stream = self._streams[arm, publisher] = _Stream(arm)
        stream.last_seen = self.clock()
        done: list[Episode] = []
        if seq is not None:
            if stream.last_seq is not None and seq > stream.last_seq + 1:
                gap = seq - stream.last_seq - 1
                self.missed += gap
                self._problem("missed in transport", gap, f"{gap} between sequence numbers {stream.last_seq} and "
                                                          f"{seq} of publisher {publisher.hex()}"
                                                          f"{f' of {arm}' if arm else ''}")
                done += self._close(stream, cut_short=True)
            stream.last_seq = max(seq, stream.last_seq or 0)
        try:
            contents = decode_transition(data, self.obs_dim, self.action_dim, self.max_steps)
        except TransitionError as exc:
            self.rejected += 1
            self._problem(f"rejected ({exc.kind})", 1, str(exc))
            return done
        episode_id, step = contents.episode_id, contents.step
        why = "its earlier steps were not stored"
        expected = stream.first_step + len(stream.steps)
        if stream.steps and (episode_id != stream.episode_id or step != expected):
            if episode_id == stream.episode_id:
                why = f"it came after step {expected - 1}"
            done += self._close(stream, cut_short=True)  # a new episode, or a step out of order in this one
        if not stream.steps:
            if step != 0 and stream.heard:
                self.cut += 1
                self._problem("not stored after a break in their episode", 1,
                              f"episode {episode_id} step {step}: {why}")
                return done
            done += self._make_room(stream)
            stream.episode_id, stream.first_step, stream.heard = episode_id, step, True
        stream.steps.append(contents)
        stream.last_stored = stream.last_seen
        end = contents.terminated or contents.truncated
        self.write(data, log_time_ns, end, stream.arm)
        self.stored += 1
        if end:
            done += self._close(stream, cut_short=False)
        return done

    def expire(self) -> list[Episode]:
        """Close episodes that got no step for `open_episode_timeout_s` as cut short; forget publishers silent
        that long."""
        now, done = self.clock(), []
        for key, stream in list(self._streams.items()):
            if now - stream.last_stored > self.timeout_s:
                done += self._close(stream, cut_short=True)
            if now - stream.last_seen > self.timeout_s:
                del self._streams[key]
        return done

    def take_problems(self) -> list[str]:
        """What was lost since the last call, one line per kind with its count and first example."""
        problems, self._problems = self._problems, {}
        return [f"{count} {kind} (first: {example})" for kind, (count, example) in problems.items()]

    def _problem(self, kind: str, count: int, example: str) -> None:
        entry = self._problems.setdefault(kind, [0, example])
        entry[0] += count

    def _make_room(self, opening: _Stream) -> list[Episode]:
        open_streams = [s for s in self._streams.values() if s.steps and s is not opening]
        if len(open_streams) < self.max_open:
            return []
        return self._close(min(open_streams, key=lambda s: s.last_stored), cut_short=True)

    def _close(self, stream: _Stream, cut_short: bool) -> list[Episode]:
        steps, stream.steps = stream.steps, []
        return [episode_of(steps, cut_short, self.source, stream.arm)] if steps else []
