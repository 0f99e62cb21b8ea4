"""Node parameters from the one config schema: every `section.field` of tdmpc_ros.config is a parameter."""
from __future__ import annotations

from rcl_interfaces.msg import ParameterDescriptor
from rclpy.node import Node

from tdmpc_ros.config import Config, flatten, unflatten


def declare_config(node: Node) -> Config:
    """Declare every config field as a parameter (defaults from the schema) and return the resulting Config.

    Values come from `--params-file config/arm.yaml` / launch `parameters=[...]` and `-p section.field:=v`.
    """
    descriptor = ParameterDescriptor(dynamic_typing=True)
    flat = flatten(Config())
    for name, default in flat.items():
        node.declare_parameter(name, default, descriptor)
    return unflatten({name: node.get_parameter(name).value for name in flat})
