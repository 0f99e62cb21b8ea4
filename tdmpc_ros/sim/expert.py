"""Scripted-expert demonstrations: the task's expert (`Task.expert`) acting on the sim env.

It acts through the same normalised action interface as the learned controller, so its episodes are valid
training data.
"""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from tdmpc_ros.data.episode import Episode


def expert_episodes(env, count: int, noise: float = 0.1, seed: int | None = 0) -> Iterator[Episode]:
    """`count` scripted-expert episodes on an ArmEnv, yielded as each ends; the first reset is seeded with
    `seed` (so are the expert's noise draws), later ones continue the env's own goal sequence."""
    from tdmpc_ros.sim.env import collect_episode

    expert = env.task.expert(env.kinematics, noise, np.random.default_rng(seed))
    for i in range(count):
        # The experts act in joint space; in the cartesian space, by the end-effector move their step makes.
        yield collect_episode(env, lambda obs, info: env.rule.from_joint_action(
            expert.act(env.goal, info["q"], env.target, info["sensed"]), env.target, env.cfg.task.action_scale),
            i, seed=seed if i == 0 else None)[0]
