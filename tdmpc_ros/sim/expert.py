"""A scripted reaching expert for demonstrations: IK to the goal, then delta-position steps toward it.

It acts through the same normalised action interface as the learned controller, so its episodes are valid
training data: action = clip((q_ik - last_target) / action_scale, -1, 1) + Gaussian noise.
"""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from tdmpc_ros.config import TaskConfig
from tdmpc_ros.data.episode import Episode
from tdmpc_ros.kinematics import ArmKinematics


class ScriptedExpert:
    """Solves IK once per goal (from the pose it starts in) and steers the joint target to the solution."""

    def __init__(self, kinematics: ArmKinematics, task: TaskConfig, noise: float = 0.0,
                 rng: np.random.Generator | None = None):
        self.kinematics, self.task, self.noise = kinematics, task, noise
        self.rng = rng if rng is not None else np.random.default_rng()
        self.goal: np.ndarray | None = None
        self.q_goal: np.ndarray | None = None

    def act(self, goal, q, last_target) -> np.ndarray:
        """Action for measured joints q and the current joint target; IK is redone when the goal changes."""
        goal = np.asarray(goal, np.float64)
        if self.goal is None or not np.array_equal(goal, self.goal):
            self.goal, self.q_goal = goal.copy(), self.kinematics.ik(goal, q)
        action = np.clip((self.q_goal - np.asarray(last_target)) / self.task.action_scale, -1.0, 1.0)
        if self.noise > 0:
            action = action + self.rng.normal(0.0, self.noise, action.shape)
        return np.clip(action, -1.0, 1.0).astype(np.float32)


def expert_episodes(env, count: int, noise: float = 0.1, seed: int | None = 0) -> Iterator[Episode]:
    """`count` scripted-expert episodes on a ReachEnv, yielded as each ends; the first reset is seeded with
    `seed` (so are the expert's noise draws), later ones continue the env's own goal sequence."""
    from tdmpc_ros.sim.reach_env import collect_episode

    expert = ScriptedExpert(env.kinematics, env.cfg.task, noise, np.random.default_rng(seed))
    for i in range(count):
        yield collect_episode(env, lambda obs, info: expert.act(env.goal, info["q"], env.target), i,
                              seed=seed if i == 0 else None)[0]
