"""The config schema: the repo's ROS parameter file loads, flat parameter names round-trip, bad input is named."""
from __future__ import annotations

import dataclasses
import math
import re

import pytest

from tdmpc_ros.config import (BUNDLED_ROBOTS, MODEL_PRESETS, SECTION_CLASSES, Config, ConfigError, config_from_dict,
                              default_config_path, flatten, load_config, unflatten)
from tdmpc_ros.config_rules import Rule, field_kind, rule_of

pytestmark = pytest.mark.unit


def test_arm_yaml_loads_with_its_values(tmp_path):
    cfg = load_config(default_config_path())
    assert cfg.model.preset == "small" and cfg.model.latent_dim == MODEL_PRESETS["small"]["latent_dim"]
    assert cfg.agent.device == "auto" and cfg.learner.demos == ["demos"]
    assert cfg.model.obs_dim == cfg.task.obs_dim == 2 * 7 + 9 and cfg.model.action_dim == 7
    assert 0.95 <= cfg.discount <= 0.995


def test_overrides_apply_and_presets_fill_sizes():
    cfg = load_config(default_config_path(), {"model": {"preset": "5m"}, "agent": {"lr": 1}})
    assert (cfg.model.mlp_dim, cfg.model.latent_dim, cfg.model.num_q) == (512, 512, 5)
    assert cfg.agent.lr == 1.0 and isinstance(cfg.agent.lr, float)  # ints widen to float fields
    explicit = load_config(overrides={"model": {"preset": "5m", "mlp_dim": 64}})
    assert explicit.model.mlp_dim == 64


def test_flatten_unflatten_round_trip():
    cfg = load_config(default_config_path(), {"task": {"joint_names": ["a", "b"]}, "sim": {"home": [0.1, 0.2]}})
    flat = flatten(cfg)
    assert flat["model.preset"] == "small" and flat["task.joint_names"] == ["a", "b"]
    assert all(key.count(".") == 1 for key in flat)
    assert unflatten(flat) == cfg
    assert unflatten(flatten(Config())) == Config()


@pytest.mark.parametrize("data,named", [
    ({"modle": {"preset": "small"}}, "modle"),
    ({"model": {"presett": "small"}}, "presett"),
    ({"model": {"preset": "huge"}}, "huge"),
    ({"agent": {"lr": "fast"}}, "agent.lr"),
    ({"sim": {"lockstep": 1}}, "sim.lockstep"),
    ({"task": {"joint_names": "a,b"}}, "task.joint_names"),
    ({"learner": {"pretrain_updates": 1.5}}, "learner.pretrain_updates"),
    ({"model": {"latent_dim": 60}}, "latent_dim 60"),
])
def test_bad_values_raise_errors_that_name_them(data, named):
    with pytest.raises(ConfigError, match=named):
        config_from_dict(data)


def test_bad_file_and_flat_names_are_named(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("/**:\n  ros__parameters:\n    agent: {batch_size: [1, 2]\n")
    with pytest.raises(ConfigError, match="broken.yaml"):
        load_config(path)
    path.write_text("/**:\n  ros__parameters:\n    agent: {batch_sise: 3}\n")
    with pytest.raises(ConfigError, match=r"broken\.yaml.*batch_sise"):
        load_config(path)
    with pytest.raises(ConfigError, match="nosection"):
        unflatten({"nosection.x": 1})


# -- every field's rule, generated from the schema ------------------------------------------------------------
def _wrong_type(kind):
    return {"bool": 1, "int": "x", "float": "x", "str": 5}.get(kind, "not a list")


def _invalid_values(kind: str, rule: Rule, default):
    """Values that break `rule` for a field of `kind`: a wrong type always, then each bound, choice, pattern,
    emptiness, length and uniqueness constraint the rule has."""
    yield _wrong_type(kind)
    number = kind in ("int", "float")
    item = kind[5:-1] if kind.startswith("list[") else None
    if number or item in ("int", "float"):
        t = int if (kind == "int" or item == "int") else float
        bad = [math.nan, math.inf] if t is float else [1.5]
        if rule.ge is not None:
            bad.append(t(rule.ge) - 1 if t is int else math.nextafter(rule.ge, -math.inf))
        if rule.gt is not None:
            bad.append(t(rule.gt))
        if rule.le is not None:
            bad.append(t(rule.le) + 1 if t is int else math.nextafter(rule.le, math.inf))
        if rule.lt is not None:
            bad.append(t(rule.lt))
        for value in bad:
            yield value if number else [value] * max(len(default), 1)
    if kind == "str" or item == "str":
        wrap = (lambda v: v) if kind == "str" else (lambda v: [v])
        if rule.choices:
            yield wrap("no_such_choice")
        if rule.pattern:
            yield wrap("bad name!")
        if not rule.empty_ok or item:
            yield wrap("")
    if item:
        if not rule.empty_ok:
            yield []
        if rule.length is not None:
            yield list(default) + list(default[:1])
        if rule.unique:
            yield [default[0], default[0]]


SCHEMA = [(section, f) for section, cls in SECTION_CLASSES.items() for f in dataclasses.fields(cls)]


@pytest.mark.parametrize("section, f", SCHEMA, ids=[f"{s}.{f.name}" for s, f in SCHEMA])
def test_every_field_refuses_invalid_values_naming_the_field(section, f):
    kind, rule, default = field_kind(f), rule_of(f), getattr(SECTION_CLASSES[section](), f.name)
    values = list(_invalid_values(kind, rule, default))
    assert values, f"{section}.{f.name} has no invalid value"
    for value in values:
        with pytest.raises(ConfigError, match=re.escape(f"{section}.{f.name}")):
            config_from_dict({section: {f.name: value}})


# Numbers whose only limits are relations to another field (checked by test_relations_are_checked).
UNBOUNDED = {"model.vmin", "model.vmax", "model.log_std_min", "model.log_std_max", "sim.home", "task.goal_low",
             "task.goal_high"}


def test_every_number_field_has_a_range():
    """A new numeric field cannot skip its rule: it needs bounds, or a place in UNBOUNDED with a relation."""
    for section, f in SCHEMA:
        rule, name = rule_of(f), f"{section}.{f.name}"
        if field_kind(f) in ("int", "float", "list[float]") and name not in UNBOUNDED:
            assert any(b is not None for b in (rule.ge, rule.gt, rule.le, rule.lt)), f"{name} has no range"


@pytest.mark.parametrize("data, named", [
    ({"planner": {"num_elites": 600}}, "planner.num_elites 600 exceeds planner.num_samples 512"),
    ({"planner": {"num_pi_trajs": 600}}, "planner.num_pi_trajs"),
    ({"planner": {"min_std": 3.0}}, "planner.min_std"),
    ({"agent": {"discount_min": 0.99, "discount_max": 0.9}}, "agent.discount_min"),
    ({"model": {"vmin": 1.0, "vmax": -1.0}}, "model.vmin"),
    ({"model": {"num_q": 1}}, "model.num_q"),
    ({"task": {"goal_low": [0.7, 0.0, 0.0]}}, "task.goal_low/goal_high"),
    ({"task": {"success_hold_steps": 200}}, "task.success_hold_steps"),
    ({"sim": {"gain_scale_range": [2.0, 1.0]}}, "sim.gain_scale_range"),
    ({"model": {"action_dim": 6}}, "model.action_dim 6"),
])
def test_relations_are_checked(data, named):
    with pytest.raises(ConfigError, match=re.escape(named)):
        config_from_dict(data)


def test_the_issue_examples_are_refused_in_a_parameter_file(tmp_path):
    for field_, value in (("action_scale", ".nan"), ("action_scale", "-0.05"), ("control_rate_hz", "0")):
        path = tmp_path / "arm.yaml"
        path.write_text(f"/**:\n  ros__parameters:\n    task: {{{field_}: {value}}}\n")
        with pytest.raises(ConfigError, match=rf"arm\.yaml: task\.{field_}: .*allowed: > 0"):
            load_config(path)


def test_bundled_robots_match_the_arm_descriptions():
    from tdmpc_ros.arm_description import BUNDLED

    assert set(BUNDLED) == set(BUNDLED_ROBOTS)
