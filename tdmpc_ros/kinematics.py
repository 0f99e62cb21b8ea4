"""Forward and inverse kinematics of the arm from its URDF, through PyBullet in a private DIRECT client.

The simulated arm and the controller node both compute the end effector with `ArmKinematics.fk`, so an
observation built from /joint_states equals the one the simulator would build at the same joint positions.
Pure core: no ROS import, and nothing here ever steps physics.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass

import numpy as np
import pybullet_data

from tdmpc_ros.config import ConfigError, TaskConfig


def _import_pybullet():
    """pybullet writes its build time to stderr when first imported; a CLI's one-line error (or a node's log)
    would start with it. The C library writes to fd 2 directly, so fd 2 is pointed at /dev/null meanwhile."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        import pybullet
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
    return pybullet


p = pybullet = _import_pybullet()


@dataclass(frozen=True)
class RobotSpec:
    """A URDF from pybullet_data and the names a config for it needs."""

    urdf: str
    joint_names: tuple[str, ...]
    ee_link: str
    home: tuple[float, ...]


# TaskConfig/SimConfig defaults describe the iiwa. For the Panda set task.robot: panda, task.joint_names:
# [panda_joint1 .. panda_joint7], task.ee_link: panda_grasptarget (between the fingertips) and a sim.home
# inside its limits (joint 4 is in [-3.14, 0]); `robot_overrides("panda")` gives exactly that.
ROBOTS: dict[str, RobotSpec] = {
    "kuka_iiwa": RobotSpec("kuka_iiwa/model.urdf", tuple(f"lbr_iiwa_joint_{i}" for i in range(1, 8)),
                           "lbr_iiwa_link_7", (0.0, 0.4, 0.0, -1.2, 0.0, 1.0, 0.0)),
    "panda": RobotSpec("franka_panda/panda.urdf", tuple(f"panda_joint{i}" for i in range(1, 8)),
                       "panda_grasptarget", (0.0, -0.2, 0.0, -2.0, 0.0, 1.9, 0.785)),
}


def robot_spec(robot: str) -> RobotSpec:
    if robot not in ROBOTS:
        raise ConfigError(f"task.robot: unknown robot {robot!r}; choose from {sorted(ROBOTS)}")
    return ROBOTS[robot]


def robot_overrides(robot: str) -> dict[str, dict]:
    """Config overrides (for load_config) that select `robot` with its joint names, end effector and home."""
    spec = robot_spec(robot)
    return {"task": {"robot": robot, "joint_names": list(spec.joint_names), "ee_link": spec.ee_link},
            "sim": {"home": list(spec.home)}}


@dataclass
class LoadedArm:
    """A URDF loaded into one PyBullet client, with the controlled joints resolved by name."""

    client: int
    body: int
    joint_indices: list[int]
    ee_index: int
    lower: np.ndarray
    upper: np.ndarray
    max_effort: np.ndarray
    max_velocity: np.ndarray
    base_link: str
    movable: list[int]
    """All non-fixed joints in PyBullet's DoF order (IK returns one value per entry)."""


def load_arm(client: int, task: TaskConfig) -> LoadedArm:
    """Load task.robot's URDF (fixed base at the origin) into `client`; unknown joint or link names are errors."""
    spec = robot_spec(task.robot)
    p.setAdditionalSearchPath(pybullet_data.getDataPath(), physicsClientId=client)
    body = p.loadURDF(spec.urdf, useFixedBase=True, physicsClientId=client)
    joints, links, movable, info = {}, {}, [], {}
    for j in range(p.getNumJoints(body, physicsClientId=client)):
        ji = p.getJointInfo(body, j, physicsClientId=client)
        joints[ji[1].decode()] = j
        links[ji[12].decode()] = j
        info[j] = ji
        if ji[2] != p.JOINT_FIXED:
            movable.append(j)
    missing = [name for name in task.joint_names if name not in joints]
    if missing:
        hint = f" (for {task.robot} use {list(spec.joint_names)})"
        raise ConfigError(f"task.joint_names: {missing} not in {spec.urdf}; its joints are {sorted(joints)}{hint}")
    if task.ee_link not in links:
        raise ConfigError(f"task.ee_link: {task.ee_link!r} not in {spec.urdf}; its links are {sorted(links)}"
                          f" (for {task.robot} use {spec.ee_link!r})")
    indices = [joints[name] for name in task.joint_names]
    not_movable = [name for name, j in zip(task.joint_names, indices) if j not in movable]
    if not_movable:
        raise ConfigError(f"task.joint_names: {not_movable} are fixed joints in {spec.urdf}")
    base = p.getBodyInfo(body, physicsClientId=client)[0].decode()
    return LoadedArm(client, body, indices, links[task.ee_link],
                     lower=np.array([info[j][8] for j in indices]), upper=np.array([info[j][9] for j in indices]),
                     max_effort=np.array([info[j][10] for j in indices]),
                     max_velocity=np.array([info[j][11] for j in indices]), base_link=base, movable=movable)


class ArmKinematics:
    """FK and IK for the configured robot: `fk(q) -> xyz`, `ik(xyz, q_rest) -> q`, joint limits."""

    def __init__(self, task: TaskConfig):
        self.task = task
        self.client = p.connect(p.DIRECT)
        self.arm = load_arm(self.client, task)
        self.lower, self.upper = self.arm.lower, self.arm.upper
        self.safe_lower = self.lower + task.joint_margin
        self.safe_upper = self.upper - task.joint_margin
        narrow = np.flatnonzero(self.safe_lower > self.safe_upper)
        if narrow.size:
            raise ConfigError(f"task.joint_margin {task.joint_margin:g} rad leaves no range for joints "
                              f"{[task.joint_names[i] for i in narrow]} (ranges {(self.upper - self.lower)[narrow].round(3).tolist()} rad)")
        self.base_link = self.arm.base_link
        self._dof = {j: k for k, j in enumerate(self.arm.movable)}

    def _set(self, q) -> None:
        for j, value in zip(self.arm.joint_indices, q):
            p.resetJointState(self.arm.body, j, float(value), physicsClientId=self.client)

    def fk(self, q) -> np.ndarray:
        """End-effector link frame position (m, base frame) at joint positions q."""
        q = np.asarray(q, np.float64)
        if q.shape != (len(self.arm.joint_indices),):
            raise ValueError(f"fk: expected {len(self.arm.joint_indices)} joint positions, got shape {q.shape}")
        self._set(q)
        state = p.getLinkState(self.arm.body, self.arm.ee_index, computeForwardKinematics=True,
                               physicsClientId=self.client)
        return np.array(state[4])

    def ik(self, xyz, q_rest, iterations: int = 200, tolerance: float = 1e-4) -> np.ndarray:
        """Joint positions within the safe limits that put the end effector at xyz, starting from and near q_rest."""
        q_rest = np.asarray(q_rest, np.float64)
        self._set(q_rest)
        # Null-space IK over all movable DoF: ours get the safe limits and rest pose, others stay where they are.
        n = len(self.arm.movable)
        lower, upper, rest = np.zeros(n), np.zeros(n), np.zeros(n)
        for k, j in enumerate(self.arm.movable):
            rest[k] = p.getJointState(self.arm.body, j, physicsClientId=self.client)[0]
            lower[k], upper[k] = rest[k] - 1e-3, rest[k] + 1e-3
        ours = [self._dof[j] for j in self.arm.joint_indices]
        lower[ours], upper[ours], rest[ours] = self.safe_lower, self.safe_upper, q_rest
        q = p.calculateInverseKinematics(
            self.arm.body, self.arm.ee_index, [float(v) for v in xyz], lowerLimits=lower.tolist(),
            upperLimits=upper.tolist(), jointRanges=(upper - lower).tolist(), restPoses=rest.tolist(),
            maxNumIterations=iterations, residualThreshold=tolerance, physicsClientId=self.client)
        return np.clip(np.asarray(q)[ours], self.safe_lower, self.safe_upper)

    def close(self) -> None:
        if p.isConnected(self.client):
            p.disconnect(self.client)
