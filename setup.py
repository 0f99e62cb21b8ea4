"""pip-installable Python package (the pure core, CLI and nodes).

On a ROS 2 install, `colcon build` (CMakeLists.txt) also generates the messages in msg/ and installs the node
executables, launch, config and models; `make install` does both into .venv.
"""
from glob import glob

from setuptools import find_packages, setup

setup(
    name="tdmpc_ros",
    version="0.1.0",
    description="Learned latent world-model MPC (TD-MPC2 + MPPI) for robot arms on ROS 2",
    packages=find_packages(include=["tdmpc_ros", "tdmpc_ros.*"]),
    python_requires=">=3.10",
    # Message definitions (rosbags reads them to decode bags), config, launch file and shipped models.
    data_files=[(f"share/tdmpc_ros/{folder}", glob(f"{folder}/*.*")) for folder in ("msg", "config", "launch", "models")],
    install_requires=["torch", "numpy", "pyyaml", "tqdm", "matplotlib", "onnx", "pybullet", "gymnasium", "rosbags"],
    entry_points={
        "console_scripts": [
            "tdmpc-ros = tdmpc_ros.cli.main:main",
            "tdmpc-arm-node = tdmpc_ros.nodes.arm_node:main",
            "tdmpc-controller-node = tdmpc_ros.nodes.controller_node:main",
            "tdmpc-learner-node = tdmpc_ros.nodes.learner_node:main",
        ]
    },
)
