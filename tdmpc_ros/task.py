"""The reach task and the delta-position action interface: one definition for sim, controller and learner.

Observation layout (float32, obs_dim = 2 * n_joints + 9):
    q (n) | 0.1 * qd (n) | end effector xyz (3) | goal xyz (3) | goal - end effector (3)
Reward: -||goal - end effector||. Success: within `success_radius` for `success_hold_steps` steps in a row.
"""
from __future__ import annotations

import math

import numpy as np

from tdmpc_ros.config import ConfigError, TaskConfig

VELOCITY_SCALE = 0.1  # keeps joint velocities (rad/s) near the range of the other observation entries


class ReachTask:
    """Observation, reward and success for reaching a goal point with the end effector."""

    def __init__(self, cfg: TaskConfig):
        self.cfg = cfg
        self.n_joints = len(cfg.joint_names)

    @property
    def obs_dim(self) -> int:
        return self.cfg.obs_dim

    def observation(self, q, qd, ee, goal) -> np.ndarray:
        q, qd = np.asarray(q, np.float64), np.asarray(qd, np.float64)
        ee, goal = np.asarray(ee, np.float64), np.asarray(goal, np.float64)
        if q.shape != (self.n_joints,) or qd.shape != (self.n_joints,):
            raise ValueError(f"observation: expected {self.n_joints} joint positions and velocities, "
                             f"got {q.shape} and {qd.shape}")
        return np.concatenate([q, VELOCITY_SCALE * qd, ee, goal, goal - ee]).astype(np.float32)

    @staticmethod
    def distance(ee, goal) -> float:
        return float(np.linalg.norm(np.asarray(goal, np.float64) - np.asarray(ee, np.float64)))

    def reward(self, ee, goal) -> float:
        return -self.distance(ee, goal)

    def within_radius(self, ee, goal) -> bool:
        return self.distance(ee, goal) <= self.cfg.success_radius

    def sample_goal(self, rng: np.random.Generator) -> np.ndarray:
        return rng.uniform(self.cfg.goal_low, self.cfg.goal_high)


class EpisodeTracker:
    """Counts steps and in-radius streaks; says when an episode terminates (success) or truncates."""

    def __init__(self, cfg: TaskConfig):
        self.cfg = cfg
        self.reset()

    def reset(self) -> None:
        self.steps = 0
        self.streak = 0

    def step(self, within_radius: bool) -> tuple[bool, bool]:
        """Record one step; returns (terminated, truncated)."""
        self.steps += 1
        self.streak = self.streak + 1 if within_radius else 0
        terminated = self.streak >= self.cfg.success_hold_steps
        truncated = not terminated and self.steps >= self.cfg.max_episode_steps
        return terminated, truncated


def apply_action(action, last_target, q_measured, lower, upper, action_scale: float,
                 max_tracking_error: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Delta-position scaling with the safety clips; returns (target, applied normalised action).

    target = clip(last_target + clip(a, -1, 1) * action_scale, lower, upper), also within max_tracking_error
    of the measured position. Non-finite action entries count as 0 (hold). `lower`/`upper` are the joint
    limits less the margin. The applied action, (target - last_target) / action_scale, is what the learner
    trains on. For any action, each target lies within the limits and within action_scale of last_target,
    provided last_target itself is within the limits.
    """
    positive("action_scale", action_scale)
    if max_tracking_error is not None:
        positive("max_tracking_error", max_tracking_error)
    last_target = np.asarray(last_target, np.float64)
    a = np.nan_to_num(np.asarray(action, np.float64), nan=0.0, posinf=1.0, neginf=-1.0)
    target = last_target + np.clip(a, -1.0, 1.0) * action_scale
    if max_tracking_error is not None and q_measured is not None:
        q = np.asarray(q_measured, np.float64)
        # Keep the step bounded: the tracking clip may only pull the target toward last_target's side.
        target = np.clip(target, q - max_tracking_error, q + max_tracking_error)
        target = np.clip(target, last_target - action_scale, last_target + action_scale)
    target = np.clip(target, lower, upper)
    applied = np.clip((target - last_target) / action_scale, -1.0, 1.0)
    return target, applied.astype(np.float32)


def positive(name: str, value) -> float:
    """`value` as a float if it is finite and > 0, else ConfigError naming it: a NaN or negative scale would
    turn every target into NaN or drive the arm against the policy."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value > 0):
        raise ConfigError(f"{name}: {value!r} must be a finite number > 0")
    return float(value)
