"""Every task's episodes: the one state machine of the controller, the sim env and raw-bag rebuilding, and how
the controller starts the next one.

A step is observation -> applied action -> outcome, and the next observation closes it: its reward, and
whether the task ended the episode (within the goal for `task.success_hold_steps` observations in a row:
terminated; `task.max_episode_steps` steps: truncated). The task (tdmpc_ros/tasks/) says what the observation,
the reward and "within the goal" are; everything is judged from the measured joints (end effector by forward
kinematics) and the task's sensed values, as the controller sees them, so the sim, the controller and a rebuilt
recording can not disagree about an episode. Each episode's first delta-position step starts from the measured
joints clipped to the safe limits. What follows an ended episode is the caller's: the sim env's reset; raw-bag
rebuilding, the next goal or the next command on the same goal; the controller, as below.

The controller's episode logic is the one authority on episodes; the sim arm has no episode clock or success
test of its own. The controller rather than the arm, because only the controller judges the task as the
learner sees it, because it works the same on a real arm, which knows nothing of episodes, and because a
JointState has no field an arm could stamp an episode id into. At an episode's end the controller calls the
arm's reset service (the sim arm's `~/reset`, std_srvs/Trigger: a new home pose and a new goal); with an arm
that has none it goes on at once with the next episode on the same goal.

Between the request and the next episode the controller commands nothing (`ResetHandshake`). It starts the
episode once it holds the reset's outcome: the answer, a goal received since the request and a joint state
measured after the reset. Which states those are: in lockstep the arm publishes one only after a command or a
reset, so any state received after the request; in real time states stream all along, so one received after
the answer. A refused request, or an outcome not complete within RESET_TIMEOUT_S, ends the wait: the next
episode runs on the newest goal there is.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from tdmpc_ros.config import TaskConfig
from tdmpc_ros.data.episode import Transition
from tdmpc_ros.tasks import make_task

RESET_TIMEOUT_S = 5.0
WAIT, READY, GIVE_UP = "wait", "ready", "give up"  # the states of a reset's outcome


class EpisodeTracker:
    """Counts steps and within-goal streaks; says when an episode terminates (success) or truncates."""

    def __init__(self, cfg: TaskConfig):
        self.cfg = cfg
        self.reset()

    def reset(self) -> None:
        self.steps = 0
        self.streak = 0

    def step(self, within_goal: bool) -> tuple[bool, bool]:
        """Record one step; returns (terminated, truncated)."""
        self.steps += 1
        self.streak = self.streak + 1 if within_goal else 0
        terminated = self.streak >= self.cfg.success_hold_steps
        truncated = not terminated and self.steps >= self.cfg.max_episode_steps
        return terminated, truncated


class EpisodeSteps:
    """One arm's current episode: observe -> act -> observe closes the step; `ended` once the task says so."""

    def __init__(self, task: TaskConfig, safe_lower, safe_upper, fk: Callable[[np.ndarray], np.ndarray]):
        self.task = make_task(task)
        self.tracker = EpisodeTracker(task)
        self.lower = np.asarray(safe_lower, np.float64)
        self.upper = np.asarray(safe_upper, np.float64)
        self.fk = fk
        self.goal: np.ndarray | None = None
        self.episode_id = 0
        self.observation: np.ndarray | None = None  # the latest one: what the next action is taken from
        self.ee: np.ndarray | None = None  # the end effector of the latest observation
        self.sensed: dict[str, np.ndarray] = {}  # the task's sensed values of the latest observation
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

    def observe(self, q, qd, sensed: dict[str, np.ndarray] | None = None) -> Transition | None:
        """Take in measured joints and the task's sensed values: the new observation, and the step it closes
        (None if none was pending)."""
        ee, sensed = self.fk(q), sensed or {}
        obs = self.task.observation(q, qd, ee, self.goal, sensed)
        self.observation, self.ee, self.sensed = obs, ee, sensed
        if self._pending is None:
            return None
        (previous, applied), self._pending = self._pending, None
        terminated, truncated = self.tracker.step(self.task.within_goal(ee, self.goal, sensed))
        self.ended = terminated or truncated
        return Transition(self.episode_id, self.tracker.steps - 1, previous, applied,
                          self.task.reward(ee, self.goal, sensed), obs, terminated, truncated)

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
        """The task's distance to the goal at the latest observation (m)."""
        return self.task.distance(self.ee, self.goal, self.sensed)


@dataclass
class ResetOutcome:
    state: str
    """WAIT (command nothing yet), READY (the reset is complete) or GIVE_UP (go on without it)."""
    goal: np.ndarray | None = None
    """The goal received since the request, if any."""
    reason: str = ""
    """Why the controller gives up waiting."""


class ResetHandshake:
    """One reset request at a time; times are the caller's clock (time.monotonic() in the controller)."""

    def __init__(self, lockstep: bool, timeout_s: float = RESET_TIMEOUT_S):
        self.lockstep = lockstep
        self.timeout_s = timeout_s
        self.pending = False
        self._requested_at = 0.0
        self._answered_at: float | None = None
        self._refusal = ""
        self._goal: np.ndarray | None = None

    def request(self, now: float) -> None:
        self.pending = True
        self._requested_at, self._answered_at = now, None
        self._refusal, self._goal = "", None

    def answered(self, success: bool, message: str, now: float) -> None:
        """The arm's answer (a late answer to an abandoned request changes nothing)."""
        if not self.pending:
            return
        if success:
            self._answered_at = now
        else:
            self._refusal = f"the arm refused the reset ({message or 'no reason given'})"

    def offer_goal(self, goal: np.ndarray) -> bool:
        """A goal that arrived while waiting: the reset's, kept for the next episode. False if not waiting."""
        if self.pending:
            self._goal = goal
        return self.pending

    def outcome(self, received: float | None, now: float) -> ResetOutcome:
        """Whether the next episode can start, given when the newest joint state was received (None: none)."""
        if not self.pending:
            return ResetOutcome(READY)
        since = self._requested_at if self.lockstep else self._answered_at
        if self._answered_at is not None and self._goal is not None and received is not None \
                and since is not None and received > since:
            self.pending = False
            return ResetOutcome(READY, self._goal)
        if self._refusal or now - self._requested_at > self.timeout_s:
            self.pending = False
            missing = [what for what, there in (("answer", self._answered_at is not None),
                                                ("new goal", self._goal is not None)) if not there]
            reason = self._refusal or (f"no {' or '.join(missing) or 'joint state after the reset'} within "
                                       f"{self.timeout_s:g} s of the reset request")
            return ResetOutcome(GIVE_UP, self._goal, reason)
        return ResetOutcome(WAIT)
