"""The controller's tick, free of ROS: state -> observation -> plan within budget -> safe target -> transition.

The node feeds it joint samples, goals and the clock, and publishes what `tick` returns. Everything that
decides what the robot is commanded lives here, so it is tested without DDS and fuzzed with hypothesis.
"""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from tdmpc_ros.config import Config, ConfigError
from tdmpc_ros.control.priority import normal_priority
from tdmpc_ros.control.state import FaultLatch, JointSample, read_joints
from tdmpc_ros.control.stats import LatencyWindow
from tdmpc_ros.task import EpisodeTracker, ReachTask, apply_action, positive

PLANNING, POLICY_FALLBACK, HOLD, DISABLED = "planning", "policy_fallback", "hold", "disabled"
POSITION_TOLERANCE = 0.5  # rad beyond the safe limits before a measured position counts as a sensor fault
MAX_PLAUSIBLE_VELOCITY = 50.0  # rad/s


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


@dataclass
class TickResult:
    target: np.ndarray | None
    """Joint target to publish; None publishes nothing (disabled, or nothing safe known yet)."""
    mode: str
    transition: Transition | None = None
    log: list[str] = field(default_factory=list)


class ControlLoop:
    """Delta-position MPPI control of one arm, with the deadline fallback and the safety clips."""

    def __init__(self, cfg: Config, safe_lower, safe_upper, fk, seed: int = 0):
        self.cfg = cfg
        self.task = ReachTask(cfg.task)
        self.tracker = EpisodeTracker(cfg.task)
        self.lower = np.asarray(safe_lower, np.float64)
        self.upper = np.asarray(safe_upper, np.float64)
        # The safety rule's own preconditions, whatever built `cfg` (load_config checks them too); the values
        # are kept here, so a later change to `cfg` cannot reach the targets unchecked.
        self.action_scale = positive("task.action_scale", cfg.task.action_scale)
        self.max_tracking_error = positive("controller.max_tracking_error", cfg.controller.max_tracking_error)
        self.period = 1.0 / positive("task.control_rate_hz", cfg.task.control_rate_hz)
        self.budget = positive("controller.plan_budget", cfg.controller.plan_budget) * self.period
        n = len(cfg.task.joint_names)
        if self.lower.shape != (n,) or self.upper.shape != (n,) or not (
                np.isfinite(self.lower).all() and np.isfinite(self.upper).all() and (self.lower <= self.upper).all()):
            raise ConfigError(f"control loop: safe joint limits must be {n} finite pairs with lower <= upper, got "
                              f"{self.lower.tolist()} / {self.upper.tolist()}")
        self.fk = fk
        self.rng = np.random.default_rng(seed)
        self.planner = None
        self.model_version = 0
        self.enabled = True
        self.last_target: np.ndarray | None = None  # base of the next delta step (None: from measured q)
        self.held_target: np.ndarray | None = None  # the last target sent: what a hold keeps commanding
        self.goal: np.ndarray | None = None
        self.episode_id = 0
        self.fault = FaultLatch()
        self.latency = LatencyWindow()
        self.deadline_misses = 0
        self.ticks = 0
        self.mode = HOLD
        self._pending: tuple[np.ndarray, np.ndarray] | None = None  # (observation, applied action) awaiting its outcome
        self._episode_over = False
        self._interrupted = False  # a fault cut the episode: the next good state starts a new one
        # Planning is heavy: it runs at normal priority even when the ticking thread is real time.
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="planner", initializer=normal_priority)
        self._plan_future = None

    # -- inputs -------------------------------------------------------------------------------------------
    def set_planner(self, planner, version: int) -> None:
        """Use a new planner from the next tick; the warm start of the old one is dropped with it."""
        self.planner = planner
        self.model_version = version

    def install(self, planner, model, version: int) -> bool:
        """Swap in a new planner, or copy new weights into the current one, between ticks.

        False while a late plan still runs on the worker thread (its weights must not change under it):
        call again next tick.
        """
        if self._plan_future is not None and not self._plan_future.done():
            return False
        if planner is not None:
            self.set_planner(planner, version)
        else:
            self.planner.set_model(model)
            self.model_version = version
        return True

    @property
    def model_cfg(self):
        """The current planner's model config (None before the first model)."""
        return self.planner.model.cfg if self.planner is not None else None

    def set_goal(self, goal) -> list[str]:
        """A new goal starts a new episode (the sim publishes one per episode)."""
        goal = np.asarray(goal, np.float64)
        if goal.shape != (3,) or not np.isfinite(goal).all():
            return [f"ignoring goal {goal.tolist()}: need 3 finite coordinates"]
        self.goal = goal
        self.new_episode()
        return []

    def new_episode(self) -> None:
        """Drop the pending step (its outcome belongs to the old episode), clear warm start, re-seed target."""
        if self._pending is not None or self.tracker.steps:
            self.episode_id += 1
        self._pending = None
        self._episode_over = False
        self.tracker.reset()
        self.last_target = None  # re-initialised from the measured positions at the next good state
        if self.planner is not None:
            self.planner.reset()

    def set_enabled(self, enabled: bool) -> None:
        if enabled and not self.enabled:
            self.last_target = None  # restart from the measured positions
            self._pending = None
        self.enabled = enabled

    # -- the tick -----------------------------------------------------------------------------------------
    def tick(self, sample: JointSample | None, now: float, realtime: bool = True,
             deadline: float | None = None) -> TickResult:
        """One control step. In real time the plan must be ready by `deadline` (time.monotonic(); default:
        the plan budget from now) or the policy prior acts; otherwise planning always finishes."""
        self.ticks += 1
        if not self.enabled:
            self.mode = DISABLED
            return TickResult(None, DISABLED)
        joints = read_joints(sample, self.cfg.task.joint_names, now, self.cfg.controller.state_timeout)
        fault = joints if isinstance(joints, str) else self._implausible(*joints)
        if fault is None and self.goal is None:
            fault = "no goal received yet"
        log = [line] if (line := self.fault.update(fault)) else []
        if fault:
            if self._pending is not None or self.tracker.steps:
                self._interrupted = True  # the step's outcome was not observed cleanly: end the episode
            self.mode = HOLD
            return TickResult(self.held_target, HOLD, log=log)
        if self._interrupted:
            self._interrupted = False
            self.new_episode()
        q, qd = joints
        if self.last_target is None:
            self.last_target = np.clip(q, self.lower, self.upper)
            if self.held_target is None:
                self.held_target = self.last_target
        ee = self.fk(q)
        obs = self.task.observation(q, qd, ee, self.goal)
        transition = self._close_step(obs, ee)
        if self._episode_over or self.planner is None:
            self.mode = HOLD
            return TickResult(self.held_target, HOLD, transition, log)

        action, mode = self._act(obs, realtime, deadline)
        if self.cfg.controller.exploration_noise > 0 and not self.cfg.controller.eval_mode:
            action = action + self.rng.normal(0.0, self.cfg.controller.exploration_noise, action.shape)
        target, applied = apply_action(action, self.last_target, q, self.lower, self.upper,
                                       self.action_scale, self.max_tracking_error)
        self.last_target = self.held_target = target
        self._pending = (obs, applied)
        self.mode = mode
        return TickResult(target, mode, transition, log)

    def _implausible(self, q: np.ndarray, qd: np.ndarray) -> str | None:
        """A state no arm can be in is a sensor fault, not something to plan from."""
        outside = (q < self.lower - POSITION_TOLERANCE) | (q > self.upper + POSITION_TOLERANCE)
        if outside.any():
            return f"joint state outside the joint limits: joints {np.flatnonzero(outside).tolist()}"
        if (np.abs(qd) > MAX_PLAUSIBLE_VELOCITY).any():
            return f"joint state velocity implausible: above {MAX_PLAUSIBLE_VELOCITY} rad/s"
        return None

    def _close_step(self, obs: np.ndarray, ee: np.ndarray) -> Transition | None:
        """The outcome of the previous tick's action, as a transition; ends the episode when the task says so."""
        if self._pending is None:
            return None
        prev_obs, applied = self._pending
        self._pending = None
        terminated, truncated = self.tracker.step(self.task.within_radius(ee, self.goal))
        transition = Transition(self.episode_id, self.tracker.steps - 1, prev_obs, applied,
                                self.task.reward(ee, self.goal), obs, terminated, truncated)
        if terminated or truncated:
            # Hold until the next goal (the sim resets itself on the same condition); a real arm gets a
            # fresh episode on the same goal.
            self._episode_over = True
        return transition

    def _act(self, obs: np.ndarray, realtime: bool, deadline: float | None) -> tuple[np.ndarray, str]:
        """The plan if it is ready by the deadline (always, when not real time), else the policy prior's action."""
        eval_mode = self.cfg.controller.eval_mode
        if not realtime:
            start = time.perf_counter()
            action = self.planner.plan(obs, eval_mode)
            self.latency.add(time.perf_counter() - start)
            return action, PLANNING
        planning = self._plan_future is None or self._plan_future.done()
        if planning:
            start = time.perf_counter()
            self._plan_future = self._worker.submit(self.planner.plan, obs, eval_mode)
        # The fallback is computed up front (on this thread, while the worker plans): a missed deadline then
        # costs no extra time, and the command still goes out on schedule.
        fallback = self.planner.policy_action(obs, eval_mode)
        if planning:
            try:
                timeout = self.budget if deadline is None else max(deadline - time.monotonic(), 0.0)
                action = self._plan_future.result(timeout=timeout)
                self.latency.add(time.perf_counter() - start)
                return action, PLANNING
            except TimeoutError:
                pass  # still planning: it finishes in the background and is discarded
        self.deadline_misses += 1
        return fallback, POLICY_FALLBACK

    @property
    def episode_over(self) -> bool:
        """The task ended the episode; control holds until a new goal (or restart_episode)."""
        return self._episode_over

    def restart_episode(self) -> None:
        """For arms with no episode resets of their own: the next episode on the same goal."""
        self.new_episode()

    def close(self) -> None:
        self._worker.shutdown(wait=False, cancel_futures=True)
