"""Hover: hold the end effector HEIGHT above the goal point. The complete example of docs/tasks.md.

Select it with `task.name: tdmpc_ros.tasks.examples.hover:HoverTask`. It senses nothing beyond the arm (see
tdmpc_ros/tasks/push.py for a task with a sensor and a sim scene), so it needs only an observation, a
distance to the goal, a dense reward and an expert; sparse rewards, goal sampling and the episode logic come
from the base class and control/episode.py.
"""
from __future__ import annotations

import numpy as np

from tdmpc_ros.tasks import Task
from tdmpc_ros.tasks.reach import ReachExpert

HEIGHT = 0.1  # m above the goal


class HoverTask(Task):
    @property
    def obs_dim(self) -> int:
        return 2 * self.n_joints + 9  # q, 0.1 qd, end effector, goal, hover point - end effector

    def observation(self, q, qd, ee, goal, sensed) -> np.ndarray:
        features = self.arm_features(q, qd, ee, goal)
        return np.concatenate(features + [hover_point(goal) - features[2]]).astype(np.float32)

    def distance(self, ee, goal, sensed) -> float:
        return float(np.linalg.norm(hover_point(goal) - np.asarray(ee, np.float64)))

    def dense_reward(self, ee, goal, sensed) -> float:
        return -self.distance(ee, goal, sensed)

    def expert(self, kinematics, noise: float, rng: np.random.Generator):
        reach = ReachExpert(kinematics, self.cfg.action_scale, noise, rng)
        return HoverExpert(reach)


class HoverExpert:
    """The reach expert aimed at the hover point."""

    def __init__(self, reach: ReachExpert):
        self.reach = reach

    def act(self, goal, q, last_target, sensed) -> np.ndarray:
        return self.reach.act(hover_point(goal), q, last_target)


def hover_point(goal) -> np.ndarray:
    return np.asarray(goal, np.float64) + [0.0, 0.0, HEIGHT]
