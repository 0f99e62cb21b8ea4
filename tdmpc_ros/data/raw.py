"""Episodes rebuilt from raw recordings: /joint_states, the joint command topic and /goal, as any ROS 2 arm
(or a human teleoperating it) produces them, turned into the transitions the controller would have sent.

A step happens at each command. Its observation comes from the latest joint state at or before the command
(log time), its action is the command's change of target scaled to [-1, 1], and its reward and end come
from the state at the next command, as the controller's tick closes a step. A new goal starts an episode;
the first command of an episode moves from the measured position clipped to the safe joint limits, as the
controller's first target does.
"""
from __future__ import annotations

import bisect
import math
import numpy as np

from tdmpc_ros.config import TaskConfig
from tdmpc_ros.control.state import JointSample, read_joints
from tdmpc_ros.data.episode import Episode
from tdmpc_ros.task import EpisodeTracker, ReachTask
from tdmpc_ros.topics import COMMAND_TOPICS, GOAL, JOINT_STATES

JOINT_STATE = "sensor_msgs/msg/JointState"
FLOAT_ARRAY = "std_msgs/msg/Float64MultiArray"
TRAJECTORY = "trajectory_msgs/msg/JointTrajectory"
POINT = "geometry_msgs/msg/PointStamped"
ROLES = {"joints": f"/{JOINT_STATES} ({JOINT_STATE})",
         "command": f"a command topic ({FLOAT_ARRAY} on /{COMMAND_TOPICS['float64_multi_array']}, {TRAJECTORY}, "
                    f"or {JOINT_STATE} on /{COMMAND_TOPICS['joint_state']})",
         "goal": f"/{GOAL} ({POINT})"}


def raw_topic_role(topic: str, msgtype: str) -> str | None:
    """'joints', 'command' or 'goal' for the topics a raw recording is made of (any namespace), else None."""
    name = topic.rstrip("/").rsplit("/", 1)[-1]
    if msgtype == JOINT_STATE:
        return {JOINT_STATES: "joints", COMMAND_TOPICS["joint_state"]: "command"}.get(name)
    if (msgtype == FLOAT_ARRAY and name == "commands") or msgtype == TRAJECTORY:
        return "command"
    return "goal" if msgtype == POINT and name == GOAL else None


class RawRecording:
    """The joint states, commands and goals of one bag in log-time order; `episodes()` rebuilds the steps."""

    def __init__(self, task: TaskConfig):
        self.task_cfg = task
        self.names = list(task.joint_names)
        self.joints: list[tuple[int, JointSample]] = []
        self.commands: dict[str, list[tuple[int, np.ndarray | str]]] = {}
        self.goals: list[tuple[int, np.ndarray]] = []

    @staticmethod
    def missing_roles(present: set) -> str:
        return ", ".join(text for role, text in ROLES.items() if role not in present)

    def add(self, role: str, topic: str, stamp_ns: int, msg) -> None:
        if role == "joints":
            sample = JointSample(list(msg.name), list(msg.position), list(msg.velocity), received=stamp_ns * 1e-9)
            self.joints.append((stamp_ns, sample))
        elif role == "goal":
            self.goals.append((stamp_ns, np.array([msg.point.x, msg.point.y, msg.point.z], np.float64)))
        else:
            self.commands.setdefault(topic, []).append((stamp_ns, self._targets(msg)))

    def _targets(self, msg) -> np.ndarray | str:
        """Joint targets in task joint order, or why the command is unusable."""
        if hasattr(msg, "data"):  # Float64MultiArray: targets in controller joint order
            values = np.asarray(msg.data, np.float64)
            if values.shape != (len(self.names),):
                return f"command has {values.size} values for {len(self.names)} joints"
        else:
            if hasattr(msg, "points"):  # JointTrajectory: the first point is the next target
                if not len(msg.points):
                    return "trajectory without points"
                names, positions = list(msg.joint_names), list(msg.points[0].positions)
            else:  # JointState on /joint_command
                names, positions = list(msg.name), list(msg.position)
            if len(names) != len(positions) or set(self.names) - set(names):
                return f"command names {names} do not cover joints {self.names}"
            values = np.array([positions[names.index(n)] for n in self.names], np.float64)
        return values if np.isfinite(values).all() else "command holds NaN/inf"

    def episodes(self, kinematics, source: str = "") -> tuple[list[Episode], list[tuple[str, str, str | None]]]:
        """(episodes, problems as (topic, reason, the goal it concerns or None)). `kinematics`: the arm's
        ArmKinematics (fk, safe limits)."""
        problems: list[tuple[str, str, str | None]] = []
        if len(self.commands) > 1:
            topic = max(self.commands, key=lambda t: len(self.commands[t]))
            problems.append(("", f"several command topics {sorted(self.commands)}: used {topic} only", None))
        else:
            topic = next(iter(self.commands))
        commands = self.commands[topic]
        bad = [reason for _, reason in commands if isinstance(reason, str)]
        if bad:
            problems.append((topic, f"{len(bad)} commands skipped: {bad[0]}", None))
        commands = sorted(((t, c) for t, c in commands if not isinstance(c, str)), key=lambda item: item[0])
        command_times = [t for t, _ in commands]
        joints = sorted(self.joints, key=lambda item: item[0])
        goals = sorted(self.goals, key=lambda item: item[0])
        joint_times = [t for t, _ in joints]
        ends = [t for t, _ in goals[1:]] + [math.inf]
        early = bisect.bisect_left(command_times, goals[0][0]) if goals else len(commands)
        if early:
            problems.append((topic, f"{early} commands before the first goal ignored", None))
        episodes = []
        for index, ((start, goal), end) in enumerate(zip(goals, ends)):  # bisect: linear in goals and commands
            in_episode = commands[bisect.bisect_left(command_times, start):bisect.bisect_left(command_times, end)]
            episode, reason = self._episode(index, goal, in_episode, joints, joint_times, kinematics, source)
            if episode is not None:
                episodes.append(episode)
            elif reason:
                problems.append((topic, reason, f"goal {index}"))
        return episodes, problems

    def _episode(self, index, goal, commands, joints, joint_times, kinematics, source):
        task, tracker = ReachTask(self.task_cfg), EpisodeTracker(self.task_cfg)
        observations, actions, rewards, stamps = [], [], [], []
        last_target, ended = None, False
        terminated = False
        for stamp, target in commands:
            at = bisect.bisect_right(joint_times, stamp) - 1
            if at < 0:
                continue  # recording began between commands and states: start at the first state
            state = read_joints(joints[at][1], self.names, joints[at][1].received, math.inf)
            if isinstance(state, str):
                return None, f"bad joint state before command at {stamp} ns: {state}"
            q, qd = state
            ee = kinematics.fk(q)
            observations.append(task.observation(q, qd, ee, goal))
            if actions:  # this state is the outcome of the previous command
                rewards.append(task.reward(ee, goal))
                terminated, truncated = tracker.step(task.within_radius(ee, goal))
                if terminated or truncated:
                    ended = True
                    break
            if last_target is None:
                last_target = np.clip(q, kinematics.safe_lower, kinematics.safe_upper)
            actions.append(np.clip((target - last_target) / self.task_cfg.action_scale, -1.0, 1.0))
            stamps.append(stamp)
            last_target = target
        if not ended and actions:  # the last command's outcome was never observed
            actions, stamps = actions[:-1], stamps[:-1]
        if not actions:
            return None, "fewer than two commands: no complete step"
        return Episode(index, np.stack(observations[:len(actions) + 1]), np.stack(actions),
                       np.array(rewards[:len(actions)], np.float32), terminated=terminated,
                       truncated=not terminated, stamps_ns=np.array(stamps, np.int64), source=source), None
