"""Transition messages <-> Episodes: one message per control step, and episodes rebuilt exactly from them.

`bag_message` and `episode_messages` make rosbags Transition messages; `BagEpisodeAssembler` works on any
Transition-like object (rclpy or rosbags message: the fields of msg/Transition.msg) and rebuilds the episodes of
a bag. `arm_of_topic` and `arm_topic` map an arm to its transitions topic and back. The learner's live
subscription is in data/live_intake.py.
"""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from tdmpc_ros.config import Config
from tdmpc_ros.data.episode import Episode, Transition, stamp_ns
from tdmpc_ros.data.typestore import TRANSITION, typestore


class EpisodeError(ValueError):
    """An episode that cannot be used; the message says why (callers add the file and topic)."""


def _bag_transition(stamp: int, frame_id: str, episode_id: int, step: int, observation, action, reward: float,
                    next_observation, terminated: bool, truncated: bool):
    store = typestore()
    Header, Time = store.types["std_msgs/msg/Header"], store.types["builtin_interfaces/msg/Time"]
    return store.types[TRANSITION](
        header=Header(stamp=Time(sec=stamp // 1_000_000_000, nanosec=stamp % 1_000_000_000), frame_id=frame_id),
        episode_id=int(episode_id), step=int(step), observation=np.asarray(observation, np.float32),
        action=np.asarray(action, np.float32), reward=float(reward),
        next_observation=np.asarray(next_observation, np.float32), terminated=bool(terminated),
        truncated=bool(truncated))


def bag_message(msg):
    """The rosbags Transition (serialisable with typestore()) of any Transition-like message."""
    return _bag_transition(stamp_ns(msg), str(msg.header.frame_id), msg.episode_id, msg.step, msg.observation,
                           msg.action, msg.reward, msg.next_observation, msg.terminated, msg.truncated)


def episode_messages(episode: Episode, stamps_ns: np.ndarray) -> Iterator[object]:
    """rosbags Transition messages of an episode, one per step, with the given header stamps.

    An episode with neither flag set is written with `truncated` on its last step: it was cut short.
    """
    last = len(episode) - 1
    truncated = episode.truncated or not episode.terminated
    for t in range(len(episode)):
        yield _bag_transition(int(stamps_ns[t]), "", episode.episode_id, t, episode.observations[t],
                              episode.actions[t], episode.rewards[t], episode.observations[t + 1],
                              episode.terminated and t == last, truncated and t == last)


class BagEpisodeAssembler:
    """Builds Episodes from Transition messages fed one at a time (from a bag or a live topic).

    Steps are grouped by episode_id; an episode completes at the step flagged terminated or truncated. A
    bad complete episode (sizes not matching cfg.model, NaN, missing steps) is dropped; `problems()` says why.
    """

    def __init__(self, cfg: Config, source: str = "", arm: str = ""):
        """`arm`: the arm whose transitions these are (`arm_of_topic`), set on every episode."""
        self.obs_dim = cfg.model.obs_dim
        self.action_dim = cfg.model.action_dim
        self.source = source
        self.arm = arm
        self._open: dict[int, dict[int, Transition]] = {}
        self._duplicates: dict[int, int] = {}  # episode_id -> first step index seen twice
        self._errors: list[tuple[int, str]] = []

    def add(self, msg) -> list[Episode]:
        """Feed one message; returns the episodes it completes (none, or one, or a cut-short one it restarts)."""
        episode_id, step = int(msg.episode_id), int(msg.step)
        done: list[Episode] = []
        if step == 0 and 0 in self._open.get(episode_id, {}):
            done += self._finish(episode_id, cut_short=True)  # the id was reused (a restarted controller)
        steps = self._open.setdefault(episode_id, {})
        if step in steps:
            self._duplicates.setdefault(episode_id, step)
        steps[step] = Transition(episode_id, step, np.asarray(msg.observation, np.float32),
                                 np.asarray(msg.action, np.float32), float(msg.reward),
                                 np.asarray(msg.next_observation, np.float32), bool(msg.terminated),
                                 bool(msg.truncated), stamp_ns(msg))
        if msg.terminated or msg.truncated:
            done += self._finish(episode_id, cut_short=False)
        return done

    def take_errors(self) -> list[tuple[int, str]]:
        """(episode_id, reason) of each episode dropped since the last call."""
        errors, self._errors = self._errors, []
        return errors

    def problems(self) -> list[str]:
        """take_errors() as log lines naming the source."""
        return [f"{self.source or 'transitions'}: episode {episode_id} skipped: {reason}"
                for episode_id, reason in self.take_errors()]

    def flush(self) -> list[Episode]:
        """Close every open episode as cut short (truncated): the data ended before its final step."""
        done: list[Episode] = []
        for episode_id in list(self._open):
            done += self._finish(episode_id, cut_short=True)
        return done

    def _finish(self, episode_id: int, cut_short: bool) -> list[Episode]:
        steps = self._open.pop(episode_id)
        duplicate = self._duplicates.pop(episode_id, None)
        try:
            if duplicate is not None:
                raise EpisodeError(f"step {duplicate} appears twice")
            return [self._build(episode_id, steps, cut_short)]
        except EpisodeError as exc:
            self._errors.append((episode_id, str(exc)))
            return []

    def _build(self, episode_id: int, steps: dict[int, Transition], cut_short: bool) -> Episode:
        order = sorted(steps)
        if order[0] != 0:
            raise EpisodeError(f"gap in step indices: starts at step {order[0]}, not 0")
        for before, after in zip(order, order[1:]):
            if after != before + 1:
                raise EpisodeError(f"gap in step indices: step {before} is followed by step {after}")
        seq = [steps[i] for i in order]
        for name, size, setting in (("observation", self.obs_dim, "model.obs_dim"),
                                    ("next_observation", self.obs_dim, "model.obs_dim"),
                                    ("action", self.action_dim, "model.action_dim")):
            sizes = sorted({len(getattr(s, name)) for s in seq} - {size})
            if sizes:
                raise EpisodeError(f"{name} has {sizes[0]} values but the config's {setting} is {size}")
        episode = episode_of(seq, cut_short, self.source, self.arm)
        for name, values in (("observation", episode.observations), ("action", episode.actions),
                             ("reward", episode.rewards)):
            if not np.isfinite(values).all():
                step = int(np.argwhere(~np.isfinite(values.reshape(len(values), -1)))[0, 0])
                raise EpisodeError(f"NaN/inf in {name} at step {min(step, len(seq) - 1)}")
        return episode


def episode_of(seq: list[Transition], cut_short: bool, source: str, arm: str = "") -> Episode:
    """The Episode of consecutive steps; `cut_short`: the data ended before its final step."""
    return Episode(seq[-1].episode_id, np.stack([s.observation for s in seq] + [seq[-1].next_observation]),
                   np.stack([s.action for s in seq]), np.array([s.reward for s in seq], np.float32),
                   terminated=seq[-1].terminated, truncated=seq[-1].truncated or cut_short,
                   stamps_ns=np.array([s.stamp_ns for s in seq], np.int64), source=source, arm=arm)


def arm_of_topic(topic: str) -> str:
    """The arm a transitions topic belongs to: its namespace without the leading slash (`/arm0/transitions`
    -> `arm0`, `/transitions` -> ''), as the learner's online bags name each arm's topic."""
    return topic.strip("/").rpartition("/")[0]


def arm_topic(arm: str) -> str:
    """The bag topic of an arm's transitions (the inverse of `arm_of_topic`)."""
    return f"/{arm}/transitions" if arm else "/transitions"
