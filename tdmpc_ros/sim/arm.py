"""The simulated arm: PyBullet physics with a joint-space PD position controller underneath. No ROS.

PD law per joint, as on a real arm's position controller: tau = kp * (target - q) - kd * qd, clamped to the
effort limit; joint friction (domain randomisation) takes its share off the drive kp * e, so a joint sticks
within friction / kp of its target. Gravity is off: real iiwa/Panda controllers compensate it,
and a perfectly compensated fixed-base arm moves exactly like one without gravity.

Explicit PD torques blow up on the light wrist links at 240 Hz (kd * dt / inertia >> 2), so the torque is
applied through PyBullet's implicit joint motor: a velocity motor whose target is the velocity at which the PD
torque vanishes, (kp * e - friction) / kd, and whose force limit is the PD torque itself. Heavy links get the
PD torque (true second-order dynamics); light ones settle on the PD's overdamped velocity without overshoot.
Joint velocity is limited by PyBullet (maxJointVelocity), positions by the URDF limits.

The task adds its bodies to the arm's PyBullet world (`Task.scene`: push's table and cube), placed at each reset
and sensed through `sensed()`.
"""
from __future__ import annotations

import warnings
from collections import deque

import numpy as np

from tdmpc_ros.config import ConfigError, SimConfig, TaskConfig
from tdmpc_ros.kinematics import ArmKinematics, load_arm
from tdmpc_ros.kinematics import pybullet as p
from tdmpc_ros.tasks import make_task


def substeps_per_period(task: TaskConfig, sim: SimConfig) -> int:
    """Physics steps per control period; the rates must divide evenly."""
    steps = sim.physics_hz / task.control_rate_hz
    if steps < 1 or abs(steps - round(steps)) > 1e-9:
        raise ConfigError(f"sim.physics_hz {sim.physics_hz:g} must be a whole multiple of task.control_rate_hz "
                          f"{task.control_rate_hz:g}")
    return int(round(steps))


class Arm:
    """One arm in its own PyBullet DIRECT client (arms in one process never interfere)."""

    def __init__(self, task: TaskConfig, sim: SimConfig, rng: np.random.Generator | None = None):
        self.task, self.sim = task, sim
        self.n_substeps = substeps_per_period(task, sim)
        self.client = p.connect(p.DIRECT)
        self.arm = load_arm(self.client, task)
        if self.arm.geometry_missing:  # joints and inertia suffice to reach; nothing can touch the arm
            warnings.warn(f"simulating {self.arm.description.urdf.source} without its meshes "
                          f"({self.arm.geometry_missing}): the arm has no collision shapes, so objects pass "
                          "through it (a push task's cube too)", stacklevel=2)
        self.kinematics = ArmKinematics(task)
        self.joints = self.arm.joint_indices
        self.n = len(self.joints)
        self.lower, self.upper = self.arm.lower, self.arm.upper
        self.home = np.asarray(sim.home or self.arm.description.home, np.float64)  # empty: the arm's default
        if self.home.shape != (self.n,):
            raise ConfigError(f"sim.home has {self.home.size} values for {self.n} joints in task.joint_names")
        self.max_effort = np.minimum(sim.max_effort, self.arm.max_effort)
        p.setTimeStep(1.0 / sim.physics_hz, physicsClientId=self.client)
        p.setGravity(0, 0, 0, physicsClientId=self.client)
        velocity_limit = np.minimum(sim.max_velocity, self.arm.max_velocity)
        for j, v_max in zip(self.joints, velocity_limit):
            # URDF damping would act on top of kd; the PD gains alone define the controller.
            p.changeDynamics(self.arm.body, j, maxJointVelocity=float(v_max), jointDamping=0.0,
                             physicsClientId=self.client)
        self.rng = rng if rng is not None else np.random.default_rng(sim.seed)
        self.scene = make_task(task).scene(self.client, sim, self.rng)
        self.reset()

    # -- episode ------------------------------------------------------------------------------------------
    def reset(self, rng: np.random.Generator | None = None) -> np.ndarray:
        """Home pose plus uniform noise, at rest, holding it; draws this episode's randomised dynamics."""
        if rng is not None:
            self.rng = rng
        noise = self.rng.uniform(-self.sim.home_noise, self.sim.home_noise, self.n)
        q0 = np.clip(self.home + noise, self.lower + self.task.joint_margin, self.upper - self.task.joint_margin)
        for j, value in zip(self.joints, q0):
            p.resetJointState(self.arm.body, j, float(value), 0.0, physicsClientId=self.client)
        self.friction = self.rng.uniform(*self.sim.friction_range, self.n)
        self.gain_scale = float(self.rng.uniform(*self.sim.gain_scale_range))
        self.steps = 0
        self.commanded = False
        self.target = q0.copy()   # the latest command (or the held reset pose)
        self.applied = q0.copy()  # what the PD tracks now: the command from latency_steps periods ago
        self._pending: deque[tuple[int, np.ndarray]] = deque()
        if self.scene is not None:
            self.scene.reset(self.rng)
        return q0

    def set_target(self, q) -> np.ndarray:
        """Command joint positions (clipped to the URDF limits); with latency they act latency_steps periods later."""
        target = np.clip(np.asarray(q, np.float64), self.lower, self.upper)
        self.target, self.commanded = target, True
        self._pending.append((self.steps + self.sim.latency_steps * self.n_substeps, target))
        return target

    # -- physics ------------------------------------------------------------------------------------------
    def step(self) -> None:
        """One physics step of the PD controller."""
        while self._pending and self._pending[0][0] <= self.steps:
            self.applied = self._pending.popleft()[1]
        states = p.getJointStates(self.arm.body, self.joints, physicsClientId=self.client)
        q, qd = np.array([s[0] for s in states]), np.array([s[1] for s in states])
        kp, kd = self.sim.kp * self.gain_scale, self.sim.kd * self.gain_scale
        drive = kp * (self.applied - q)
        drive = np.sign(drive) * np.maximum(np.abs(drive) - self.friction, 0.0)
        force = np.minimum(np.abs(drive - kd * qd), self.max_effort)
        p.setJointMotorControlArray(self.arm.body, self.joints, p.VELOCITY_CONTROL, targetVelocities=drive / kd,
                                    forces=force, physicsClientId=self.client)
        if self.scene is not None:
            self.scene.before_step()
        p.stepSimulation(physicsClientId=self.client)
        self.steps += 1

    def step_control_period(self) -> None:
        """Advance physics by one control period (physics_hz / control_rate_hz steps)."""
        for _ in range(self.n_substeps):
            self.step()

    # -- state --------------------------------------------------------------------------------------------
    def state(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """True joint positions, velocities and applied motor torques."""
        states = p.getJointStates(self.arm.body, self.joints, physicsClientId=self.client)
        return (np.array([s[0] for s in states]), np.array([s[1] for s in states]),
                np.array([s[3] for s in states]))

    def noisy(self, q: np.ndarray) -> np.ndarray:
        """Joint positions as a sensor reports them: with sim.obs_noise Gaussian noise."""
        return q + self.rng.normal(0.0, self.sim.obs_noise, self.n) if self.sim.obs_noise > 0 else q

    def measured(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """state() with sensor noise on the positions."""
        q, qd, effort = self.state()
        return self.noisy(q), qd, effort

    def sensed(self) -> dict[str, np.ndarray]:
        """What the task's sensors report now (empty for a task that senses nothing beyond the arm)."""
        return self.scene.sense() if self.scene is not None else {}

    def ee_position(self, q=None) -> np.ndarray:
        """End effector at q (default: the true joint positions), via the shared kinematics."""
        return self.kinematics.fk(self.state()[0] if q is None else q)

    def close(self) -> None:
        self.kinematics.close()
        if p.isConnected(self.client):
            p.disconnect(self.client)
