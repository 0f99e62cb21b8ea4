"""Push: slide a cube on a table in front of the arm to a goal position on the table.

Senses the cube's pose as geometry_msgs/PoseStamped on `object_pose` (the sim arm node publishes it with each
joint state; on a real robot a tracker or motion capture does). The goal stays a PointStamped on the goal topic:
the cube's centre at rest on the table (the goal box's z is the table top plus half the cube).

Observation (float32, obs_dim = 2 * n_joints + 20):
    q | 0.1 * qd | end effector xyz | goal xyz | cube xyz | sin, cos of 4 * cube yaw
      | 10 * (cube - ee) | 10 * (goal - cube) | 10 * (approach - ee)
(a cube looks the same every quarter turn, so 4 * yaw is what the pose tells; the approach point is the dense
reward's, below).
Dense reward: -(task.ee_object_weight * ||approach - ee|| + task.object_goal_weight * ||goal - cube||), the
approach point `task.approach_offset` behind the cube on the line from the goal through it (0: the cube).
Within the goal: the cube's centre within `task.success_radius` of the goal.

The sim has no gravity (the arm is taken as gravity-compensated, sim/arm.py); the cube gets its weight as an
external force each physics step, so it rests on the table with friction as under gravity.
"""
from __future__ import annotations

import math

import numpy as np

from tdmpc_ros.config import SimConfig
from tdmpc_ros.kinematics import pybullet as p
from tdmpc_ros.tasks.base import Sensor, Task
from tdmpc_ros.tasks.reach import noisy_step

OBJECT = "object"  # the key of the cube's pose (x y z qx qy qz qw) in `sensed`
TABLE_TOP = 0.0  # m, base frame: the table's surface, level with the arm's mounting
TABLE_CENTRE, TABLE_HALF = (0.6, 0.0), (0.3, 0.45, 0.05)  # x, y / half extents (m)
GRAVITY = 9.81
# The expert, with the end-effector link pointing down: where it waits behind the cube, how high it travels, how
# far it moves per step. The iiwa's last link reaches about 5 cm below and around its frame (the end effector).
EE_REACH = 0.055  # m from the end effector to the link's surface, sideways and down
BEHIND = 0.04  # m between the link and the cube's near face before pushing
TRAVEL_HEIGHT = 0.15  # m above the table when moving around the cube
PUSH_HEIGHT = 0.075  # m above the table when pushing: the link's bottom about 2 cm above the table
STEP = 0.03  # m of end-effector motion per control step
DOWN_YAWS = np.linspace(-math.pi, math.pi, 8, endpoint=False)  # candidate yaws of the pointing-down link
# The differences span centimetres where the joint angles span radians: 10x puts them on the joints' scale, so
# the encoder resolves the 3 cm success radius (three seeds reach 80 % success in 10-20k env steps, none did
# unscaled; docs/tasks.md).
RELATIVE_SCALE = 10.0


def cube_xyz_yaw(pose) -> tuple[np.ndarray, float]:
    pose = np.asarray(pose, np.float64)
    qx, qy, qz, qw = pose[3:7]
    return pose[:3], math.atan2(2.0 * (qw * qz + qx * qy), 1.0 - 2.0 * (qy * qy + qz * qz))


class PushTask(Task):
    sensors = (Sensor(OBJECT, "object_pose", "geometry_msgs/msg/PoseStamped"),)

    @property
    def obs_dim(self) -> int:
        return 2 * self.n_joints + 20

    def observation(self, q, qd, ee, goal, sensed) -> np.ndarray:
        features = self.arm_features(q, qd, ee, goal)
        ee, goal = features[2], features[3]
        cube, yaw = cube_xyz_yaw(sensed[OBJECT])
        relative = [cube - ee, goal - cube, self.approach_point(cube, goal) - ee]
        return np.concatenate(features + [cube, [math.sin(4 * yaw), math.cos(4 * yaw)]]
                              + [RELATIVE_SCALE * v for v in relative]).astype(np.float32)

    def distance(self, ee, goal, sensed) -> float:
        return float(np.linalg.norm(np.asarray(goal, np.float64) - cube_xyz_yaw(sensed[OBJECT])[0]))

    def approach_point(self, cube: np.ndarray, goal) -> np.ndarray:
        """Where the arm pushes from: `task.approach_offset` behind the cube on the line from the goal through it."""
        approach = np.array(cube, np.float64)
        to_goal = np.asarray(goal, np.float64)[:2] - approach[:2]
        if (left := float(np.linalg.norm(to_goal))) > 1e-6:
            approach[:2] -= self.cfg.approach_offset * to_goal / left
        return approach

    def dense_reward(self, ee, goal, sensed) -> float:
        approach = self.approach_point(cube_xyz_yaw(sensed[OBJECT])[0], goal)
        return -(self.cfg.ee_object_weight * float(np.linalg.norm(approach - np.asarray(ee, np.float64)))
                 + self.cfg.object_goal_weight * self.distance(ee, goal, sensed))

    def scene(self, client: int, sim: SimConfig, rng: np.random.Generator) -> CubeScene:
        return CubeScene(client, self.cfg, sim)  # it draws its randomisation at each reset(rng)

    def expert(self, kinematics, noise: float, rng: np.random.Generator) -> PushExpert:
        return PushExpert(kinematics, self.cfg.action_scale, self.cfg.object_size, noise, rng)


class CubeScene:
    """A static table and a free cube in the arm's PyBullet client; cube mass, friction and start pose are drawn
    per episode (domain randomisation: sim.object_mass_range, sim.object_friction_range, task.object_start_*)."""

    def __init__(self, client: int, task, sim: SimConfig):
        self.client, self.task, self.sim = client, task, sim
        half = task.object_size / 2
        table = p.createCollisionShape(p.GEOM_BOX, halfExtents=TABLE_HALF, physicsClientId=client)
        self.table = p.createMultiBody(0.0, table, basePosition=[*TABLE_CENTRE, TABLE_TOP - TABLE_HALF[2]],
                                       physicsClientId=client)
        p.changeDynamics(self.table, -1, lateralFriction=1.0, physicsClientId=client)
        cube = p.createCollisionShape(p.GEOM_BOX, halfExtents=[half] * 3, physicsClientId=client)
        self.cube = p.createMultiBody(float(sim.object_mass_range[0]), cube, basePosition=[0.5, 0.0, half],
                                      physicsClientId=client)
        self.mass = float(sim.object_mass_range[0])

    def reset(self, rng: np.random.Generator) -> None:
        xy = rng.uniform(self.task.object_start_low, self.task.object_start_high)
        yaw = rng.uniform(-math.pi, math.pi)
        self.mass = float(rng.uniform(*self.sim.object_mass_range))
        friction = float(rng.uniform(*self.sim.object_friction_range))
        p.changeDynamics(self.cube, -1, mass=self.mass, lateralFriction=friction, physicsClientId=self.client)
        p.resetBasePositionAndOrientation(self.cube, [*xy, TABLE_TOP + self.task.object_size / 2],
                                          p.getQuaternionFromEuler([0.0, 0.0, yaw]), physicsClientId=self.client)
        p.resetBaseVelocity(self.cube, [0.0] * 3, [0.0] * 3, physicsClientId=self.client)

    def before_step(self) -> None:
        position = p.getBasePositionAndOrientation(self.cube, physicsClientId=self.client)[0]
        p.applyExternalForce(self.cube, -1, [0.0, 0.0, -GRAVITY * self.mass], position, p.WORLD_FRAME,
                             physicsClientId=self.client)

    def sense(self) -> dict[str, np.ndarray]:
        position, orientation = p.getBasePositionAndOrientation(self.cube, physicsClientId=self.client)
        return {OBJECT: np.array([*position, *orientation], np.float64)}


class PushExpert:
    """Goes around to a point behind the cube on the line from the goal through the cube (at travel height,
    then down), then pushes along that line until the cube is at the goal. Each step moves the end effector at
    most STEP toward its way point, through IK from the measured joints with the last link pointing down (at
    the yaw nearest the pose the episode starts in, so the wrist does not spin)."""

    def __init__(self, kinematics, action_scale: float, size: float, noise: float, rng: np.random.Generator):
        self.kinematics, self.action_scale, self.size, self.noise, self.rng = (kinematics, action_scale, size,
                                                                               noise, rng)
        self.orientation = None
        self.goal: np.ndarray | None = None

    def waypoint(self, ee: np.ndarray, goal: np.ndarray, cube: np.ndarray) -> np.ndarray:
        to_goal = goal[:2] - cube[:2]
        left = float(np.linalg.norm(to_goal))
        u = to_goal / max(left, 1e-6)
        contact = self.size / 2 + EE_REACH  # end effector to cube centre while pushing
        behind = cube[:2] - u * (contact + BEHIND)
        offset = ee[:2] - cube[:2]
        along = float(np.dot(offset, u))
        across = abs(float(u[0] * offset[1] - u[1] * offset[0]))  # from the line through the cube to the goal
        low = ee[2] < TABLE_TOP + PUSH_HEIGHT + 0.03
        if along < -(self.size / 2 + 0.02) and across < 0.025 and low:  # in place behind the cube: push
            gap = max(-contact - along, 0.0)  # still to close before the link touches the cube
            ahead = min(gap + left, 2 * STEP)
            return np.array([*(cube[:2] + u * (along + ahead)), TABLE_TOP + PUSH_HEIGHT])
        if np.linalg.norm(ee[:2] - behind) > 0.015:  # go around, above the cube
            return np.array([*behind, TABLE_TOP + TRAVEL_HEIGHT])
        return np.array([*behind, TABLE_TOP + PUSH_HEIGHT])  # down behind the cube

    def act(self, goal, q, last_target, sensed) -> np.ndarray:
        goal, ee = np.asarray(goal, np.float64), self.kinematics.fk(q)
        if self.goal is None or not np.array_equal(goal, self.goal):  # a new episode: pick the wrist's yaw
            self.goal = goal.copy()
            downs = [p.getQuaternionFromEuler([math.pi, 0.0, yaw]) for yaw in DOWN_YAWS]
            self.orientation = min(downs, key=lambda o: np.abs(self.kinematics.ik(ee, q, orientation=o) - q).sum())
        target = self.waypoint(ee, goal, cube_xyz_yaw(sensed[OBJECT])[0])
        step = target - ee
        if (norm := float(np.linalg.norm(step))) > STEP:
            step *= STEP / norm
        q_next = self.kinematics.ik(ee + step, q, orientation=self.orientation)
        return noisy_step(q_next, last_target, self.action_scale, self.noise, self.rng)
