"""`tdmpc-ros launch arm [name:=value ...]`: the node set of arm.launch.py where launch_ros is not installed.

Starts the same executables (<prefix>/lib/tdmpc_ros/) in the same namespaces with the same parameters
(config/arm.yaml plus the launch-argument overrides) and remappings, all from tdmpc_ros.launch_spec; prefixes each
node's output with its label (`controller`, or `arm0/controller` in a fleet), forwards SIGINT/SIGTERM, and shuts
all nodes down when a required one exits.
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import yaml

from tdmpc_ros.config import default_config_path
from tdmpc_ros.errors import InputError
from tdmpc_ros.launch_spec import LAUNCH_ARGUMENTS, PACKAGE, NodeLaunch, node_launches

# A node's SIGINT shutdown may take this long before SIGKILL: the learner finishes an update in flight (up to
# 30 s on a loaded machine) and writes its final checkpoint. A clean stop takes a second or two.
STOP_TIMEOUT_S = 45.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("launch_file", choices=["arm"], help="which launch description (arm.launch.py)")
    parser.add_argument("arguments", nargs="*", metavar="name:=value",
                        help="launch arguments: " + ", ".join(LAUNCH_ARGUMENTS))


def parse_launch_arguments(items: list[str]) -> dict[str, str]:
    values = {}
    for item in items:
        name, sep, value = item.partition(":=")
        if not sep:
            raise InputError(f"launch argument {item!r} is not name:=value")
        values[name] = value
    return values


def executable_path(name: str) -> Path:
    """<prefix>/lib/tdmpc_ros/<name>, found through the ament index (as launch_ros does), else sys.prefix."""
    try:
        from ament_index_python.packages import get_package_prefix

        prefix = Path(get_package_prefix(PACKAGE))
    except Exception:  # not on AMENT_PREFIX_PATH: the venv this command runs from
        prefix = Path(sys.prefix)
    path = prefix / "lib" / PACKAGE / name
    if not path.exists():
        raise FileNotFoundError(f"executable {path} not found: run `make install` (or colcon build) first")
    return path


def param_text(value) -> str:
    """A `-p name:=value` value in the YAML syntax rcl parses (strings quoted, so '1' stays a string)."""
    strings = isinstance(value, str) or (isinstance(value, list) and all(isinstance(v, str) for v in value))
    style = "'" if strings else None
    text = yaml.safe_dump(value, default_flow_style=True, default_style=style).strip()
    return text.removesuffix("...").strip()


def node_command(spec: NodeLaunch, config: str) -> list[str]:
    cmd = [sys.executable, str(executable_path(spec.executable)), "--ros-args", "-r", f"__node:={spec.name}"]
    if spec.namespace:
        cmd += ["-r", f"__ns:=/{spec.namespace.strip('/')}"]
    for name, target in spec.remappings:
        cmd += ["-r", f"{name}:={target}"]
    cmd += ["--params-file", config]
    for key, value in spec.parameters.items():
        cmd += ["-p", f"{key}:={param_text(value)}"]
    return cmd


def _die_with_parent() -> None:
    """In the child: SIGTERM when the launcher dies, even by SIGKILL, so no node is left orphaned (Linux)."""
    import ctypes

    PR_SET_PDEATHSIG = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class Launcher:
    """Runs a node set as child processes; used by `tdmpc-ros launch` and `tdmpc-ros demo`."""

    def __init__(self, arguments: dict[str, str], out=None, overrides: dict | None = None):
        """`overrides`: extra `section.field` parameters for every node (benchmarks, the demo)."""
        self.specs = node_launches(arguments)
        for spec in self.specs:
            spec.parameters.update(overrides or {})
        self.config = arguments.get("config") or str(default_config_path())
        self.out = out or sys.stdout
        self.procs: dict[str, subprocess.Popen] = {}
        self._threads: list[threading.Thread] = []
        self._print_lock = threading.Lock()

    def start(self) -> None:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        for spec in self.specs:
            proc = subprocess.Popen(node_command(spec, self.config), env=env,
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                    start_new_session=True,  # our SIGINT reaches children only via us
                                    preexec_fn=_die_with_parent)
            self.procs[spec.label] = proc
            thread = threading.Thread(target=self._relay, args=(spec.label, proc), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _relay(self, name: str, proc: subprocess.Popen) -> None:
        for line in proc.stdout:
            with self._print_lock:
                self.out.write(f"[{name}] {line}")
                self.out.flush()

    def exited_required(self) -> str | None:
        """Name of a required node that has exited, if any."""
        for spec in self.specs:
            if spec.required and self.procs[spec.label].poll() is not None:
                return spec.label
        return None

    def shutdown(self, timeout: float = STOP_TIMEOUT_S) -> dict[str, int]:
        """SIGINT every running node, then SIGKILL what is left after `timeout`; returns exit codes."""
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        deadline = time.monotonic() + timeout
        for proc in self.procs.values():
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for thread in self._threads:
            thread.join(timeout=2.0)
        return {name: proc.returncode for name, proc in self.procs.items()}


def run(args: argparse.Namespace) -> int:
    launcher = Launcher(parse_launch_arguments(args.arguments))
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    launcher.start()
    print(f"[launch] started {', '.join(f'{n} (pid {p.pid})' for n, p in launcher.procs.items())}", flush=True)
    failed = None
    while not stop.is_set():
        failed = launcher.exited_required()
        if failed:
            print(f"[launch] required node {failed} exited "
                  f"(code {launcher.procs[failed].returncode}): shutting down", flush=True)
            break
        stop.wait(0.2)
    codes = launcher.shutdown()
    print(f"[launch] exit codes: {codes}", flush=True)
    return 0 if failed is None else (codes[failed] or 1)
