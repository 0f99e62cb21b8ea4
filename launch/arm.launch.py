"""Start the PyBullet arm, the MPPI controller and the learner.

    ros2 launch tdmpc_ros arm.launch.py [use_sim:=true] [device:=cpu] [backend:=torch] [demos:=DIR]
        [model:=CKPT] [learn:=true] [namespace:=NS] [config:=YAML] [lockstep:=false] [run_dir:=DIR]

The node list comes from tdmpc_ros.launch_spec, shared with `tdmpc-ros launch arm`. When the controller
(or the sim arm) exits, the whole launch shuts down.
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction, Shutdown
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from tdmpc_ros.launch_spec import LAUNCH_ARGUMENTS, PACKAGE, node_launches


def _nodes(context, *args, **kwargs):
    values = {name: LaunchConfiguration(name).perform(context) for name in LAUNCH_ARGUMENTS}
    config = values["config"] or os.path.join(get_package_share_directory(PACKAGE), "config", "arm.yaml")
    return [
        Node(
            package=PACKAGE,
            executable=spec.executable,
            name=spec.name,
            namespace=values["namespace"],
            parameters=[config, spec.parameters],
            output="screen",
            emulate_tty=True,
            on_exit=Shutdown(reason=f"{spec.name} exited") if spec.required else None,
        )
        for spec in node_launches(values)
    ]


def generate_launch_description():
    arguments = [
        DeclareLaunchArgument(name, default_value=default, description=description)
        for name, (default, description) in LAUNCH_ARGUMENTS.items()
    ]
    return LaunchDescription(arguments + [OpaqueFunction(function=_nodes)])
