"""Launch a node set on a ROS domain of its own and watch it over DDS: the one harness of the benches, the
demo and the tests.

`LaunchedGraph` reserves a domain (domain_coordinator), exports it to the nodes it launches, runs them with
`Launcher` and spins a `GraphObserver` on an rclpy context of its own; every wait fails fast, with the tail of
the launch log, once a required node has exited. `GraphObserver` records the topics a caller asks for, each
subscribed on first use, so a bench pays only for what it reads. Unlike the pure core, this module uses rclpy.
"""
from __future__ import annotations

import io
import os
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from domain_coordinator import domain_id
from geometry_msgs.msg import PointStamped
from rclpy.executors import SingleThreadedExecutor
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray

from tdmpc_ros import topics
from tdmpc_ros.cli.launch import STOP_TIMEOUT_S, Launcher
from tdmpc_ros.msg import ModelUpdate, PlannerStatus, Transition
from tdmpc_ros.nodes import qos

# What a GraphObserver can record: name -> (message type, topic, QoS of the publishers' side).
TOPICS = {
    "commands": (Float64MultiArray, topics.COMMAND_TOPICS["float64_multi_array"], qos.STATE),
    "joint_states": (JointState, topics.JOINT_STATES, qos.STATE),
    "goals": (PointStamped, topics.GOAL, qos.LATCHED),
    "statuses": (PlannerStatus, topics.PLANNER_STATUS, 10),
    "transitions": (Transition, topics.TRANSITIONS, qos.TRANSITIONS),
    # Deep: an observer must see every announcement, also two published while its executor was busy.
    "model_updates": (ModelUpdate, topics.MODEL_UPDATES, qos.model_weights(100)),
    "diagnostics": (DiagnosticArray, topics.DIAGNOSTICS, 10),
}
# The controller is controlling: a plan, or the policy prior on a missed deadline.
CONTROLLING = (PlannerStatus.MODE_PLANNING, PlannerStatus.MODE_POLICY_FALLBACK)
LEARNER_DIAGNOSTICS = "tdmpc_learner"  # the end of the learner's DiagnosticStatus name


@dataclass(frozen=True)
class Sample:
    """A received message with its DDS timestamps (wall-clock ns, time.time_ns()'s clock)."""

    msg: Any
    published_ns: int  # source timestamp: when the publisher handed it to DDS (not self-reported)
    received_ns: int  # when this subscriber's DDS received it (before any executor delay here)
    sequence: int  # its writer's publication sequence number (from 1): a gap is a message this subscriber missed


@dataclass
class Recording:
    """One topic as received: how many messages, the last one, every one if `keep`, and per-message callbacks."""

    keep: bool
    samples: list[Sample] = field(default_factory=list)
    count: int = 0
    last: Sample | None = None
    callbacks: list[Callable[[Sample], None]] = field(default_factory=list)

    def add(self, sample: Sample) -> None:
        self.count += 1
        self.last = sample
        if self.keep:
            self.samples.append(sample)
        for callback in self.callbacks:
            callback(sample)


class GraphObserver:
    """Records topics of the node graph on `node`; whoever owns the node spins it."""

    def __init__(self, node):
        self.node = node
        self.recordings: dict[str, Recording] = {}
        self._learner: dict[str, str] | None = None

    def record(self, name: str, keep: bool = True,
               on_message: Callable[[Sample], None] | None = None) -> Recording:
        """The Recording of TOPICS[name], subscribed on the first call. `keep=False` keeps only the count and
        the last message (long runs); a later call can turn keeping on, never off."""
        recording = self.recordings.get(name)
        if recording is None:
            recording = self.recordings[name] = Recording(keep)
            msg_type, topic, profile = TOPICS[name]
            self.node.create_subscription(
                msg_type, topic,
                lambda msg, info: recording.add(Sample(msg, info["source_timestamp"], info["received_timestamp"],
                                                       info["publication_sequence_number"])),
                profile)
        recording.keep |= keep
        if on_message is not None:
            recording.callbacks.append(on_message)
        return recording

    def learner_values(self) -> dict[str, str]:
        """The learner's latest /diagnostics values (updates, updates_per_s, model_version, ...); the same dict
        is updated in place as diagnostics arrive."""
        if self._learner is None:
            self._learner = {}
            self.record("diagnostics", keep=False, on_message=self._on_diagnostics)
        return self._learner

    def _on_diagnostics(self, sample: Sample) -> None:
        for status in sample.msg.status:
            if status.name.endswith(LEARNER_DIAGNOSTICS):
                self._learner.clear()
                self._learner.update({kv.key: kv.value for kv in status.values})

    def controlling(self, with_model: bool = True) -> bool:
        """The controller's last status says it is controlling (with a model loaded, if `with_model`)."""
        last = self.record("statuses", keep=False).last  # keep=False: asking does not start keeping them
        return last is not None and last.msg.mode in CONTROLLING and (bool(last.msg.model_version) or not with_model)


class RequiredNodeExited(RuntimeError):
    """A required node of the launched set exited; the message holds the launch log's tail."""

    def __init__(self, node: str, code: int | None, log_tail: str):
        super().__init__(f"required node {node} exited (code {code}); launch log ends:\n{log_tail}")
        self.node = node


@contextmanager
def _environment(**values: str):
    """os.environ with `values` set (launched nodes inherit it), restored afterwards."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


class LaunchedGraph:
    """A node set launched on a reserved ROS domain and watched by a GraphObserver; a context manager.

    Inside `with`: subscribe through `observer`, then `start()` the nodes and wait with `spin_until`,
    `wait_controlling` or `spin`. Leaving shuts the nodes down (unless `shutdown()` did), then rclpy, and
    releases the domain.
    """

    def __init__(self, arguments: dict[str, str], overrides: dict | None = None, log_path: Path | None = None,
                 observer_name: str = "graph_observer", launcher_class=Launcher):
        """`arguments`/`overrides`: as Launcher takes them. `log_path`: where node output goes (in memory if
        None). `launcher_class`: Launcher, or anything with its start/exited_required/shutdown/procs."""
        self.arguments, self.overrides = arguments, overrides
        self.log_path = log_path
        self.observer_name = observer_name
        self.launcher_class = launcher_class
        self.exit_codes: dict[str, int] | None = None

    def __enter__(self) -> LaunchedGraph:
        with ExitStack() as stack:
            domain = stack.enter_context(domain_id())
            stack.enter_context(_environment(ROS_DOMAIN_ID=str(domain), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST"))
            self.log = stack.enter_context(open(self.log_path, "w") if self.log_path else io.StringIO())
            self.context = rclpy.Context()
            rclpy.init(context=self.context, domain_id=domain)
            stack.callback(self.context.try_shutdown)
            node = rclpy.create_node(self.observer_name, context=self.context)
            stack.callback(node.destroy_node)
            self.executor = SingleThreadedExecutor(context=self.context)
            self.executor.add_node(node)
            stack.callback(self.executor.shutdown)
            self.observer = GraphObserver(node)
            self.launcher = self.launcher_class(self.arguments, out=self.log, overrides=self.overrides)
            stack.callback(self.shutdown)
            self._resources = stack.pop_all()
        return self

    def __exit__(self, *exc_info) -> None:
        self._resources.close()

    def start(self) -> None:
        self.launcher.start()

    def log_tail(self, lines: int = 40) -> str:
        text = self.log.getvalue() if self.log_path is None else Path(self.log_path).read_text()
        return "".join(text.splitlines(keepends=True)[-lines:])

    def spin_until(self, predicate: Callable[[], Any], timeout: float) -> bool:
        """Spin the observer until predicate() holds (True) or `timeout` s pass (False); raises
        RequiredNodeExited as soon as a required node has exited."""
        deadline = time.monotonic() + timeout
        while not predicate():
            if (name := self.launcher.exited_required()):
                raise RequiredNodeExited(name, self.launcher.procs[name].returncode, self.log_tail())
            if time.monotonic() >= deadline:
                return False
            self.executor.spin_once(timeout_sec=min(0.05, max(0.0, deadline - time.monotonic())))
        return True

    def spin(self, seconds: float) -> None:
        """Spin for `seconds` (recording what arrives); raises RequiredNodeExited as spin_until does."""
        self.spin_until(lambda: False, seconds)

    def wait_controlling(self, with_model: bool = True, timeout: float = 120.0) -> None:
        """Spin until the controller controls (with a model, if `with_model`); TimeoutError with the log tail."""
        if not self.spin_until(lambda: self.observer.controlling(with_model), timeout):
            raise TimeoutError(f"controller not controlling{' with a model' if with_model else ''} after "
                               f"{timeout:.0f} s; launch log ends:\n{self.log_tail()}")

    def shutdown(self, timeout: float = STOP_TIMEOUT_S) -> dict[str, int]:
        """Stop the nodes (SIGINT, SIGKILL after `timeout`), once; returns their exit codes."""
        if self.exit_codes is None:
            self.exit_codes = self.launcher.shutdown(timeout=timeout)
        return self.exit_codes
