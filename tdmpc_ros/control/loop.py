"""The controller's tick, free of ROS: state -> observation -> plan within budget -> safe target -> transition.

The control thread (control/ticker.py) feeds it joint samples, goals and the clock, and the node publishes what
`tick` returns. Everything that decides what the robot is commanded lives here, so it is tested without DDS and
fuzzed with hypothesis. Episodes are control/episode.py's: no episode starts, and no transition is sent, before
there is a model to control with; after one ends, the next starts through the arm's reset where it has one
(ResetHandshake), else at once on the same goal.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from tdmpc_ros.config import Config, ConfigError
from tdmpc_ros.control.episode import GIVE_UP, WAIT, EpisodeSteps, ResetHandshake
from tdmpc_ros.data.episode import Transition
from tdmpc_ros.control.inputs import FaultLatch, JointSample, SensorSample, read_joints, read_sensed
from tdmpc_ros.control.priority import normal_priority
from tdmpc_ros.control.stats import LatencyWindow
from tdmpc_ros.control.action_rule import ActionRule
from tdmpc_ros.control.actions import positive

PLANNING, POLICY_FALLBACK, HOLD, DISABLED = "planning", "policy_fallback", "hold", "disabled"
POSITION_TOLERANCE = 0.5  # rad beyond the safe limits before a measured position counts as a sensor fault
MAX_PLAUSIBLE_VELOCITY = 50.0  # rad/s


@dataclass
class TickResult:
    target: np.ndarray | None
    """Joint target to publish; None publishes nothing (disabled, waiting, or nothing safe known yet)."""
    mode: str
    transition: Transition | None = None
    log: list[str] = field(default_factory=list)
    """Faults and their end, a reset given up on: warnings."""
    ended: str | None = None
    """The episode the transition ended, as a log line."""


class ControlLoop:
    """Delta-position MPPI control of one arm, with the deadline fallback and the safety clips.

    `lockstep`: the world waits for each command, so plans always finish and nothing is sent while there is no
    model. `reset_arm()` asks the arm for a new episode (a new pose and goal) and says whether it could;
    `clock` is the clock of `tick`'s `now` and deadlines; `fk`/`ik` the arm's kinematics (ik: cartesian actions).
    """

    def __init__(self, cfg: Config, safe_lower, safe_upper, fk, seed: int = 0, lockstep: bool = False,
                 reset_arm: Callable[[], bool] = lambda: False, clock: Callable[[], float] = time.monotonic,
                 ik=None):
        self.cfg = cfg
        self.lockstep = lockstep
        self.lower = np.asarray(safe_lower, np.float64)
        self.upper = np.asarray(safe_upper, np.float64)
        # The safety rule's own preconditions, whatever built `cfg` (load_config checks them too); the values
        # are kept here, so a later change to `cfg` cannot reach the targets unchecked.
        self.set_action_scale(cfg.task.action_scale)
        self.set_exploration_noise(cfg.controller.exploration_noise)
        self.set_eval_mode(cfg.controller.eval_mode)
        self.max_tracking_error = positive("controller.max_tracking_error", cfg.controller.max_tracking_error)
        self.period = 1.0 / positive("task.control_rate_hz", cfg.task.control_rate_hz)
        self.budget = positive("controller.plan_budget", cfg.controller.plan_budget) * self.period
        n = len(cfg.task.joint_names)
        if self.lower.shape != (n,) or self.upper.shape != (n,) or not (
                np.isfinite(self.lower).all() and np.isfinite(self.upper).all() and (self.lower <= self.upper).all()):
            raise ConfigError(f"control loop: safe joint limits must be {n} finite pairs with lower <= upper, got "
                              f"{self.lower.tolist()} / {self.upper.tolist()}")
        self.episode = EpisodeSteps(cfg.task, self.lower, self.upper, fk)
        self.rule = ActionRule(cfg.task, self.lower, self.upper, fk, ik, self.max_tracking_error)
        self.reset = ResetHandshake(lockstep)
        self.reset_arm = reset_arm
        self.clock = clock
        self.rng = np.random.default_rng(seed)
        self.planner = None
        self.model_version = 0
        self.enabled = True
        self.held_target: np.ndarray | None = None  # the last target sent: what a hold keeps commanding
        self.fault = FaultLatch()
        self.latency = LatencyWindow()
        self.deadline_misses = 0
        self.ticks = 0
        self.episodes_ended = self.successes = 0
        self.mode = HOLD
        self._interrupted = False  # a fault cut the episode: the next good state starts a new one
        self._restart = False  # asked to end the episode now
        # Planning is heavy: it runs at normal priority even when the ticking thread is real time.
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="planner", initializer=normal_priority)
        self._plan_future = None

    # -- inputs (between ticks) ---------------------------------------------------------------------------
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

    @property
    def episode_id(self) -> int:
        return self.episode.episode_id

    def set_goal(self, goal) -> list[str]:
        """A goal: the one the arm's reset brought, else a new episode on it at once."""
        goal = np.asarray(goal, np.float64)
        if goal.shape != (3,) or not np.isfinite(goal).all():
            return [f"ignoring goal {goal.tolist()}: need 3 finite coordinates"]
        if not self.reset.offer_goal(goal):
            self._begin(goal)
        return []

    def restart(self) -> None:
        """End the episode at the next tick and start the next as after any episode (the arm's reset, if any)."""
        self._restart = True

    def set_enabled(self, enabled: bool) -> None:
        if not enabled:
            self._interrupt()  # re-enabled control starts a new episode from the measured positions
        self.enabled = enabled

    def set_action_scale(self, value) -> None:
        self.action_scale = positive("task.action_scale", value)

    def set_exploration_noise(self, value) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value >= 0):
            raise ConfigError(f"controller.exploration_noise: {value!r} must be a finite number >= 0")
        self.exploration_noise = float(value)

    def set_eval_mode(self, value) -> None:
        if not isinstance(value, bool):
            raise ConfigError(f"controller.eval_mode: {value!r} must be true or false")
        self.eval_mode = value

    # -- the tick -----------------------------------------------------------------------------------------
    def tick(self, sample: JointSample | None, now: float, deadline: float | None = None,
             sensed: dict[str, SensorSample] | None = None) -> TickResult:
        """One control step at `now` on the joint state `sample` and the newest message of each of the task's
        sensors (`sensed`, by name). In real time the plan must be ready by `deadline` (default: the plan
        budget from now) or the policy prior acts; in lockstep planning always finishes. A stale, missing or
        bad sensor is a state fault like a bad joint state."""
        self.ticks += 1
        if not self.enabled:
            self.mode = DISABLED
            return TickResult(None, DISABLED)
        timeout = self.cfg.controller.state_timeout
        joints = read_joints(sample, self.cfg.task.joint_names, now, timeout)
        fault = joints if isinstance(joints, str) else self._implausible(*joints)
        if fault is None and self.episode.task.sensors:
            values = read_sensed(self.episode.task.sensors, sensed or {}, now, timeout,
                                 sample.stamp_ns if self.lockstep else None)
            fault = values if isinstance(values, str) else None
        if fault is None and self.episode.goal is None:
            fault = "no goal received yet"
        log = [line] if (line := self.fault.update(fault)) else []
        if fault:
            self._interrupt()  # the step's outcome was not observed cleanly: end the episode
            return self._hold(self.held_target, log)
        q, qd = joints
        if self.held_target is None and not self.reset.pending:  # a state from before a reset is no pose to hold
            self.held_target = np.clip(q, self.lower, self.upper)
        if self.planner is None:  # no episode before there is a model to control with
            return self._hold(None if self.lockstep else self.held_target, log)
        if self._restart:
            self._restart = False  # a reset under way is the restart asked for
            if not self.reset.pending and self.episode.running and self._next_episode(now):
                return self._hold(None, log)
        if self.reset.pending:
            outcome = self.reset.outcome(sample.received, now)
            if outcome.state == WAIT:
                return self._hold(None, log)
            if outcome.state == GIVE_UP:
                log.append(f"{outcome.reason}: next episode on the {'new' if outcome.goal is not None else 'same'} goal")
            self._begin(outcome.goal)
        if self._interrupted:
            self._begin()
        transition = self.episode.observe(q, qd, values if self.episode.task.sensors else None)
        ended = self._ended_line(transition) if self.episode.ended else None
        if ended and self._next_episode(now):
            self.mode = HOLD
            return TickResult(None, HOLD, transition, log, ended)

        action, mode = self._act(self.episode.observation, deadline)
        if self.exploration_noise > 0 and not self.eval_mode:
            action = action + self.rng.normal(0.0, self.exploration_noise, action.shape)
        target, applied = self.rule.apply(action, self.episode.base_target(q), q, self.action_scale)
        self.episode.act(target, applied)
        self.held_target = target
        self.mode = mode
        return TickResult(target, mode, transition, log, ended)

    def _hold(self, target: np.ndarray | None, log: list[str]) -> TickResult:
        self.mode = HOLD
        return TickResult(target, HOLD, log=log)

    def _interrupt(self) -> None:
        if self.episode.running and not self.episode.ended:
            self._interrupted = True

    def _begin(self, goal=None) -> None:
        """A new episode (on the same goal if None): from the measured positions, with no warm start."""
        self._interrupted = False
        self.episode.begin(goal)
        if self.planner is not None:
            self.planner.reset()

    def _next_episode(self, now: float) -> bool:
        """After an episode: ask the arm for a new one (True: wait for its reset), else begin on the same goal."""
        if self.reset_arm():
            self.reset.request(now)
            self.held_target = None  # the arm holds its reset pose: nothing sent is worth holding any more
            return True
        self._begin()
        return False

    def _ended_line(self, transition: Transition) -> str:
        self.episodes_ended += 1
        self.successes += transition.terminated
        return (f"episode {transition.episode_id}: {'success' if transition.terminated else 'step limit'} after "
                f"{transition.step + 1} steps, final distance {self.episode.distance():.3f} m "
                f"({self.successes}/{self.episodes_ended} successes)")

    def _implausible(self, q: np.ndarray, qd: np.ndarray) -> str | None:
        """A state no arm can be in is a sensor fault, not something to plan from."""
        outside = (q < self.lower - POSITION_TOLERANCE) | (q > self.upper + POSITION_TOLERANCE)
        if outside.any():
            return f"joint state outside the joint limits: joints {np.flatnonzero(outside).tolist()}"
        if (np.abs(qd) > MAX_PLAUSIBLE_VELOCITY).any():
            return f"joint state velocity implausible: above {MAX_PLAUSIBLE_VELOCITY} rad/s"
        return None

    def _act(self, obs: np.ndarray, deadline: float | None) -> tuple[np.ndarray, str]:
        """The plan if it is ready by the deadline (always, in lockstep), else the policy prior's action."""
        if self.lockstep:
            start = time.perf_counter()
            action = self.planner.plan(obs, self.eval_mode)
            self.latency.add(time.perf_counter() - start)
            return action, PLANNING
        planning = self._plan_future is None or self._plan_future.done()
        if planning:
            start = time.perf_counter()
            self._plan_future = self._worker.submit(self.planner.plan, obs, self.eval_mode)
        # The fallback is computed up front (on this thread, while the worker plans): a missed deadline then
        # costs no extra time, and the command still goes out on schedule.
        fallback = self.planner.policy_action(obs, self.eval_mode)
        if planning:
            try:
                timeout = self.budget if deadline is None else max(deadline - self.clock(), 0.0)
                action = self._plan_future.result(timeout=timeout)
                self.latency.add(time.perf_counter() - start)
                return action, PLANNING
            except TimeoutError:
                pass  # still planning: it finishes in the background and is discarded
        self.deadline_misses += 1
        return fallback, POLICY_FALLBACK

    def close(self) -> None:
        self._worker.shutdown(wait=False, cancel_futures=True)
