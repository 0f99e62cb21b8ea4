"""The arm from its URDF: the chain from the root to the end effector, its movable joints and their limits.

`task.robot` is a bundled name (a URDF that pybullet_data ships), a path to a URDF file, or `robot_description`
(a node reads the URDF from that topic: nodes/robot_description.py). Everything about the arm is read from the URDF:
the joints of the chain root -> `task.ee_link` in chain order (what `task.joint_names` defaults to), position
limits, velocity limits and a default home pose. Pure: xml.etree for the tree, no ROS, no physics.

Kinematics (FK/IK, kinematics.py) are PyBullet's, not this module's: PyBullet is already the simulator, so the
controller's forward kinematics is the very code that places the simulated end effector; its damped
least-squares IK takes joint limits and a rest pose (null space); both run in C at tens of microseconds per
call, inside the control tick's budget. Pinocchio would be faster still but is one more native dependency for
the same numbers, and pytorch-kinematics is slow per single call on a CPU.
"""
from __future__ import annotations

import functools
import hashlib
import math
import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from tdmpc_ros.config_rules import ConfigError

ROBOT_DESCRIPTION = "robot_description"
# Bundled arms: a URDF from pybullet_data, its usual end-effector link and, where one is known to work well
# for reaching in front of the arm, a ready pose (home). Everything else comes from the URDF itself.
BUNDLED: dict[str, tuple[str, str, tuple[float, ...] | None]] = {
    "kuka_iiwa": ("kuka_iiwa/model.urdf", "lbr_iiwa_link_7", (0.0, 0.4, 0.0, -1.2, 0.0, 1.0, 0.0)),
    "panda": ("franka_panda/panda.urdf", "panda_grasptarget", (0.0, -0.2, 0.0, -2.0, 0.0, 1.9, 0.785)),
    "xarm6": ("xarm/xarm6_robot.urdf", "link6", None),
}
MOVABLE = ("revolute", "continuous", "prismatic")
CONTINUOUS_LIMIT = math.pi  # rad either side of zero: the safety clips need a range, and a turn each way is plenty
DEFAULT_VELOCITY = math.pi  # rad/s (m/s) where the URDF gives no velocity limit


@dataclass(frozen=True)
class UrdfJoint:
    name: str
    type: str
    parent: str
    child: str
    lower: float
    upper: float
    velocity: float
    effort: float
    """N m (N); inf where the URDF gives none (a continuous joint without <limit>): sim.max_effort caps it."""


@dataclass(frozen=True)
class Urdf:
    """A parsed URDF: its links, joints by name, and the tree's root link."""

    source: str
    """The file it came from (or `robot_description`)."""
    digest: str
    """sha256 of the URDF text: which arm a checkpoint was trained on."""
    root: str
    links: tuple[str, ...]
    joints: dict[str, UrdfJoint]

    def chain(self, ee_link: str) -> list[UrdfJoint]:
        """Joints from the root to `ee_link`, fixed ones included, in order."""
        if ee_link not in self.links:
            raise ConfigError(f"task.ee_link: {ee_link!r} is not a link of {self.source}; its links are "
                              f"{sorted(self.links)}")
        by_child = {j.child: j for j in self.joints.values()}
        chain, link = [], ee_link
        while link != self.root:
            chain.append(by_child[link])
            link = by_child[link].parent
        return chain[::-1]

    def tip(self) -> str:
        """The end effector when none is named: the leaf link with the most movable joints above it."""
        parents = {j.parent for j in self.joints.values()}
        leaves = [link for link in self.links if link not in parents]
        depth = {leaf: sum(j.type in MOVABLE for j in self.chain(leaf)) for leaf in leaves}
        best = max(depth.values())
        tips = sorted(leaf for leaf in leaves if depth[leaf] == best)
        if best == 0 or len(tips) > 1:
            raise ConfigError(f"task.ee_link: not given and {self.source} has no single deepest link "
                              f"(candidates {tips}); name one of {sorted(self.links)}")
        return tips[0]


@dataclass(frozen=True)
class ArmDescription:
    """The controlled arm: joint names in action order, their limits, the end effector and a home pose."""

    urdf: Urdf
    ee_link: str
    joint_names: tuple[str, ...]
    lower: tuple[float, ...]
    upper: tuple[float, ...]
    velocity: tuple[float, ...]
    effort: tuple[float, ...]
    home: tuple[float, ...]
    """The bundled ready pose, else mid-range of each joint (0 for continuous ones)."""

    @property
    def base_link(self) -> str:
        return self.urdf.root


def _float(element, key: str, default: float, where: str) -> float:
    text = element.get(key) if element is not None else None
    if text is None:
        return default
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"{where}: {key}={text!r} is not a number") from None
    if not math.isfinite(value):
        raise ConfigError(f"{where}: {key}={text!r} is not finite")
    return value


def parse_urdf_text(text: str, source: str) -> Urdf:
    """Parse a URDF; what does not parse, or is not a tree of named links and joints, is an error naming
    `source` and what is wrong."""
    try:
        robot = ET.fromstring(text)
    except ET.ParseError as exc:
        raise ConfigError(f"task.robot: {source} is not valid XML: {exc}") from None
    if robot.tag != "robot":
        raise ConfigError(f"task.robot: {source}: the root element is <{robot.tag}>, not <robot>")
    links = tuple(link.get("name", "") for link in robot.findall("link"))
    if not links or "" in links:
        raise ConfigError(f"task.robot: {source}: {'a <link> without a name' if links else 'no <link>'}")
    joints: dict[str, UrdfJoint] = {}
    for element in robot.findall("joint"):
        name, kind = element.get("name", ""), element.get("type", "")
        where = f"task.robot: {source}: joint {name!r}"
        parent, child = element.find("parent"), element.find("child")
        if not name or parent is None or child is None or parent.get("link") not in links \
                or child.get("link") not in links:
            raise ConfigError(f"{where}: needs a name and <parent link>/<child link> naming links of the file")
        limit = element.find("limit")
        if kind in ("revolute", "prismatic") and limit is None:
            raise ConfigError(f"{where}: a {kind} joint needs <limit lower upper velocity>")
        lower, upper = (-CONTINUOUS_LIMIT, CONTINUOUS_LIMIT) if kind == "continuous" else (
            _float(limit, "lower", 0.0, where), _float(limit, "upper", 0.0, where))
        if lower > upper:
            raise ConfigError(f"{where}: lower limit {lower:g} above upper {upper:g}")
        velocity, effort = _float(limit, "velocity", 0.0, where), _float(limit, "effort", 0.0, where)
        joints[name] = UrdfJoint(name, kind, parent.get("link"), child.get("link"), lower, upper,
                                 velocity if velocity > 0 else DEFAULT_VELOCITY, effort if effort > 0 else math.inf)
    children = [j.child for j in joints.values()]
    roots = [link for link in links if link not in children]
    if len(roots) != 1 or len(set(children)) != len(children):
        raise ConfigError(f"task.robot: {source}: links do not form one tree (roots {roots})")
    return Urdf(source, hashlib.sha256(text.encode()).hexdigest(), roots[0], links, joints)


@functools.lru_cache(maxsize=32)
def _parse_file(path: str, mtime_ns: int, size: int) -> Urdf:
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"task.robot: cannot read {path}: {exc}") from None
    return parse_urdf_text(text, path)


def urdf_path(robot: str) -> str:
    """The URDF file of `task.robot`: a bundled arm's in pybullet_data, or the path given."""
    if robot in BUNDLED:
        import pybullet_data

        return os.path.join(pybullet_data.getDataPath(), BUNDLED[robot][0])
    if robot == ROBOT_DESCRIPTION:
        raise ConfigError("task.robot: robot_description: the URDF comes from the robot_description topic; "
                          "a node reads it before the arm is built")
    if not os.path.isfile(robot):
        raise ConfigError(f"task.robot: {robot!r} is neither a bundled arm {sorted(BUNDLED)} nor a URDF file")
    return os.path.abspath(robot)


def load_urdf(robot: str) -> Urdf:
    path = urdf_path(robot)
    st = os.stat(path)
    return _parse_file(path, st.st_mtime_ns, st.st_size)


def describe(urdf: Urdf, joint_names=(), ee_link: str = "", bundled: str = "") -> ArmDescription:
    """The arm of `urdf` up to `ee_link` (default: the bundled arm's, else the deepest link); `joint_names`
    (default: the chain's movable joints) must be movable joints on that chain."""
    ee_link = ee_link or (BUNDLED[bundled][1] if bundled in BUNDLED else urdf.tip())
    chain = urdf.chain(ee_link)
    movable = [j.name for j in chain if j.type in MOVABLE]
    if not movable:
        raise ConfigError(f"task.ee_link: no movable joint between {urdf.root!r} and {ee_link!r} in {urdf.source}")
    names = tuple(joint_names) or tuple(movable)
    for name in names:
        if name not in movable:
            what = "a fixed joint" if name in urdf.joints else "not a joint of the file"
            raise ConfigError(f"task.joint_names: {name!r} is not a movable joint on the chain {urdf.root} -> "
                              f"{ee_link} of {urdf.source} ({what}); the chain's joints are {movable}")
    joints = [urdf.joints[name] for name in names]
    ready = BUNDLED[bundled][2] if bundled in BUNDLED and names == tuple(movable) else None
    home = ready or tuple(0.0 if j.type == "continuous" else min(max(0.0, j.lower), j.upper)
                          if j.upper - j.lower >= 2 * math.pi else (j.lower + j.upper) / 2 for j in joints)
    return ArmDescription(urdf, ee_link, names, tuple(j.lower for j in joints), tuple(j.upper for j in joints),
                          tuple(j.velocity for j in joints), tuple(j.effort for j in joints), tuple(home))


def describe_task(task) -> ArmDescription:
    """The arm a TaskConfig names (its URDF read from disk)."""
    return describe(load_urdf(task.robot), task.joint_names, task.ee_link, task.robot)


def check_velocity(task, arm: ArmDescription) -> None:
    """A full action must not ask a joint to move faster than its URDF velocity limit."""
    speed = task.action_scale * task.control_rate_hz
    for name, limit in zip(arm.joint_names, arm.velocity):
        if speed > limit:
            raise ConfigError(f"task.action_scale x task.control_rate_hz = {task.action_scale:g} x "
                              f"{task.control_rate_hz:g} = {speed:g} rad/s exceeds joint {name!r}'s velocity "
                              f"limit {limit:g} rad/s")


def resolve_task(task) -> ArmDescription | None:
    """Fill `task.joint_names` and `task.ee_link` from the URDF where empty and check the velocity rule; None
    (nothing filled) for `robot_description`, whose URDF only a node receives, and for a URDF file that is not
    here when both are filled (a checkpoint trained on another machine)."""
    if task.robot == ROBOT_DESCRIPTION:
        return None
    if task.robot not in BUNDLED and task.joint_names and task.ee_link and not os.path.isfile(task.robot):
        return None  # a checkpoint's record of an arm whose file is elsewhere: loading an arm checks the names
    urdf = load_urdf(task.robot)
    if task.robot not in BUNDLED:
        task.robot = urdf.source  # the absolute path: a node started elsewhere finds the same file
    if not set(task.joint_names) <= set(urdf.joints):
        return None  # names of another arm (a model-only config): loading the arm's kinematics refuses them
    arm = describe(urdf, task.joint_names, task.ee_link, task.robot)
    task.ee_link = arm.ee_link
    task.joint_names = list(arm.joint_names)
    check_velocity(task, arm)
    return arm


def arm_identity(task) -> dict:
    """What a checkpoint records of the arm it was trained on: joint names, end effector, action space and the
    URDF's sha256 (None where the URDF is not on disk: robot_description, or a model-only config)."""
    try:
        digest = load_urdf(task.robot).digest
    except ConfigError:
        digest = None
    return {"robot": task.robot, "joint_names": list(task.joint_names), "ee_link": task.ee_link,
            "action_space": task.action_space, "urdf_sha256": digest}
