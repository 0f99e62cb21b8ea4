"""The configured task (task.name) on the simulated arm as a gymnasium env, with the controller's exact action
interface and episode logic.

Per step: target = ActionRule.apply(a, the base target, measured q, task.action_scale) (task.action_space's
action through the safety clips and the workspace box, control/action_rule.py); the PD arm tracks it for one
control period; the observation, reward and end come from control/episode.py's EpisodeSteps on the measured
joints (end effector by the shared kinematics) and the task's sensed values, as the controller judges them on
the real arm. `info["action"]` is the applied action: what the learner trains on.
"""
from __future__ import annotations

from collections.abc import Callable

import gymnasium as gym
import numpy as np

from tdmpc_ros.config import Config
from tdmpc_ros.control.action_rule import ActionRule
from tdmpc_ros.control.episode import EpisodeSteps
from tdmpc_ros.data.episode import Episode
from tdmpc_ros.sim.arm import Arm


class ArmEnv(gym.Env):
    """The task on a random goal. Terminates on a held success, truncates at the step limit."""

    metadata = {"render_modes": []}

    def __init__(self, cfg: Config | None = None):
        self.cfg = cfg or Config()
        self.arm = Arm(self.cfg.task, self.cfg.sim)
        self.kinematics = self.arm.kinematics
        self.episode = EpisodeSteps(self.cfg.task, self.kinematics.safe_lower, self.kinematics.safe_upper,
                                    self.kinematics.fk)
        self.task = self.episode.task
        self.rule = ActionRule(self.cfg.task, self.kinematics.safe_lower, self.kinematics.safe_upper,
                               self.kinematics.fk, self.kinematics.ik, self.cfg.controller.max_tracking_error)
        n = self.cfg.task.action_dim
        self.action_space = gym.spaces.Box(-1.0, 1.0, (n,), np.float32)
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (self.task.obs_dim,), np.float32)
        self.q = np.zeros(len(self.cfg.task.joint_names))  # measured joint positions of the latest observation
        self.sensed: dict[str, np.ndarray] = {}  # the task's sensed values of the latest observation
        self._seeded = False

    @property
    def goal(self) -> np.ndarray:
        return self.episode.goal

    @property
    def target(self) -> np.ndarray:
        """The joint position target the next step moves from (the measured reset pose before the first step)."""
        return self.episode.base_target(self.q)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        """New episode: home pose plus noise, a goal from task.sample_goal (or options["goal"])."""
        if seed is None and not self._seeded:
            seed = self.cfg.sim.seed
        super().reset(seed=seed)
        self._seeded = True
        self.arm.reset(self.np_random)
        goal = self.task.sample_goal(self.np_random)
        self.episode.begin(options["goal"] if options and "goal" in options else goal)
        self._observe()
        return self.episode.observation, {"success": False, "distance": self.episode.distance(), "q": self.q,
                                          "target": self.arm.target.copy(), "sensed": self.sensed}

    def step(self, action):
        cfg = self.cfg
        target, applied = self.rule.apply(action, self.target, self.q, cfg.task.action_scale)
        self.episode.act(target, applied)
        self.arm.set_target(target)
        self.arm.step_control_period()
        t = self._observe()
        info = {"success": t.terminated, "distance": self.episode.distance(), "action": applied, "q": self.q,
                "target": target, "sensed": self.sensed}
        return t.next_observation, t.reward, t.terminated, t.truncated, info

    def _observe(self):
        """Take in the measured joints (with sensor noise, as a joint state reports them) and the task's sensors."""
        q, qd, _ = self.arm.measured()
        self.q, self.sensed = q, self.arm.sensed()
        return self.episode.observe(q, qd, self.sensed)

    def close(self) -> None:
        self.arm.close()


def collect_episode(env: ArmEnv, policy: Callable[[np.ndarray, dict], np.ndarray], episode_id: int,
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
