"""The config schema: the repo's ROS parameter file loads, flat parameter names round-trip, bad input is named."""
from __future__ import annotations

import pytest

from tdmpc_ros.config import (MODEL_PRESETS, Config, ConfigError, config_from_dict, default_config_path, flatten,
                              load_config, unflatten)


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
