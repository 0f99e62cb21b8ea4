"""Helpers for tests that run real nodes over real DDS: processes, waiting for matches, collecting messages."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tdmpc_ros.cli.launch import STOP_TIMEOUT_S, param_text

REPO = Path(__file__).resolve().parent.parent
CONFIG = REPO / "config" / "arm.yaml"


def start_node(name: str, params: dict | None = None, log_path: Path | None = None,
               env: dict[str, str] | None = None, hidden: Path | None = None) -> subprocess.Popen:
    """Start tdmpc_ros.nodes.<name> as its own process with the repo config plus `section.field` overrides
    (and `env` added to this process's environment). `hidden`: a folder the node cannot see (an empty tmpfs
    mounted over it in a mount namespace of the node's own, as on another machine; needs root)."""
    args = [sys.executable, "-m", f"tdmpc_ros.nodes.{name}", "--ros-args", "--params-file", str(CONFIG)]
    if hidden is not None:  # unshare and sh exec, so the node keeps the pid (and gets the signals) sent to it
        args = ["unshare", "--mount", "--", "sh", "-c", 'mount -t tmpfs none "$0" && exec "$@"', str(hidden), *args]
    for key, value in (params or {}).items():
        args += ["-p", f"{key}:={param_text(value)}"]
    out = open(log_path, "w") if log_path else subprocess.DEVNULL
    return subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}, cwd=REPO,
                            start_new_session=True)


CHEAP_PLANNER = {"planner.compile": False, "planner.num_samples": 64, "planner.num_pi_trajs": 8,
                 "planner.num_elites": 8, "planner.iterations": 2}  # a node's planner, cheap enough for tests


def untrained_checkpoint(path, cfg) -> str:
    """An untrained agent of `cfg` saved as a checkpoint at `path`; returns the path (a node parameter)."""
    from tdmpc_ros.learning.agent import Agent
    from tdmpc_ros.learning.checkpoint import save_checkpoint

    save_checkpoint(path, Agent(cfg), {"updates": 0, "env_steps": 0})
    return str(path)


def stop(proc: subprocess.Popen, sig=signal.SIGINT, timeout: float = STOP_TIMEOUT_S) -> int:
    """Signal a node process and wait; SIGKILL if it does not exit in time."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def spin_until(node, predicate, timeout: float, executor=None) -> bool:
    """Spin `node` (on an executor of its own context) until predicate() is true or timeout (s) passes."""
    if executor is None:
        executor = _executor_for(node)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        executor.spin_once(timeout_sec=0.02)
    return predicate()


def next_items(node, items: list, count: int, skip: int = 0, timeout: float = 30.0) -> list:
    """Spin until `count` more items (after skipping `skip`) are appended to `items` by the node's callbacks, and
    return them; fails the test, saying how many came, if they do not."""
    first = len(items) + skip
    assert spin_until(node, lambda: len(items) >= first + count, timeout), f"{len(items) - first} of {count} came"
    return items[first:first + count]


def _executor_for(node):
    from rclpy.executors import SingleThreadedExecutor

    if not hasattr(node, "_test_executor"):
        node._test_executor = SingleThreadedExecutor(context=node.context)
        node._test_executor.add_node(node)
    return node._test_executor


def wait_for_publisher(node, topic: str, timeout: float = 20.0) -> bool:
    """Wait until some process publishes on `topic` (discovery can take seconds)."""
    return spin_until(node, lambda: node.count_publishers(topic) > 0, timeout)


def wait_for_subscriber(node, topic: str, timeout: float = 20.0) -> bool:
    return spin_until(node, lambda: node.count_subscribers(topic) > 0, timeout)


class LaunchCommand:
    """`tdmpc-ros launch arm` as one child process, with Launcher's start/exited_required/shutdown/procs, so a
    LaunchedGraph can run the node set through the command line (its SIGINT handling and exit-code line)."""

    def __init__(self, arguments: dict[str, str], out, overrides: dict | None = None):
        assert not overrides, "the command line takes launch arguments only"
        self.command = [sys.executable, "-m", "tdmpc_ros.cli.main", "launch", "arm",
                        *(f"{name}:={value}" for name, value in arguments.items())]
        self.out = out
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self) -> None:
        self.procs["launch"] = subprocess.Popen(self.command, stdout=self.out, stderr=subprocess.STDOUT)

    def exited_required(self) -> str | None:
        """The launcher exits when a required node does."""
        return "launch" if self.procs["launch"].poll() is not None else None

    def shutdown(self, timeout: float = STOP_TIMEOUT_S) -> dict[str, int]:
        return {name: stop(proc, timeout=timeout) for name, proc in self.procs.items()}
