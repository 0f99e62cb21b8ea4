"""Reach: bring the end effector to a goal point.

Observation (float32, obs_dim = 2 * n_joints + 9): q | 0.1 * qd | end effector xyz | goal xyz | goal - end effector.
Dense reward: -||goal - end effector||. Within the goal: end effector within `task.success_radius`.
The scripted expert solves IK once per goal and steers the joint target to the solution.
"""
from __future__ import annotations

import numpy as np

from tdmpc_ros.tasks.base import Task


class ReachTask(Task):
    @property
    def obs_dim(self) -> int:
        return 2 * self.n_joints + 9

    def observation(self, q, qd, ee, goal, sensed=None) -> np.ndarray:
        features = self.arm_features(q, qd, ee, goal)
        return np.concatenate(features + [features[3] - features[2]]).astype(np.float32)

    def distance(self, ee, goal, sensed=None) -> float:
        return float(np.linalg.norm(np.asarray(goal, np.float64) - np.asarray(ee, np.float64)))

    def dense_reward(self, ee, goal, sensed=None) -> float:
        return -self.distance(ee, goal)

    def expert(self, kinematics, noise: float, rng: np.random.Generator) -> ReachExpert:
        return ReachExpert(kinematics, self.cfg.action_scale, noise, rng)


class ReachExpert:
    """IK to the goal (from the pose it starts in), then delta-position steps toward the solution:
    action = clip((q_ik - last_target) / action_scale, -1, 1) + Gaussian noise."""

    def __init__(self, kinematics, action_scale: float, noise: float, rng: np.random.Generator):
        self.kinematics, self.action_scale, self.noise, self.rng = kinematics, action_scale, noise, rng
        self.goal: np.ndarray | None = None
        self.q_goal: np.ndarray | None = None

    def act(self, goal, q, last_target, sensed=None) -> np.ndarray:
        goal = np.asarray(goal, np.float64)
        if self.goal is None or not np.array_equal(goal, self.goal):
            self.goal, self.q_goal = goal.copy(), self.kinematics.ik(goal, q)
        return noisy_step(self.q_goal, last_target, self.action_scale, self.noise, self.rng)


def noisy_step(q_goal, last_target, action_scale: float, noise: float, rng: np.random.Generator) -> np.ndarray:
    """The normalised action toward joint positions q_goal, with Gaussian noise, clipped to [-1, 1]."""
    action = np.clip((np.asarray(q_goal) - np.asarray(last_target)) / action_scale, -1.0, 1.0)
    if noise > 0:
        action = action + rng.normal(0.0, noise, action.shape)
    return np.clip(action, -1.0, 1.0).astype(np.float32)
