"""Start the PyBullet arm, the MPPI controller and the learner: one arm, or a fleet feeding one learner.

    ros2 launch tdmpc_ros arm.launch.py [use_sim:=true] [learn:=true] [lockstep:=false] [device:=cpu]
        [backend:=torch] [demos:=DIR] [model:=CKPT] [namespace:=NS] [arms:=N|a,b] [role:=all|learner]
        [config:=YAML] [run_dir:=DIR]

The nodes, their namespaces, parameters and remappings come from tdmpc_ros.launch_spec.node_launches, shared with
`tdmpc-ros launch arm`: an OpaqueFunction hands it the arguments' values, so `arms:=N` can start N arm groups
(`--show-args` lists every argument). When a required node (an arm's controller or sim arm; the learner with
role:=learner) exits, the whole launch shuts down.
"""
from typing import List

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction, Shutdown
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare

from tdmpc_ros.launch_spec import LAUNCH_ARGUMENTS, PACKAGE, node_launches


def _typed(value):
    """Strings (and lists of them) as they are: launch_ros would otherwise read '1' or 'true' as YAML."""
    if isinstance(value, str):
        return ParameterValue(value, value_type=str)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return ParameterValue(value, value_type=List[str])
    return value


def launch_nodes(context):
    """The Node actions for the arguments' values in this launch (launch_spec.node_launches)."""
    values = {name: LaunchConfiguration(name).perform(context) for name in LAUNCH_ARGUMENTS}
    return [
        Node(
            package=PACKAGE,
            executable=spec.executable,
            name=spec.name,
            namespace=spec.namespace,
            parameters=[values["config"], {name: _typed(value) for name, value in spec.parameters.items()}],
            remappings=spec.remappings,
            output="both",
            emulate_tty=True,
            on_exit=Shutdown(reason=f"{spec.label} exited") if spec.required else None,
        )
        for spec in node_launches(values)
    ]


def generate_launch_description():
    default_config = PathJoinSubstitution([FindPackageShare(PACKAGE), "config", "arm.yaml"])
    arguments = [
        DeclareLaunchArgument(name, default_value=arg.default or (default_config if name == "config" else ""),
                              description=arg.description, choices=list(arg.choices) or None)
        for name, arg in LAUNCH_ARGUMENTS.items()
    ]
    return LaunchDescription(arguments + [OpaqueFunction(function=launch_nodes)])
