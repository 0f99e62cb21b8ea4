"""Start the PyBullet arm, the MPPI controller and the learner.

    ros2 launch tdmpc_ros arm.launch.py [use_sim:=true] [learn:=true] [lockstep:=false] [device:=cpu]
        [backend:=torch] [demos:=DIR] [model:=CKPT] [namespace:=NS] [config:=YAML] [run_dir:=DIR]

The nodes, their conditions and the parameters the arguments set come from tdmpc_ros.launch_spec, shared
with `tdmpc-ros launch arm`; every node is declared here (IfCondition on use_sim and learn), so
`ros2 launch --print` and `--show-args` list them all. When the controller (or the sim arm) exits, the whole
launch shuts down.
"""
from typing import List

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, Shutdown
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare

from tdmpc_ros.launch_spec import LAUNCH_ARGUMENTS, NODES, PACKAGE

VALUE_TYPES = {"str": str, "bool": bool, "list[str]": List[str]}


def _parameter(argument: str, kind: str) -> ParameterValue:
    value = LaunchConfiguration(argument)
    return ParameterValue([value] if kind == "list[str]" else value, value_type=VALUE_TYPES[kind])


def generate_launch_description():
    default_config = PathJoinSubstitution([FindPackageShare(PACKAGE), "config", "arm.yaml"])
    arguments = [
        DeclareLaunchArgument(name, default_value=arg.default or (default_config if name == "config" else ""),
                              description=arg.description, choices=list(arg.choices) or None)
        for name, arg in LAUNCH_ARGUMENTS.items()
    ]
    nodes = [
        Node(
            package=PACKAGE,
            executable=spec.executable,
            name=spec.name,
            namespace=LaunchConfiguration("namespace"),
            parameters=[LaunchConfiguration("config"), {
                **spec.parameters,
                **{name: _parameter(argument, kind) for name, (argument, kind) in spec.from_arguments.items()},
            }],
            condition=IfCondition(LaunchConfiguration(spec.condition)) if spec.condition else None,
            output="both",
            emulate_tty=True,
            on_exit=Shutdown(reason=f"{spec.name} exited") if spec.required else None,
        )
        for spec in NODES
    ]
    return LaunchDescription(arguments + nodes)
