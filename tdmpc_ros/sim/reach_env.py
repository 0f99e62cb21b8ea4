"""The reach task on the simulated arm as a gymnasium env, with the controller's exact action interface.

Per step: target = apply_action(a, last target, measured q, safe limits, task.action_scale,
controller.max_tracking_error); the PD arm tracks it for one control period; the observation is
ReachTask.observation from the measured joints (end effector by the shared kinematics); the reward and the
success hold use the true end effector. `info["action"]` is the applied action: what the learner trains on.
"""
from __future__ import annotations

from collections.abc import Callable

import gymnasium as gym
import numpy as np

from tdmpc_ros.config import Config
from tdmpc_ros.data.episode import Episode
from tdmpc_ros.sim.arm import Arm
from tdmpc_ros.task import EpisodeTracker, ReachTask, apply_action


class ReachEnv(gym.Env):
    """Reach a random goal with the end effector. Terminates on a held success, truncates at the step limit."""

    metadata = {"render_modes": []}

    def __init__(self, cfg: Config | None = None):
        self.cfg = cfg or Config()
        self.task = ReachTask(self.cfg.task)
        self.tracker = EpisodeTracker(self.cfg.task)
        self.arm = Arm(self.cfg.task, self.cfg.sim)
        self.kinematics = self.arm.kinematics
        n = self.cfg.task.action_dim
        self.action_space = gym.spaces.Box(-1.0, 1.0, (n,), np.float32)
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (self.task.obs_dim,), np.float32)
        self.goal = np.zeros(3)
        self.q = np.zeros(n)  # measured joint positions of the latest observation
        self._seeded = False

    @property
    def target(self) -> np.ndarray:
        """The current joint position target (the held reset pose before the first step)."""
        return self.arm.target

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        """New episode: home pose plus noise, a goal from task.sample_goal (or options["goal"])."""
        if seed is None and not self._seeded:
            seed = self.cfg.sim.seed
        super().reset(seed=seed)
        self._seeded = True
        self.arm.reset(self.np_random)
        self.goal = self.task.sample_goal(self.np_random)
        if options and "goal" in options:
            self.goal = np.asarray(options["goal"], np.float64)
        self.tracker.reset()
        obs, ee = self._observe()
        return obs, {"success": False, "distance": self.task.distance(ee, self.goal), "q": self.q, "target": self.arm.target.copy()}

    def step(self, action):
        cfg = self.cfg
        target, applied = apply_action(action, self.arm.target, self.q, self.kinematics.safe_lower,
                                       self.kinematics.safe_upper, cfg.task.action_scale,
                                       cfg.controller.max_tracking_error)
        self.arm.set_target(target)
        self.arm.step_control_period()
        obs, ee = self._observe()
        terminated, truncated = self.tracker.step(self.task.within_radius(ee, self.goal))
        info = {"success": terminated, "distance": self.task.distance(ee, self.goal), "action": applied,
                "q": self.q, "target": target}
        return obs, self.task.reward(ee, self.goal), terminated, truncated, info

    def _observe(self) -> tuple[np.ndarray, np.ndarray]:
        """Observation from the measured joints, and the true end effector (for reward and success)."""
        q_true, qd, _ = self.arm.state()
        self.q = self.arm.noisy(q_true)
        ee = self.kinematics.fk(self.q)
        obs = self.task.observation(self.q, qd, ee, self.goal)
        return obs, ee if self.q is q_true else self.kinematics.fk(q_true)

    def close(self) -> None:
        self.arm.close()


def collect_episode(env: ReachEnv, policy: Callable[[np.ndarray, dict], np.ndarray], episode_id: int,
                    seed: int | None = None) -> tuple[Episode, dict]:
    """Run one episode with policy(observation, info) -> action; returns it (applied actions) and the last info."""
    obs, info = env.reset(seed=seed)
    observations, actions, rewards = [obs], [], []
    terminated = truncated = False
    while not (terminated or truncated):
        obs, reward, terminated, truncated, info = env.step(policy(obs, info))
        observations.append(obs)
        actions.append(info["action"])
        rewards.append(reward)
    return Episode(episode_id, np.stack(observations), np.stack(actions), np.asarray(rewards),
                   terminated=terminated, truncated=truncated), info
