"""The task interface: one class per task, used alike by the sim, the controller, the learner, the scripted
expert and raw-bag rebuilding. No ROS here: a sensor names its topic and message type, and control/inputs.py
turns such messages into arrays.

A task says
- what it senses beyond the arm (`sensors`: ROS topic, message type, the name its values go by in `sensed`),
- its observation (`observation`, `obs_dim`) from the measured joints, the end effector (forward kinematics),
  the goal and the sensed values,
- its reward (`task.reward`: dense, the task's shaping, or sparse: 0 on a step within the goal, -1 otherwise),
- when a step is within the goal (`within_goal`; held `task.success_hold_steps` steps: success),
- how the sim draws goals (`sample_goal`), what it adds to the sim scene (`scene`), and its scripted expert.

The episode logic (steps, success hold, step limit, resets) is not the task's: control/episode.py runs it for
every task. `task.name` picks the class: `reach`, `push`, or `package.module:Class` for a user's own.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from tdmpc_ros.config import Config, ConfigError, SimConfig, TaskConfig, default_config_path, load_config

VELOCITY_SCALE = 0.1  # keeps joint velocities (rad/s) near the range of the other observation entries
BUILT_IN = {"reach": "tdmpc_ros.tasks.reach:ReachTask", "push": "tdmpc_ros.tasks.push:PushTask"}


@dataclass(frozen=True)
class Sensor:
    """A stream the task needs beyond /joint_states."""

    name: str
    """Key of its values in `sensed`."""
    topic: str
    """Relative ROS topic (a launch namespace applies)."""
    msg_type: str
    """ROS message type, e.g. geometry_msgs/msg/PoseStamped (one of control/inputs.py's SENSOR_TYPES)."""


class Scene(Protocol):
    """What a task adds to the simulated arm's PyBullet world (sim/arm.py calls these)."""

    def reset(self, rng: np.random.Generator) -> None:
        """A new episode's start: place the task's bodies, draw their randomised properties."""

    def before_step(self) -> None:
        """Before each physics step (forces that must be reapplied each step)."""

    def sense(self) -> dict[str, np.ndarray]:
        """The values of the task's sensors now, as control/inputs.py reads them from their messages."""


class Expert(Protocol):
    def act(self, goal: np.ndarray, q: np.ndarray, last_target: np.ndarray,
            sensed: dict[str, np.ndarray]) -> np.ndarray:
        """The normalised action for measured joints q, the current joint target and the sensed values."""


class Task:
    """Base class: the arm's part of the observation, the reward switch, goal sampling in the goal box."""

    sensors: tuple[Sensor, ...] = ()

    def __init__(self, cfg: TaskConfig):
        self.cfg = cfg
        self.n_joints = len(cfg.joint_names)

    # -- to provide ---------------------------------------------------------------------------------------
    @property
    def obs_dim(self) -> int:
        raise NotImplementedError

    def observation(self, q, qd, ee, goal, sensed: dict[str, np.ndarray]) -> np.ndarray:
        raise NotImplementedError

    def distance(self, ee, goal, sensed: dict[str, np.ndarray]) -> float:
        """How far from the goal (m): success is within `task.success_radius` of it."""
        raise NotImplementedError

    def dense_reward(self, ee, goal, sensed: dict[str, np.ndarray]) -> float:
        raise NotImplementedError

    def expert(self, kinematics, noise: float, rng: np.random.Generator) -> Expert:
        raise NotImplementedError(f"task {self.cfg.name!r} has no scripted expert")

    # -- shared -------------------------------------------------------------------------------------------
    def within_goal(self, ee, goal, sensed: dict[str, np.ndarray] | None = None) -> bool:
        return self.distance(ee, goal, sensed) <= self.cfg.success_radius

    def reward(self, ee, goal, sensed: dict[str, np.ndarray] | None = None) -> float:
        """task.reward dense: the task's shaping; sparse: 0 on a step within the goal, -1 otherwise."""
        if self.cfg.reward == "sparse":
            return 0.0 if self.within_goal(ee, goal, sensed) else -1.0
        return self.dense_reward(ee, goal, sensed)

    def sample_goal(self, rng: np.random.Generator) -> np.ndarray:
        return rng.uniform(self.cfg.goal_low, self.cfg.goal_high)

    def scene(self, client: int, sim: SimConfig, rng: np.random.Generator) -> Scene | None:
        """The task's bodies in the sim arm's PyBullet client `client`; None: the arm alone."""
        return None

    def arm_features(self, q, qd, ee, goal) -> list[np.ndarray]:
        """q | 0.1 * qd | end effector xyz | goal xyz, checked for size."""
        q, qd = np.asarray(q, np.float64), np.asarray(qd, np.float64)
        if q.shape != (self.n_joints,) or qd.shape != (self.n_joints,):
            raise ValueError(f"observation: expected {self.n_joints} joint positions and velocities, "
                             f"got {q.shape} and {qd.shape}")
        return [q, VELOCITY_SCALE * qd, np.asarray(ee, np.float64), np.asarray(goal, np.float64)]


def task_class(name: str) -> type[Task]:
    """The class `task.name` names: a built-in (reach, push) or `package.module:Class`."""
    spec = BUILT_IN.get(name, name)
    module_name, _, class_name = spec.partition(":")
    if not class_name:
        raise ConfigError(f"task.name: {name!r} is neither a built-in task {sorted(BUILT_IN)} nor "
                          "'package.module:Class'")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"task.name: cannot load {spec!r}: {exc}") from exc
    if not (isinstance(cls, type) and issubclass(cls, Task)):
        raise ConfigError(f"task.name: {spec!r} is not a subclass of tdmpc_ros.tasks.Task")
    return cls


def make_task(cfg: TaskConfig) -> Task:
    return task_class(cfg.name)(cfg)


def task_config_path(task: str | None = None, path: str | None = None) -> str | None:
    """The parameter file for `task` (a CLI's --task): `path` if given, else the bundled config/<task>.yaml
    where there is one (push), else None (config/arm.yaml, task.name set by the caller)."""
    if path is None and task is not None and (bundled := default_config_path().with_name(f"{task}.yaml")).exists():
        return str(bundled)
    return path


def task_config(task: str | None = None, path: str | None = None, overrides: dict | None = None) -> Config:
    """The config for `task`: task_config_path's file, with task.name set to `task`."""
    path = task_config_path(task, path)
    overrides = dict(overrides or {})
    if task is not None:
        overrides["task"] = {**overrides.get("task", {}), "name": task}
    return load_config(path or default_config_path(), overrides)
