"""The reach task's episodes as steps: the one state machine of the controller, ReachEnv and raw-bag rebuilding.

A step is observation -> applied action -> outcome, and the next observation closes it: its reward, and
whether the task ended the episode (in the success radius for `task.success_hold_steps` observations in a row:
terminated; `task.max_episode_steps` steps: truncated). Everything is judged from the measured joints (end
effector by forward kinematics), as the controller sees the arm, so the sim, the controller and a rebuilt
recording can not disagree about an episode. Each episode's first delta-position step starts from the measured
joints clipped to the safe limits.

What follows an ended episode is the caller's: ReachEnv's reset; the controller asks the arm for a new pose and
goal where it can (control/reset.py), else goes on at once on the same goal; raw-bag rebuilding does the same
from what was recorded (the next goal, or the next command on the same goal).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from tdmpc_ros.config import TaskConfig
from tdmpc_ros.task import EpisodeTracker, ReachTask


@dataclass
class Transition:
    episode_id: int
    step: int
    observation: np.ndarray
    action: np.ndarray
    reward: float
    next_observation: np.ndarray
    terminated: bool
    truncated: bool


class EpisodeSteps:
    """One arm's current episode: observe -> act -> observe closes the step; `ended` once the task says so."""

    def __init__(self, task: TaskConfig, safe_lower, safe_upper, fk: Callable[[np.ndarray], np.ndarray]):
        self.task = ReachTask(task)
        self.tracker = EpisodeTracker(task)
        self.lower = np.asarray(safe_lower, np.float64)
        self.upper = np.asarray(safe_upper, np.float64)
        self.fk = fk
        self.goal: np.ndarray | None = None
        self.episode_id = 0
        self.observation: np.ndarray | None = None  # the latest one: what the next action is taken from
        self.ee: np.ndarray | None = None  # the end effector of the latest observation
        self.last_target: np.ndarray | None = None  # base of the next delta step (None: from the measured joints)
        self.ended = False
        self._pending: tuple[np.ndarray, np.ndarray] | None = None  # (observation, applied action) awaiting its outcome

    @property
    def running(self) -> bool:
        """The episode has taken a step (so the next one gets a new id)."""
        return self._pending is not None or self.tracker.steps > 0

    def begin(self, goal=None) -> None:
        """A new episode on `goal` (None: the same goal). A step awaiting its outcome belongs to the old one
        and is dropped; the next step starts from the measured joints."""
        if self.running:
            self.episode_id += 1
        if goal is not None:
            self.goal = np.asarray(goal, np.float64)
        self._pending = None
        self.ended = False
        self.tracker.reset()
        self.last_target = None

    def observe(self, q, qd) -> Transition | None:
        """Take in measured joints: the new observation, and the step it closes (None if none was pending)."""
        ee = self.fk(q)
        obs = self.task.observation(q, qd, ee, self.goal)
        self.observation, self.ee = obs, ee
        if self._pending is None:
            return None
        (previous, applied), self._pending = self._pending, None
        terminated, truncated = self.tracker.step(self.task.within_radius(ee, self.goal))
        self.ended = terminated or truncated
        return Transition(self.episode_id, self.tracker.steps - 1, previous, applied,
                          self.task.reward(ee, self.goal), obs, terminated, truncated)

    def base_target(self, q) -> np.ndarray:
        """Where the next delta step starts: the last target, or at an episode's start the measured joints
        clipped to the safe limits."""
        if self.last_target is None:
            self.last_target = np.clip(np.asarray(q, np.float64), self.lower, self.upper)
        return self.last_target

    def act(self, target, applied) -> None:
        """The step taken from the latest observation: `target` sent, `applied` its normalised action."""
        self._pending = (self.observation, np.asarray(applied, np.float32))
        self.last_target = np.asarray(target, np.float64)

    def distance(self) -> float:
        """End effector to goal at the latest observation (m)."""
        return self.task.distance(self.ee, self.goal)
