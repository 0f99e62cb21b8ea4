"""The package as a ROS user builds it: `colcon build` in a fresh workspace, then a node started from the install
space with only `install/setup.bash` sourced on top of the ROS underlay (here the venv that holds ROS from PyPI,
as /opt/ros/<distro> would on an apt install). README's workspace section walks the same steps."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from sensor_msgs.msg import JointState

from ros_helpers import REPO, spin_until, stop

pytestmark = [pytest.mark.slow, pytest.mark.ros]
UNDERLAY = Path(sys.prefix)


def source_files() -> list[str]:
    """What a clone holds: tracked files and untracked ones git does not ignore (no .venv, build, runs)."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, check=True,
                            capture_output=True).stdout.decode().split("\0")
    return [name for name in listed if name and (REPO / name).is_file()]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    ws = tmp_path_factory.mktemp("ws")
    for name in source_files():
        (ws / "src" / "tdmpc_ros" / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, ws / "src" / "tdmpc_ros" / name)
    env = {"HOME": os.environ["HOME"], "PATH": f"{UNDERLAY / 'bin'}:/usr/bin:/bin", "VIRTUAL_ENV": str(UNDERLAY),
           "AMENT_PREFIX_PATH": str(UNDERLAY), "CMAKE_PREFIX_PATH": str(UNDERLAY)}
    build = subprocess.run(["colcon", "build", "--packages-select", "tdmpc_ros"], cwd=ws, env=env,
                           capture_output=True, text=True, timeout=900)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    return ws


def in_workspace(ws: Path, command: str, **kwargs) -> subprocess.Popen:
    """`command` in a shell that has only the underlay and `source install/setup.bash`: nothing of this
    process's environment (no venv activation, no PYTHONPATH) besides the test's ROS domain."""
    env = {"HOME": os.environ["HOME"], "PATH": "/usr/bin:/bin", "AMENT_PREFIX_PATH": str(UNDERLAY),
           "ROS_DOMAIN_ID": os.environ.get("ROS_DOMAIN_ID", "0"), "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"}
    return subprocess.Popen(["bash", "-c", f"source install/setup.bash && {command}"], cwd=ws, env=env,
                            start_new_session=True, text=True, **kwargs)


def test_colcon_install_space_holds_everything_a_node_needs(workspace):
    prefix = workspace / "install" / "tdmpc_ros"
    for path in ["lib/tdmpc_ros/arm_node", "lib/tdmpc_ros/controller_node", "lib/tdmpc_ros/learner_node",
                 "bin/tdmpc-ros", "share/tdmpc_ros/launch/arm.launch.py", "share/tdmpc_ros/config/arm.yaml",
                 "share/tdmpc_ros/models/reach_small.pt", "share/tdmpc_ros/package.xml"]:
        assert (prefix / path).is_file(), path
    # Executables run with the interpreter the package was built for, whatever python3 is first on PATH.
    assert (prefix / "lib/tdmpc_ros/arm_node").read_text().splitlines()[0] == f"#!{UNDERLAY / 'bin' / 'python3'}"
    probe = in_workspace(workspace, str(UNDERLAY / "bin" / "python3") + " -c 'import tdmpc_ros.nodes.arm_node as n, tdmpc_ros.msg as m; print(n.__file__); "
                         "print(m.__file__)'", stdout=subprocess.PIPE)
    out, _ = probe.communicate(timeout=120)
    assert probe.returncode == 0 and all(line.startswith(str(prefix)) for line in out.split()), out


def test_a_node_started_from_the_install_space_publishes(workspace, rclpy_context):
    import rclpy

    node = rclpy.create_node("colcon_probe", context=rclpy_context)
    states = []
    node.create_subscription(JointState, "/joint_states", states.append, 10)
    arm = in_workspace(workspace, "exec install/tdmpc_ros/lib/tdmpc_ros/arm_node --ros-args --params-file "
                       "install/tdmpc_ros/share/tdmpc_ros/config/arm.yaml", stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT)
    try:
        assert spin_until(node, lambda: len(states) >= 5 or arm.poll() is not None, timeout=120), "no joint states"
        assert arm.poll() is None, arm.stdout.read()
        assert len(states[-1].name) == 7 and len(states[-1].position) == 7
    finally:
        stop(arm)
        node.destroy_node()
