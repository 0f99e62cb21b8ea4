"""Episodes rebuilt from raw recordings: /joint_states, the joint command topic, /goal and the task's sensors
(push: object_pose), as any ROS 2 arm (or a human teleoperating it) produces them, turned into the transitions
the controller would have sent.

The controller's own episode logic (control/episode.py's EpisodeSteps) runs over the recording: a step happens
at each command; its observation comes from the latest joint state and the latest message of each task sensor
at or before the command (log time: in lockstep the arm publishes both before the command that answers them), its
action is the command's change of target scaled to [-1, 1], and the state at the next command closes it (the
last command of a goal is closed by the newest state before the next goal, kept only if that ends the episode,
as a reset after an episode's end follows it). A goal starts an episode; an episode the task ends is followed at
once by the next on the same goal, as on an arm without resets; a bad joint state cuts the episode short there,
as the controller's fault hold does. Each episode's first command moves from the measured position clipped to
the safe joint limits, as the controller's first target does. A sensor with no message yet, or a bad one, is a
bad state as a bad joint state is.
"""
from __future__ import annotations

import bisect
import math
import numpy as np

from tdmpc_ros.config import TaskConfig
from tdmpc_ros.control.episode import EpisodeSteps
from tdmpc_ros.control.inputs import POINT, SENSOR_TYPES, JointSample, SensorSample, read_joints, read_sensed, sensor_values
from tdmpc_ros.data.episode import Episode, Transition
from tdmpc_ros.data.transitions import episode_of
from tdmpc_ros.tasks import make_task
from tdmpc_ros.topics import COMMAND_TOPICS, GOAL, JOINT_STATES

JOINT_STATE = "sensor_msgs/msg/JointState"
FLOAT_ARRAY = "std_msgs/msg/Float64MultiArray"
TRAJECTORY = "trajectory_msgs/msg/JointTrajectory"
ROLES = {"joints": f"/{JOINT_STATES} ({JOINT_STATE})",
         "command": f"a command topic ({FLOAT_ARRAY} on /{COMMAND_TOPICS['float64_multi_array']}, {TRAJECTORY}, "
                    f"or {JOINT_STATE} on /{COMMAND_TOPICS['joint_state']})",
         "goal": f"/{GOAL} ({POINT})"}


def raw_topic_role(topic: str, msgtype: str) -> str | None:
    """'joints', 'command', 'goal' or 'sensor' (a message a task sensor may be: the recording keeps those of its
    task's sensors) for the topics a raw recording is made of (any namespace), else None."""
    name = topic.rstrip("/").rsplit("/", 1)[-1]
    if msgtype == JOINT_STATE:
        return {JOINT_STATES: "joints", COMMAND_TOPICS["joint_state"]: "command"}.get(name)
    if (msgtype == FLOAT_ARRAY and name == "commands") or msgtype == TRAJECTORY:
        return "command"
    if msgtype == POINT and name == GOAL:
        return "goal"
    return "sensor" if msgtype in SENSOR_TYPES else None


class RawRecording:
    """The joint states, commands and goals of one bag in log-time order; `episodes()` rebuilds the steps."""

    def __init__(self, task: TaskConfig):
        self.task_cfg = task
        self.names = list(task.joint_names)
        self.joints: list[tuple[int, JointSample]] = []
        self.commands: dict[str, list[tuple[int, np.ndarray | str]]] = {}
        self.goals: list[tuple[int, np.ndarray]] = []
        self.sensors = make_task(task).sensors
        self.sensed: dict[str, list[tuple[int, SensorSample]]] = {s.name: [] for s in self.sensors}
        self.sensor_of_name = {s.topic.rsplit("/", 1)[-1]: s for s in self.sensors}  # a topic's last name part

    @staticmethod
    def missing_roles(present: set) -> str:
        return ", ".join(text for role, text in ROLES.items() if role not in present)

    def add(self, role: str, topic: str, stamp_ns: int, msg) -> None:
        if role == "joints":
            sample = JointSample(list(msg.name), list(msg.position), list(msg.velocity), received=stamp_ns * 1e-9)
            self.joints.append((stamp_ns, sample))
        elif role == "goal":
            self.goals.append((stamp_ns, np.array([msg.point.x, msg.point.y, msg.point.z], np.float64)))
        elif role == "sensor":
            sensor = self.sensor_of_name.get(topic.rstrip("/").rsplit("/", 1)[-1])
            if sensor is not None:
                self.sensed[sensor.name].append((stamp_ns, SensorSample(sensor_values(sensor.msg_type, msg),
                                                                        stamp_ns * 1e-9)))
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
        if silent := [s.topic for s in self.sensors if not self.sensed[s.name]]:
            return [], [("", f"no messages of the task's sensors {silent}: no observation can be built", None)]
        for samples in self.sensed.values():
            samples.sort(key=lambda item: item[0])
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
        steps = EpisodeSteps(self.task_cfg, kinematics.safe_lower, kinematics.safe_upper, kinematics.fk)
        episodes = []
        for index, ((start, goal), end) in enumerate(zip(goals, ends)):  # bisect: linear in goals and commands
            in_goal = commands[bisect.bisect_left(command_times, start):bisect.bisect_left(command_times, end)]
            built, reason = self._goal_episodes(steps, goal, in_goal, end, joints, joint_times, source)
            episodes += built
            if reason:
                problems.append((topic, reason, f"goal {index}"))
        return episodes, problems

    def _goal_episodes(self, steps: EpisodeSteps, goal, commands, end, joints, joint_times, source):
        """The episodes of one goal's commands (up to log time `end`), and a problem to report or None."""
        steps.begin(goal)
        episodes, reason = [], None
        transitions: list[Transition] = []
        stamps: list[int] = []  # of the commands stepped in the open episode

        def close(cut_short: bool) -> None:
            if transitions:
                for transition, stamp in zip(transitions, stamps):
                    transition.stamp_ns = stamp
                episodes.append(episode_of(transitions, cut_short, source))
            transitions.clear()
            stamps.clear()
            steps.begin()

        for stamp, target in commands:
            at = bisect.bisect_right(joint_times, stamp) - 1
            if at < 0:
                continue  # recording began between commands and states: start at the first state
            state = read_joints(joints[at][1], self.names, joints[at][1].received, math.inf)
            sensed = self._sensed_at(stamp)
            if isinstance(state, str) or isinstance(sensed, str):
                state = state if isinstance(state, str) else sensed
                reason = reason or f"bad joint state before command at {stamp} ns: {state}; episode cut short there"
                close(cut_short=True)
                continue
            q, qd = state
            if (transition := steps.observe(q, qd, sensed)) is not None:
                transitions.append(transition)
            if steps.ended:
                close(cut_short=False)
            applied = np.clip((target - steps.base_target(q)) / self.task_cfg.action_scale, -1.0, 1.0)
            steps.act(target, applied)
            stamps.append(stamp)
        at = bisect.bisect_left(joint_times, end) - 1  # the newest state before the next goal
        if stamps and at >= 0 and joint_times[at] > stamps[-1]:
            state = read_joints(joints[at][1], self.names, joints[at][1].received, math.inf)
            sensed = self._sensed_at(end - 1)
            if not isinstance(state, str) and not isinstance(sensed, str) and (
                    transition := steps.observe(*state, sensed)) is not None and steps.ended:
                transitions.append(transition)
        close(cut_short=not steps.ended)
        if not episodes and reason is None:
            reason = "fewer than two commands: no complete step"
        return episodes, reason

    def _sensed_at(self, stamp: int) -> dict[str, np.ndarray] | str:
        """The newest message of each task sensor at or before log time `stamp`, or why there is none usable."""
        newest = {}
        for name, samples in self.sensed.items():
            at = bisect.bisect_right(samples, stamp, key=lambda item: item[0]) - 1
            if at >= 0:
                newest[name] = samples[at][1]
        return read_sensed(self.sensors, newest, 0.0, math.inf)

