"""Forward and inverse kinematics of the arm from its URDF, through PyBullet in a private DIRECT client
(arm_description.py reads the arm from the URDF and says why PyBullet).

The simulated arm and the controller node both compute the end effector with `ArmKinematics.fk`, so an
observation built from /joint_states equals the one the simulator would build at the same joint positions.
Pure core: no ROS import, and nothing here ever steps physics.
"""
from __future__ import annotations

import os
import sys
import tempfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass

import numpy as np

from tdmpc_ros.arm_description import ArmDescription, check_velocity, describe_task, urdf_path
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


def robot_overrides(robot: str) -> dict[str, dict]:
    """Config overrides (for load_config) that select `robot` (a bundled name or a URDF path): its joints, end
    effector and home come from its URDF (arm_description.py), not from whatever arm the config named before."""
    return {"task": {"robot": robot, "joint_names": [], "ee_link": ""}, "sim": {"home": []}}


@dataclass
class LoadedArm:
    """A URDF loaded into one PyBullet client, with the controlled joints resolved by name."""

    description: ArmDescription
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
    geometry_missing: str = ""
    """Why the URDF was loaded without its visual and collision geometry ("": it was not)."""


def _load_urdf(path: str, client: int) -> tuple[int, str]:
    """(the URDF's body, "") or, if PyBullet cannot load it (meshes it cannot find: package:// URIs of a
    robot_description, a description package not installed here), (its kinematic tree without geometry, why)."""
    try:
        return p.loadURDF(path, useFixedBase=True, physicsClientId=client), ""
    except p.error as exc:
        tree = ET.parse(path)
        for link in tree.getroot().iter("link"):
            for element in link.findall("visual") + link.findall("collision"):
                link.remove(element)
        with tempfile.TemporaryDirectory() as folder:
            bare = os.path.join(folder, "kinematics.urdf")
            tree.write(bare)
            return p.loadURDF(bare, useFixedBase=True, physicsClientId=client), f"PyBullet: {exc}"


def load_arm(client: int, task: TaskConfig) -> LoadedArm:
    """Load task.robot's URDF (fixed base at the origin) into `client`. The joints, their limits and the end
    effector are the URDF's as arm_description.py reads them (joint names not on the chain are errors there)."""
    arm = describe_task(task)
    check_velocity(task, arm)
    body, geometry_missing = _load_urdf(urdf_path(task.robot), client)
    joints, links, movable = {}, {}, []
    for j in range(p.getNumJoints(body, physicsClientId=client)):
        ji = p.getJointInfo(body, j, physicsClientId=client)
        joints[ji[1].decode()] = j
        links[ji[12].decode()] = j
        if ji[2] != p.JOINT_FIXED:
            movable.append(j)
    return LoadedArm(arm, client, body, [joints[name] for name in arm.joint_names], links[arm.ee_link],
                     lower=np.array(arm.lower), upper=np.array(arm.upper), max_effort=np.array(arm.effort),
                     max_velocity=np.array(arm.velocity), base_link=arm.base_link, movable=movable,
                     geometry_missing=geometry_missing)


class ArmKinematics:
    """FK and IK for the configured robot: `fk(q) -> xyz`, `ik(xyz, q_rest) -> q`, joint limits."""

    def __init__(self, task: TaskConfig):
        self.task = task
        self.client = p.connect(p.DIRECT)
        self.arm = load_arm(self.client, task)
        self.description = self.arm.description
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
        # One call for all joints: a third of the cost of one resetJointState each (FK runs several times a tick).
        p.resetJointStatesMultiDof(self.arm.body, self.arm.joint_indices, [[float(v)] for v in q],
                                   physicsClientId=self.client)

    def pose(self, q) -> tuple[np.ndarray, np.ndarray]:
        """End-effector link frame position (m, base frame) and orientation (quaternion x y z w) at q."""
        q = np.asarray(q, np.float64)
        if q.shape != (len(self.arm.joint_indices),):
            raise ValueError(f"fk: expected {len(self.arm.joint_indices)} joint positions, got shape {q.shape}")
        self._set(q)
        state = p.getLinkState(self.arm.body, self.arm.ee_index, computeForwardKinematics=True,
                               physicsClientId=self.client)
        return np.array(state[4]), np.array(state[5])

    def fk(self, q) -> np.ndarray:
        """End-effector link frame position (m, base frame) at joint positions q."""
        return self.pose(q)[0]

    def ik(self, xyz, q_rest, iterations: int = 200, tolerance: float = 1e-4, orientation=None,
           keep_orientation: bool = False) -> np.ndarray:
        """Joint positions within the safe limits that put the end effector at xyz, starting from and near q_rest
        (and its link frame at `orientation`, a quaternion x y z w, if given; with `keep_orientation`, at its
        orientation in q_rest)."""
        q_rest = np.asarray(q_rest, np.float64)
        if keep_orientation:
            orientation = self.pose(q_rest)[1]  # sets the joints to q_rest too
        else:
            self._set(q_rest)
        # Null-space IK over all movable DoF: ours get the safe limits and rest pose, others stay where they are.
        rest = np.array([s[0] for s in p.getJointStates(self.arm.body, self.arm.movable, physicsClientId=self.client)])
        lower, upper = rest - 1e-3, rest + 1e-3
        ours = [self._dof[j] for j in self.arm.joint_indices]
        lower[ours], upper[ours], rest[ours] = self.safe_lower, self.safe_upper, q_rest
        q = p.calculateInverseKinematics(
            self.arm.body, self.arm.ee_index, [float(v) for v in xyz], lowerLimits=lower.tolist(),
            upperLimits=upper.tolist(), jointRanges=(upper - lower).tolist(), restPoses=rest.tolist(),
            maxNumIterations=iterations, residualThreshold=tolerance, physicsClientId=self.client,
            **({} if orientation is None else {"targetOrientation": [float(v) for v in orientation]}))
        return np.clip(np.asarray(q)[ours], self.safe_lower, self.safe_upper)

    def close(self) -> None:
        if p.isConnected(self.client):
            p.disconnect(self.client)
