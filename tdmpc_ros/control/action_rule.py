"""From an action in `task.action_space` to a safe joint target: the one rule of the controller and the sim env.

joint: the joint-position delta of control/actions.py's `apply_action`. cartesian: the action is an
end-effector position delta, ee(last target) + clip(a, -1, 1) * task.cartesian_scale (kept inside the workspace
box), which IK turns into joint positions near the last target (keeping its end-effector orientation with
task.hold_orientation); that joint step then passes the very same
joint clips (within action_scale per joint, within max_tracking_error of the measured joints, inside the limits
less the margin). Both spaces then pass the workspace box (task.workspace_low/high, base frame): a target whose
end effector (FK) lies outside is shrunk toward the last target until it is inside, by bisection, down to
holding the last target. When the last target is itself outside the box (an episode starting from a measured
pose outside it), a step is taken only as far as it does not move the end effector farther from the box, so
the arm can come back in and never strays further.

The applied action, what the learner trains on, is the step actually taken in the action space's own units:
(target - last target) / action_scale, or (ee(target) - ee(last target)) / cartesian_scale, clipped to [-1, 1].
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

from tdmpc_ros.config import ConfigError, TaskConfig
from tdmpc_ros.control.actions import apply_action, positive

BISECTIONS = 8  # the shrunk step is within 1/256 of the largest one that keeps the end effector in the box
IK_ITERATIONS = 20  # a tick's IK target is a few cm away: damped least squares converges in a few iterations


def box_distance(xyz: np.ndarray, low: np.ndarray, high: np.ndarray) -> float:
    """Euclidean distance from a point to the box (0 inside)."""
    return float(np.linalg.norm(xyz - np.clip(xyz, low, high)))


class ActionRule:
    """Actions of task.action_space to joint targets inside the joint limits less the margin and the box."""

    def __init__(self, task: TaskConfig, safe_lower, safe_upper, fk: Callable[[np.ndarray], np.ndarray],
                 ik: Callable[..., np.ndarray] | None = None, max_tracking_error: float | None = None):
        self.space = task.action_space
        self.lower = np.asarray(safe_lower, np.float64)
        self.upper = np.asarray(safe_upper, np.float64)
        self.fk, self.ik = fk, ik
        self.max_tracking_error = max_tracking_error
        self.cartesian_scale = positive("task.cartesian_scale", task.cartesian_scale)
        self.hold_orientation = task.hold_orientation
        self.box_low = np.asarray(task.workspace_low, np.float64)
        self.box_high = np.asarray(task.workspace_high, np.float64)
        if not (self.box_low.shape == self.box_high.shape == (3,) and np.isfinite(self.box_low).all()
                and np.isfinite(self.box_high).all() and (self.box_low <= self.box_high).all()):
            raise ConfigError(f"task.workspace_low/workspace_high: {task.workspace_low} / {task.workspace_high} "
                              "must be 3 finite values each, low <= high")
        if self.space == "cartesian" and ik is None:
            raise ConfigError("task.action_space cartesian: needs the arm's inverse kinematics")
        self.action_dim = task.action_dim
        self._last: tuple[np.ndarray, np.ndarray] | None = None  # (target, its ee): the next tick starts there

    def _fk(self, q: np.ndarray) -> np.ndarray:
        if self._last is not None and np.array_equal(self._last[0], q):
            return self._last[1]
        return self.fk(q)

    def apply(self, action, last_target, q_measured, action_scale: float) -> tuple[np.ndarray, np.ndarray]:
        """(joint target, applied action) for `action` taken from `last_target` (assumed inside the limits)."""
        last_target = np.asarray(last_target, np.float64)
        ee_last = self._fk(last_target)
        if self.space == "cartesian":
            a = np.clip(np.nan_to_num(np.asarray(action, np.float64), nan=0.0, posinf=1.0, neginf=-1.0), -1, 1)
            if a.shape != (3,):
                raise ValueError(f"cartesian action: expected 3 values (x, y, z), got shape {a.shape}")
            goal = ee_last + a * self.cartesian_scale
            if box_distance(ee_last, self.box_low, self.box_high) == 0.0:
                goal = np.clip(goal, self.box_low, self.box_high)
            step = (self.ik(goal, last_target, iterations=IK_ITERATIONS, keep_orientation=self.hold_orientation)
                    - last_target) / action_scale
        else:
            step = action
        target, _ = apply_action(step, last_target, q_measured, self.lower, self.upper, action_scale,
                                 self.max_tracking_error)
        target, ee = self._in_box(last_target, ee_last, target)
        self._last = (target, ee)
        if self.space == "cartesian":
            applied = np.clip((ee - ee_last) / self.cartesian_scale, -1.0, 1.0)
        else:
            applied = np.clip((target - last_target) / action_scale, -1.0, 1.0)
        return target, applied.astype(np.float32)

    def _in_box(self, base: np.ndarray, ee_base: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The largest part of the step base -> target (found by bisection) whose end effector is in the box,
        or no farther from it than the base's; returns it with its end effector."""
        allowed = box_distance(ee_base, self.box_low, self.box_high)
        ee = self.fk(target)
        if box_distance(ee, self.box_low, self.box_high) <= allowed:
            return target, ee
        good, good_ee, bad = 0.0, ee_base, 1.0
        for _ in range(BISECTIONS):
            mid = (good + bad) / 2
            ee = self.fk(base + mid * (target - base))
            if box_distance(ee, self.box_low, self.box_high) <= allowed:
                good, good_ee = mid, ee
            else:
                bad = mid
        return base + good * (target - base), good_ee

    def ee_path(self, actions, start_target, action_scale: float) -> np.ndarray:
        """End-effector positions (len(actions) + 1, 3) along an action sequence (a plan's mean) from
        `start_target`, each step through this rule as the controller would take it."""
        q, points = np.asarray(start_target, np.float64), [self._fk(np.asarray(start_target, np.float64))]
        for action in actions:
            q, _ = self.apply(action, q, None, action_scale)
            points.append(self._last[1])
        return np.array(points)

    def from_joint_action(self, joint_action, last_target, action_scale: float) -> np.ndarray:
        """This space's action for the joint step `joint_action` from `last_target` (how a joint-space scripted
        expert acts in the cartesian space: the end-effector move its joint step would make)."""
        if self.space != "cartesian":
            return np.asarray(joint_action, np.float32)
        last_target = np.asarray(last_target, np.float64)
        q = np.clip(last_target + np.clip(joint_action, -1, 1) * action_scale, self.lower, self.upper)
        return np.clip((self.fk(q) - self.fk(last_target)) / self.cartesian_scale, -1, 1).astype(np.float32)
