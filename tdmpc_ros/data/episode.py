"""The unit of data everywhere: one episode of the task, as the controller applied it."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Transition:
    """One control step as the controller closed it (and a Transition message or bag record carries it)."""

    episode_id: int
    step: int
    observation: np.ndarray
    action: np.ndarray
    reward: float
    next_observation: np.ndarray
    terminated: bool
    truncated: bool
    stamp_ns: int = 0
    """Header stamp (ns) of the step, 0 where unknown."""


@dataclass
class Episode:
    """T control steps: T+1 observations, T actions and rewards."""

    episode_id: int
    observations: np.ndarray
    """[T+1, obs_dim] float32: observation before each step, then the last next-observation."""
    actions: np.ndarray
    """[T, action_dim] float32: normalised actions actually applied, in [-1, 1]."""
    rewards: np.ndarray
    """[T] float32: task reward after each step."""
    terminated: bool = False
    """The last step ended the episode by success (no bootstrap from the final observation)."""
    truncated: bool = False
    """The episode hit its step limit or was cut short."""
    stamps_ns: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    """[T] header stamps (ns) of the steps, 0 where unknown."""
    source: str = ""
    """Where it came from (a bag path), for messages."""
    arm: str = ""
    """The arm that recorded it (its namespace in a fleet, e.g. arm0; '' for a lone arm): episode ids are
    each arm's own, so (arm, episode_id) names an episode."""

    def __post_init__(self) -> None:
        self.observations = np.asarray(self.observations, np.float32)
        self.actions = np.asarray(self.actions, np.float32)
        self.rewards = np.asarray(self.rewards, np.float32).reshape(-1)
        if len(self.stamps_ns) == 0:
            self.stamps_ns = np.zeros(len(self.actions), np.int64)
        steps = len(self.actions)
        if self.observations.shape[0] != steps + 1 or self.rewards.shape[0] != steps:
            raise ValueError(f"episode {self.episode_id} ({self.source or 'memory'}): {steps} actions need "
                             f"{steps + 1} observations and {steps} rewards, got {self.observations.shape[0]} "
                             f"and {self.rewards.shape[0]}")

    def __len__(self) -> int:
        return len(self.actions)

    @property
    def success(self) -> bool:
        return self.terminated

    @property
    def episode_return(self) -> float:
        return float(self.rewards.sum())


def stamp_ns(msg) -> int:
    """A stamped message's header stamp in nanoseconds."""
    stamp = msg.header.stamp
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)
