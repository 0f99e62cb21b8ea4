"""Node parameters from the one config schema: every `section.field` of tdmpc_ros.config is a parameter."""
from __future__ import annotations

from rcl_interfaces.msg import ParameterDescriptor
from rclpy.node import Node

from tdmpc_ros.config import Config, ConfigError, flatten, unflatten

# Parameters every rclpy node has besides the schema's.
ROS_OWN_PARAMETERS = ("use_sim_time", "start_type_description_service")


def declare_config(node: Node) -> Config:
    """Declare every config field as a parameter (defaults from the schema) and return the resulting Config.

    Values come from `--params-file config/arm.yaml` / launch `parameters=[...]` and `-p section.field:=v`.
    A value the schema refuses, or a given parameter the schema does not know (rclpy alone would ignore a
    misspelt one), raises ConfigError naming it.
    """
    descriptor = ParameterDescriptor(dynamic_typing=True)
    flat = flatten(Config())
    # rclpy keeps the overrides it was given (params files, -p) in this dict; there is no public accessor.
    unknown = sorted(name for name in node._parameter_overrides if name not in flat
                     and name not in ROS_OWN_PARAMETERS and not name.startswith("qos_overrides."))
    if unknown:
        raise ConfigError(f"{node.get_name()}: unknown parameter(s) {unknown}; parameters are the config "
                          "fields as section.field (see tdmpc_ros/config.py)")
    for name, default in flat.items():
        node.declare_parameter(name, default, descriptor)
    return unflatten({name: node.get_parameter(name).value for name in flat})
