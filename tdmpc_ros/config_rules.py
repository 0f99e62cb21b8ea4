"""What each config field may hold: type, finiteness, range, choices, list length.

Every schema field in `tdmpc_ros.config` is declared with `checked(default, ...)`, which stores its `Rule` in the
dataclass field's metadata; `check_fields` runs them at construction, so no Config object (from a YAML file,
node parameters, a checkpoint or code) holds a NaN rate, a negative scale or an unknown backend. Relations
between fields (elites <= samples, low <= high, one home value per joint) are checked by `Config` itself.
"""
from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import math
import re
import textwrap
from dataclasses import dataclass, field
from typing import Any

from tdmpc_ros.errors import InputError


class ConfigError(InputError, ValueError):
    """A config file, parameter or override that does not fit the schema; the message names the field."""


# A ROS name (topic, frame, node): letters, digits, '_' and '/' separators, '~' first for private names.
ROS_NAME = r"~?/?[A-Za-z_][A-Za-z0-9_]*(/[A-Za-z_][A-Za-z0-9_]*)*"
DEVICE = r"cpu|cuda(:[0-9]+)?"


@dataclass(frozen=True)
class Rule:
    """Constraints on one field. Bounds apply to numbers and to each item of a list of numbers."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    choices: tuple[str, ...] = ()
    pattern: str = ""
    """Regular expression a string (or each string of a list) must match whole; '' allows any."""
    empty_ok: bool = True
    """Whether '' (a string) or [] (a list) is allowed."""
    length: int | None = None
    """Exact list length."""
    unique: bool = False
    """No repeated list items."""

    def range_text(self) -> str:
        parts = [f"{op} {bound:g}" for op, bound in ((">=", self.ge), (">", self.gt), ("<=", self.le),
                                                      ("<", self.lt)) if bound is not None]
        return " and ".join(parts)


def checked(default: Any, **rule: Any):
    """A dataclass field with `default` (copied per instance for lists) and its Rule."""
    metadata = {"rule": Rule(**rule)}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=metadata)
    return field(default=default, metadata=metadata)


def rule_of(f: dataclasses.Field) -> Rule:
    return f.metadata.get("rule", Rule())


def field_kind(f: dataclasses.Field) -> str:
    """'bool', 'int', 'float', 'str', 'list[str]' or 'list[float]' (annotations are strings here)."""
    return str(f.type).replace(" ", "")


def check_fields(section: str, obj: Any) -> None:
    """Check every field of a section dataclass against its type and Rule; ConfigError names the field."""
    for f in dataclasses.fields(obj):
        check_value(f"{section}.{f.name}", getattr(obj, f.name), field_kind(f), rule_of(f))


def check_value(name: str, value: Any, kind: str, rule: Rule) -> None:
    if kind.startswith("list["):
        if not isinstance(value, list):
            raise ConfigError(f"{name}: expected a list, got {value!r}")
        if not value and not rule.empty_ok:
            raise ConfigError(f"{name}: must not be empty")
        if rule.length is not None and len(value) != rule.length:
            raise ConfigError(f"{name}: expected {rule.length} values, got {len(value)}: {value!r}")
        if rule.unique and len(set(value)) != len(value):
            raise ConfigError(f"{name}: repeated entries in {value!r}")
        item = kind[5:-1]
        for i, v in enumerate(value):
            check_value(f"{name}[{i}]", v, item, dataclasses.replace(rule, empty_ok=False) if item == "str" else rule)
        return
    if kind == "bool":
        if not isinstance(value, bool):
            raise ConfigError(f"{name}: expected true/false, got {value!r}")
    elif kind == "str":
        _check_str(name, value, rule)
    elif kind in ("int", "float"):
        _check_number(name, value, kind, rule)
    else:
        raise ConfigError(f"{name}: unsupported schema type {kind}")


def _check_str(name: str, value: Any, rule: Rule) -> None:
    if not isinstance(value, str):
        raise ConfigError(f"{name}: expected a string, got {value!r}")
    if not value:
        if not rule.empty_ok:
            raise ConfigError(f"{name}: must not be empty")
        return
    if rule.choices and value not in rule.choices:
        raise ConfigError(f"{name}: unknown value {value!r}; choose from {list(rule.choices)}")
    if rule.pattern and not re.fullmatch(rule.pattern, value):
        raise ConfigError(f"{name}: {value!r} is not allowed here (must match {rule.pattern})")


def _check_number(name: str, value: Any, kind: str, rule: Rule) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind == "int" and isinstance(value, float)):
        raise ConfigError(f"{name}: expected {'an integer' if kind == 'int' else 'a number'}, got {value!r}")
    allowed = f"; allowed: {rule.range_text()}" if rule.range_text() else ""
    if not math.isfinite(value):
        raise ConfigError(f"{name}: {value!r} is not finite{allowed}")
    bad = ((rule.ge is not None and value < rule.ge) or (rule.gt is not None and value <= rule.gt)
           or (rule.le is not None and value > rule.le) or (rule.lt is not None and value >= rule.lt))
    if bad:
        raise ConfigError(f"{name}: {value!r} is out of range{allowed}")


@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """The docstring under each field of a dataclass (the string literal that follows it in the source)."""
    body = ast.parse(textwrap.dedent(inspect.getsource(cls))).body[0].body
    return {target.target.id: " ".join(doc.value.value.split())
            for target, doc in zip(body, body[1:])
            if isinstance(target, ast.AnnAssign) and isinstance(target.target, ast.Name)
            and isinstance(doc, ast.Expr) and isinstance(doc.value, ast.Constant) and isinstance(doc.value.value, str)}


def coerce(value: Any, kind: str) -> Any:
    """YAML/ROS parameter values to the schema's types before checking: ints widen to float fields (1 -> 1.0),
    tuples and arrays become lists, and ROS's unset value for `[]` an empty list. Anything else is left for
    `check_value` to name."""
    if kind == "float" and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind.startswith("list["):
        if value is None:
            return []
        if not isinstance(value, (str, list, dict)) and hasattr(value, "__iter__"):
            value = list(value)
    if kind == "list[float]" and isinstance(value, list):
        return [float(v) if isinstance(v, int) and not isinstance(v, bool) else v for v in value]
    return value


def require(ok: bool, message: str) -> None:
    """A relation between fields; the message names them and their values."""
    if not ok:
        raise ConfigError(message)
