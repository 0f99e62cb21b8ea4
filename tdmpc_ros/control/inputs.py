"""What the controller takes in: joint states and the task's sensors (tasks/: e.g. push's object pose) judged
usable or not (a fault reported once per occurrence), and the checks every received message passes before
anything is used, each returning why it fails, or None.

The messages are read by field name only (rclpy or rosbags messages alike), so the checks are tested without
DDS. Sizes are judged before any array is copied.
"""
from __future__ import annotations

import math
import os
import re
import reprlib
from dataclasses import dataclass

import numpy as np

# A whole robot's /joint_states (arms, grippers, a mobile base) stays far below these; URDF joint names are short.
MAX_JOINT_STATE_ENTRIES = 1024
MAX_JOINT_NAME_CHARS = 256
# The learner announces one version per learner.publish_every updates: a jump this large past the running
# model is a corrupt or hostile message, and accepting it would refuse every real update after it.
MAX_MODEL_VERSION_JUMP = 1_000_000
MAX_PATH_CHARS = 4096  # Linux PATH_MAX
SHA256_HEX = re.compile(r"[0-9a-fA-F]{64}")


def shown(value, max_chars: int = 60) -> str:
    """repr of received input for a log line, cut short (at most 10 list entries, strings `max_chars` long):
    a hostile message must not turn into a megabyte of log. Reads only the part it shows."""
    short = reprlib.Repr()
    short.maxlist, short.maxstring = 10, max_chars
    return short.repr(value)


@dataclass
class JointSample:
    """One /joint_states message as received, before validation."""

    names: list[str]
    position: list[float]
    velocity: list[float]
    received: float
    """Monotonic receive time (s): staleness is judged by arrival, not by the sender's clock."""
    stamp_ns: int = 0
    """Header stamp (ns): in lockstep the simulated time of the state, which stamps what the tick sends."""


def read_joints(sample: JointSample | None, joint_names: list[str], now: float,
                timeout: float) -> tuple[np.ndarray, np.ndarray] | str:
    """(q, qd) in `joint_names` order, or the reason the sample is unusable."""
    if sample is None:
        return "no joint state received yet"
    age = now - sample.received
    if age > timeout:
        return f"joint state stale: {age:.3f} s old (state_timeout {timeout:.3f} s)"
    if len(sample.names) != len(set(sample.names)):
        return f"joint state has duplicate joint names: {shown(sample.names)}"
    missing = [n for n in joint_names if n not in sample.names]
    if missing:
        return f"joint state lacks joints: {missing} (got {shown(sample.names)})"
    if len(sample.position) != len(sample.names):
        return f"joint state size mismatch: {len(sample.position)} positions for {len(sample.names)} names"
    if sample.velocity and len(sample.velocity) != len(sample.names):
        return f"joint state size mismatch: {len(sample.velocity)} velocities for {len(sample.names)} names"
    index = [sample.names.index(n) for n in joint_names]
    q = np.array([sample.position[i] for i in index], np.float64)
    qd = np.array([sample.velocity[i] for i in index], np.float64) if sample.velocity else np.zeros(len(index))
    if not (np.isfinite(q).all() and np.isfinite(qd).all()):
        bad = [joint_names[i] for i in range(len(index)) if not (math.isfinite(q[i]) and math.isfinite(qd[i]))]
        return f"joint state holds NaN/inf: joints {bad}"
    return q, qd


@dataclass
class SensorSample:
    """One message of a task sensor (tasks/base.py's Sensor), converted: its values or why they are unusable."""

    values: np.ndarray | str
    received: float
    """Monotonic receive time (s), as JointSample's."""
    stamp_ns: int = 0
    """Header stamp (ns): in lockstep it must be the joint state's (the arm publishes both at each step)."""


POSE, POINT = "geometry_msgs/msg/PoseStamped", "geometry_msgs/msg/PointStamped"
SENSOR_TYPES = (POSE, POINT)  # the message types a task sensor may have


def sensor_values(msg_type: str, msg) -> np.ndarray | str:
    """A sensor message's values (PoseStamped: x y z qx qy qz qw; PointStamped: x y z), or why not usable."""
    if msg_type == POSE:
        position, orientation = msg.pose.position, msg.pose.orientation
        values = np.array([position.x, position.y, position.z, orientation.x, orientation.y, orientation.z,
                           orientation.w], np.float64)
        if np.isfinite(values).all() and abs(np.linalg.norm(values[3:]) - 1.0) > 1e-3:
            return f"orientation is not a unit quaternion: {values[3:].round(4).tolist()}"
    elif msg_type == POINT:
        values = np.array([msg.point.x, msg.point.y, msg.point.z], np.float64)
    else:
        return f"unsupported sensor message type {msg_type}"
    if not np.isfinite(values).all():
        return f"holds NaN/inf: {values.tolist()}"
    return values


def read_sensed(sensors, samples: dict[str, SensorSample], now: float, timeout: float,
                stamp_ns: int | None = None) -> dict[str, np.ndarray] | str:
    """The task's sensed values by name, or why the state is unusable: a sensor missing, stale (older than
    `timeout` at `now`; in lockstep, `stamp_ns` given, stamped before the joint state) or bad."""
    sensed = {}
    for sensor in sensors:
        sample = samples.get(sensor.name)
        if sample is None:
            return f"{sensor.topic} missing: none received yet"
        if stamp_ns is not None and sample.stamp_ns < stamp_ns:
            return (f"{sensor.topic} stale: stamped {(stamp_ns - sample.stamp_ns) * 1e-9:.3f} s before the joint "
                    "state")
        if stamp_ns is None and (age := now - sample.received) > timeout:
            return f"{sensor.topic} stale: {age:.3f} s old (state_timeout {timeout:.3f} s)"
        if isinstance(sample.values, str):
            return f"{sensor.topic} unusable: {sample.values}"
        sensed[sensor.name] = sample.values
    return sensed


class FaultLatch:
    """Reports a fault once when it starts (or changes kind), and once when it clears."""

    def __init__(self):
        self.active: str | None = None
        self.count = 0

    def update(self, fault: str | None) -> str | None:
        """Returns a log line when the fault state changes, else None. A fault's kind is the text before ':'."""
        kind = fault.split(":")[0] if fault else None
        active_kind = self.active.split(":")[0] if self.active else None
        if kind == active_kind:
            self.active = fault
            return None
        self.active = fault
        if fault:
            self.count += 1
            return f"holding last target: {fault}"
        return "state good again: resuming control"


def stamp_problem(stamp) -> str | None:
    """What is malformed about a header stamp (builtin_interfaces/Time), or None. Zero (unset) is fine."""
    if stamp.nanosec >= 1_000_000_000:
        return f"malformed stamp: nanosec {stamp.nanosec} is not below 1e9"
    if stamp.sec < 0:
        return f"negative stamp: sec {stamp.sec}"
    return None


def joint_state_problem(msg) -> str | None:
    """Why a /joint_states message cannot even be read (oversized, malformed stamp)."""
    sizes = {"names": len(msg.name), "positions": len(msg.position), "velocities": len(msg.velocity),
             "efforts": len(msg.effort)}
    if max(sizes.values()) > MAX_JOINT_STATE_ENTRIES:
        return (f"oversized: {', '.join(f'{n} {what}' for what, n in sizes.items())} "
                f"(at most {MAX_JOINT_STATE_ENTRIES} each)")
    if any(len(name) > MAX_JOINT_NAME_CHARS for name in msg.name):
        return f"oversized: a joint name longer than {MAX_JOINT_NAME_CHARS} characters"
    return stamp_problem(msg.header.stamp)


def header_problem(header, frame: str) -> str | None:
    """Why a stamped message in the base `frame` (a goal, a task sensor's) is unusable by its header."""
    if problem := stamp_problem(header.stamp):
        return problem
    if header.frame_id != frame:
        return f"wrong frame: {shown(header.frame_id)} is not the base frame {frame!r}"
    return None


def goal_problem(msg, frame: str, low, high) -> str | None:
    """Why a goal (PointStamped) must not start an episode: finite, inside the task's goal box `low`..`high`
    (what the model learned to reach), in the base `frame`, stamped sanely."""
    if problem := header_problem(msg.header, frame):
        return problem
    xyz = [msg.point.x, msg.point.y, msg.point.z]
    if not all(math.isfinite(v) for v in xyz):
        return f"non-finite coordinates: {xyz}"
    if not all(lo <= v <= hi for v, lo, hi in zip(xyz, low, high)):
        return f"outside the goal box: {xyz} not within {list(low)} .. {list(high)} (task.goal_low/high)"
    return None


def model_update_problem(msg, running: int, newest: int) -> str | None:
    """Why an announced checkpoint (ModelUpdate) must not even reach the loader. `newest`: the newest version
    running or loading. The file itself is the loader's to check (checksum, regular file, size)."""
    if msg.version < newest:
        return f"out of order: older than v{newest}"
    if msg.version > running + MAX_MODEL_VERSION_JUMP:
        return (f"implausible version: over {MAX_MODEL_VERSION_JUMP} ahead of the running v{running} "
                "(would refuse every real update after it)")
    if not msg.sha256:
        return "no sha256: the update carries no checksum"
    if not SHA256_HEX.fullmatch(msg.sha256):
        return f"malformed sha256: {shown(msg.sha256)} is not 64 hex digits"
    if not msg.path:
        return "no path: the update names no file"
    if len(msg.path) > MAX_PATH_CHARS:
        return f"path too long: {len(msg.path)} characters (PATH_MAX {MAX_PATH_CHARS})"
    if not os.path.isabs(msg.path):
        return "relative path: the learner announces absolute paths"
    return None


def progress_problem(msg) -> str | None:
    """Why a LearnerProgress must not pace the world. +1: the learner rounds owed updates / utd_ratio up."""
    if msg.backlog_steps > msg.env_steps + 1:
        return f"inconsistent: {msg.backlog_steps} steps owed of {msg.env_steps} seen"
    return None
