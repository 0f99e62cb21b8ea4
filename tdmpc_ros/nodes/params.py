"""Node parameters from the one config schema.

Every node reads the whole config from its parameter overrides (`--params-file config/arm.yaml`, launch
`parameters=[...]`, `-p section.field:=v`), so one file serves every node. It declares as ROS parameters only
the sections it reads, each with the schema's type, docstring, range and rule, read-only unless the node can
apply a change while running; `ros2 param set` of a read-only one is refused with the reason, a live one is
checked against its rule before it takes effect.
"""
from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable, Iterable

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult
from rclpy.node import Node
from rclpy.parameter import Parameter

from tdmpc_ros.config import SECTION_CLASSES, Config, ConfigError, flatten, unflatten
from tdmpc_ros.config_rules import Rule, check_value, coerce, field_docs, field_kind, rule_of

# Parameters every rclpy node has besides the schema's.
ROS_OWN_PARAMETERS = ("use_sim_time", "start_type_description_service")
PARAMETER_TYPES = {"bool": Parameter.Type.BOOL, "int": Parameter.Type.INTEGER, "float": Parameter.Type.DOUBLE,
                   "str": Parameter.Type.STRING, "list[str]": Parameter.Type.STRING_ARRAY,
                   "list[float]": Parameter.Type.DOUBLE_ARRAY}
INT64_MAX = 2**63 - 1


def declare_config(node: Node, sections: Iterable[str] = tuple(SECTION_CLASSES), live: Iterable[str] = (),
                   on_change: Callable[[str, object], None] | None = None) -> Config:
    """The node's Config from its overrides; `sections` declared as parameters, `live` ones settable.

    A value the schema refuses, or a given parameter the schema does not know (rclpy alone would ignore a
    misspelt one), raises ConfigError naming it. `on_change(name, value)` applies an accepted live change.
    """
    kinds = {f"{s}.{f.name}": field_kind(f) for s, cls in SECTION_CLASSES.items() for f in dataclasses.fields(cls)}
    # rclpy keeps the overrides it was given in this dict; there is no public accessor.
    overrides = {name: p.value for name, p in node._parameter_overrides.items()
                 if name not in ROS_OWN_PARAMETERS and not name.startswith("qos_overrides.")}
    unknown = sorted(set(overrides) - set(kinds))
    if unknown:
        raise ConfigError(f"{node.get_name()}: unknown parameter(s) {unknown}; parameters are the config "
                          "fields as section.field (see tdmpc_ros/config.py)")
    cfg = unflatten({name: coerce(value, kinds[name]) for name, value in overrides.items()})
    live = set(live)
    values = flatten(cfg)
    for section in sections:
        cls = SECTION_CLASSES[section]
        docs = field_docs(cls)
        for f in dataclasses.fields(cls):
            name = f"{section}.{f.name}"
            descriptor = _descriptor(name, kinds[name], rule_of(f), docs.get(f.name, ""), name not in live)
            # The value is already the schema's type (1 for a float field was widened to 1.0).
            node.declare_parameter(name, values[name], descriptor, ignore_override=True)
    if live:
        node.add_on_set_parameters_callback(lambda params: _check_live(params, kinds, live))
        if on_change is not None:
            node.add_post_set_parameters_callback(
                lambda params: [on_change(p.name, coerce(p.value, kinds[p.name])) for p in params if p.name in live])
    return cfg


def _descriptor(name: str, kind: str, rule: Rule, doc: str, read_only: bool) -> ParameterDescriptor:
    constraints = ", ".join(filter(None, [rule.range_text(), f"one of {list(rule.choices)}" if rule.choices else "",
                                          f"{rule.length} values" if rule.length else ""]))
    descriptor = ParameterDescriptor(name=name, type=PARAMETER_TYPES[kind].value, description=doc,
                                     additional_constraints=constraints, read_only=read_only)
    low, high = _first(rule.ge, rule.gt), _first(rule.le, rule.lt)
    if kind == "float" and (low is not None or high is not None):
        descriptor.floating_point_range = [FloatingPointRange(
            from_value=float(low if low is not None else -sys.float_info.max),
            to_value=float(high if high is not None else sys.float_info.max), step=0.0)]
    elif kind == "int" and (low is not None or high is not None):
        descriptor.integer_range = [IntegerRange(
            from_value=int(low if low is not None else -INT64_MAX - 1),
            to_value=int(min(high, INT64_MAX) if high is not None else INT64_MAX), step=1)]
    return descriptor


def _first(*values):
    return next((v for v in values if v is not None), None)


def _check_live(params: list[Parameter], kinds: dict[str, str], live: set[str]) -> SetParametersResult:
    """Refuse a live change that breaks its field's rule (strict bounds included, which ROS ranges cannot
    say); read-only parameters never get here (rclpy refuses them first)."""
    for param in params:
        if param.name not in live:
            continue
        section, _, field_name = param.name.partition(".")
        rule = rule_of(next(f for f in dataclasses.fields(SECTION_CLASSES[section]) if f.name == field_name))
        try:
            check_value(param.name, coerce(param.value, kinds[param.name]), kinds[param.name], rule)
        except ConfigError as exc:
            return SetParametersResult(successful=False, reason=str(exc))
    return SetParametersResult(successful=True)
