"""World-model variants (docs/variants.md), one config switch each: DC-MPC's FSQ latent, Dreamer's decoder, MBPO's
model rollouts and TD-MPC v1. Each: shapes and parameters, a checkpoint round trip, torch and ONNX plans equal on
the same draws, and a short fixed-seed run whose losses fall; FSQ's quantiser and expected-code planning; a
checkpoint of one variant refused under another's config, naming the field."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tdmpc_ros.config import ConfigError, load_config
from tdmpc_ros.learning.agent import Agent
from tdmpc_ros.learning.checkpoint import agent_from_checkpoint, check_model_config, load_checkpoint, save_checkpoint
from tdmpc_ros.learning.checkpoint_file import CheckpointError
from tdmpc_ros.model import parameter_counts
from tdmpc_ros.model.fsq import FSQ
from tdmpc_ros.model.world_model import WorldModel
from tdmpc_ros.planner import make_planner

pytestmark = [pytest.mark.usefixtures("one_torch_thread"), pytest.mark.unit]

TINY = dict(latent_dim=16, mlp_dim=32, enc_dim=32)
FAST = dict(horizon=2, iterations=2, num_samples=64, num_elites=8, num_pi_trajs=8, compile=False)
VARIANTS = {
    "fsq": {"model": {"latent": "fsq"}},
    "decoder": {"agent": {"decoder_coef": 1.0}},
    "mbpo": {"agent": {"model_rollouts": 32, "model_rollout_horizon": 2}},
    "tdmpc1": {"model": {"preset": "tdmpc1-small"}},
}


def variant_config(name: str, planner: dict | None = None):
    overrides = {k: dict(v) for k, v in VARIANTS[name].items()}
    overrides["model"] = dict(TINY, **overrides.get("model", {}))
    overrides["agent"] = dict({"batch_size": 16, "compile": False}, **overrides.get("agent", {}))
    overrides["planner"] = dict(FAST, **(planner or {}))
    return load_config(overrides=overrides)


def batch(cfg, seed=0, b=16):
    h = cfg.planner.horizon
    g = torch.Generator().manual_seed(seed)
    return {"obs": torch.randn(h + 1, b, cfg.model.obs_dim, generator=g),
            "action": torch.rand(h, b, cfg.model.action_dim, generator=g) * 2 - 1,
            "reward": -torch.rand(h, b, 1, generator=g), "terminated": torch.zeros(h, b, 1)}


def perturb(module: torch.nn.Module, seed: int) -> None:
    """Small random weights everywhere: zero-initialised reward and Q heads would tie every plan's values."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn_like(p) * 0.05)


# -- shapes and parameters ------------------------------------------------------------------------------------
def test_fsq_model_shapes_and_codes():
    cfg = variant_config("fsq")
    model = WorldModel(cfg.model)
    z = model.encode(torch.randn(5, cfg.model.obs_dim))
    a = torch.zeros(5, cfg.model.action_dim)
    groups = cfg.model.latent_dim // 2
    assert z.shape == (5, 16) and model.dynamics(z, a).shape == (5, groups * 15)
    assert model.next(z, a).shape == (5, 16) and model.reward(z, a).shape == (5, cfg.model.num_bins)
    counts = parameter_counts(model)
    # the dynamics classifier's output layer: a Linear mlp_dim -> groups * |C| logits (simnorm's: a NormedLinear
    # mlp_dim -> latent_dim, with its LayerNorm)
    simnorm = parameter_counts(WorldModel(variant_config("decoder").model))
    assert counts["dynamics"] - simnorm["dynamics"] == (32 + 1) * groups * 15 - ((32 + 1) * 16 + 2 * 16)
    assert {k: counts[k] for k in ("reward", "qs", "pi")} == {k: simnorm[k] for k in ("reward", "qs", "pi")}
    # the encoder's output is quantised, not SimNorm-ed: a plain Linear, no LayerNorm before the quantiser
    assert simnorm["encoder"] - counts["encoder"] == 2 * 16


def test_tdmpc1_model_is_the_v1_architecture():
    cfg = variant_config("tdmpc1")
    assert (cfg.model.latent, cfg.model.num_q, cfg.model.dropout) == ("plain", 2, 0.0)
    assert (cfg.planner.horizon, cfg.agent.consistency_coef, cfg.agent.reward_coef, cfg.agent.lr) == (2, 2.0, 0.5,
                                                                                                      1e-3)
    model = WorldModel(cfg.model)
    assert not model.two_hot
    assert all(not isinstance(m, torch.nn.LayerNorm) for m in model._encoder.modules())
    assert any(isinstance(m, torch.nn.ELU) for m in model._dynamics.modules())
    z = model.encode(torch.randn(5, cfg.model.obs_dim))
    a = torch.zeros(5, cfg.model.action_dim)
    assert model.reward(z, a).shape == (5, 1) and model.Q(z, a, "all").shape == (2, 5, 1)
    assert model.scalar(model.reward(z, a)).shape == (5, 1)
    # scalar heads regress with the squared error
    assert torch.equal(model.regression_loss(torch.tensor([[2.0]]), torch.tensor([[0.5]])), torch.tensor([[2.25]]))
    # the paper's sizes: latent 50, no SimNorm, so no multiple of simnorm_dim is required
    assert load_config(overrides={"model": {"preset": "tdmpc1"}}).model.latent_dim == 50
    # its planner settings: TD-MPC2's defaults give way to v1's
    defaults = load_config(overrides={"model": {"preset": "tdmpc1-small"}, "planner": {"horizon": 3}})
    assert defaults.planner.horizon == 5


def test_variant_config_is_checked_naming_the_field():
    with pytest.raises(ConfigError, match=r"model\.fsq_levels"):
        load_config(overrides={"model": {"latent": "fsq", "fsq_levels": [4, 3]}})
    with pytest.raises(ConfigError, match=r"model\.latent_dim 63 is not a multiple .* model\.fsq_levels"):
        load_config(overrides={"model": {"latent": "fsq", "latent_dim": 63}})
    with pytest.raises(ConfigError, match=r"model\.latent: fsq is not part of TD-MPC v1"):
        load_config(overrides={"model": {"preset": "tdmpc1-small", "latent": "fsq"}})


def test_decoder_maps_latents_back_to_observations():
    agent = Agent(variant_config("decoder"))
    z = agent.model.encode(torch.randn(3, agent.cfg.model.obs_dim))
    assert agent.decoder(z).shape == (3, agent.cfg.model.obs_dim)
    assert Agent(variant_config("fsq")).decoder is None


# -- FSQ ----------------------------------------------------------------------------------------------------
def test_fsq_codes_lie_on_the_grid_and_index_the_codebook():
    fsq = FSQ([5, 3])
    x = torch.randn(200, 8) * 3
    z = fsq(x)
    grid = fsq.groups(z) * fsq.half_width  # integer levels
    assert torch.equal(grid, grid.round())
    assert grid[..., 0].abs().max() <= 2 and grid[..., 1].abs().max() <= 1
    assert set(grid[..., 0].unique().tolist()) == {-2, -1, 0, 1, 2}
    assert fsq.num_codes == 15 and len(fsq.codebook.unique(dim=0)) == 15
    # every code's index names the codebook row equal to it
    assert torch.equal(fsq.codebook[fsq.code_index(z)].reshape(z.shape), z)


def test_fsq_gradients_pass_straight_through_the_rounding():
    fsq = FSQ([5, 3])
    x = torch.randn(10, 4, requires_grad=True)
    fsq(x).sum().backward()
    # d/dx of floor(L/2) tanh(x) / floor(L/2) with the rounding's gradient taken as the identity
    np.testing.assert_allclose(x.grad, 1 - torch.tanh(x.detach()) ** 2, rtol=1e-6)


def test_fsq_expected_code_is_the_probability_weighted_code_and_deterministic():
    fsq = FSQ([5, 3])
    logits = torch.randn(6, 4 * 15)
    assert torch.equal(fsq.expected_code(logits), fsq.expected_code(logits))
    assert fsq.expected_code(torch.zeros(6, 60)).abs().max() < 1e-6  # uniform over a symmetric grid: the centre
    # codes in row-major order of the levels: code 0 is (-1, -1), code 1 (-1, 0); 3:1 on them gives (-1, -0.75)
    mix = torch.full((1, 4, 15), -1e4)
    mix[..., 0], mix[..., 1] = float(np.log(3.0)), 0.0
    np.testing.assert_allclose(fsq.expected_code(mix.reshape(1, -1)).reshape(4, 2),
                               torch.tensor([[-1.0, -0.75]]).expand(4, 2), atol=1e-6)
    one = torch.full((1, 4, 15), -1e4)
    one[..., 1] = 0.0
    np.testing.assert_allclose(fsq.expected_code(one.reshape(1, -1)).reshape(4, 2),
                               torch.tensor([[-1.0, 0.0]]).expand(4, 2), atol=1e-6)
    # training's straight-through Gumbel-softmax sample: on the grid, random, and differentiable
    logits.requires_grad_(True)
    sample = fsq.sample_code(logits)
    levels = fsq.groups(sample) * fsq.half_width
    assert torch.equal(levels, levels.round())
    sample.sum().backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0
    # cross-entropy is lowest for the logits that put their mass on the target's codes
    target = fsq(torch.randn(6, 8))
    sharp = torch.nn.functional.one_hot(fsq.code_index(target), 15).float().reshape(6, -1) * 20
    assert fsq.cross_entropy(sharp, target).max() < 1e-6 < fsq.cross_entropy(torch.zeros(6, 60), target).min()


def test_fsq_planning_is_deterministic_for_fixed_draws():
    cfg = variant_config("fsq")
    model = WorldModel(cfg.model)
    perturb(model, 0)
    obs = np.random.default_rng(0).normal(size=cfg.model.obs_dim).astype(np.float32)
    plans = [make_planner(model, cfg.planner, cfg.discount, seed=4).plan(obs) for _ in range(2)]
    np.testing.assert_array_equal(plans[0], plans[1])
    z = model.encode(torch.from_numpy(obs)[None])
    a = torch.zeros(1, cfg.model.action_dim)
    assert torch.equal(model.next(z, a), model.next(z, a))


# -- per variant: checkpoints, backends, learning -------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_checkpoint_round_trip(tmp_path, name):
    cfg = variant_config(name)
    agent = Agent(cfg)
    for i in range(2):
        agent.update(batch(cfg, i))
    path = tmp_path / f"{name}.pt"
    save_checkpoint(path, agent)
    ckpt = load_checkpoint(path)
    assert ckpt.config == cfg
    restored = agent_from_checkpoint(ckpt)
    for key, value in agent.state_dict()["model"].items():
        assert torch.equal(value, restored.state_dict()["model"][key]), key
    assert (restored.decoder is None) == (agent.decoder is None)
    if agent.decoder is not None:
        for key, value in agent.decoder.state_dict().items():
            assert torch.equal(value, restored.decoder.state_dict()[key]), key


@pytest.mark.parametrize("name", ["fsq", "tdmpc1"])
def test_torch_and_onnx_plan_equally_on_the_same_draws(name):
    # mbpo and decoder plan with TD-MPC2's model (they change training only): test_onnx.py covers that one
    cfg = variant_config(name)
    model = Agent(cfg).model
    perturb(model, 1)
    planners = [make_planner(model, variant_config(name, {"backend": b}).planner, cfg.discount, seed=3)
                for b in ("torch", "onnx")]
    rng = np.random.default_rng(0)
    for step in range(3):
        obs = rng.normal(size=cfg.model.obs_dim).astype(np.float32)
        a, b = (p.plan(obs, eval_mode=step == 2) for p in planners)
        assert set(planners[0].last_elites) == set(planners[1].last_elites)
        np.testing.assert_allclose(b, a, atol=1e-5)
        np.testing.assert_allclose(planners[1].last_mean, planners[0].last_mean, atol=1e-5)


# The stated factor: on one fixed batch (seed 0), 40 updates at lr 3e-3 cut the variant's own loss by at least this.
LEARNING = {"fsq": ("consistency_loss", 4.0), "decoder": ("decoder_loss", 1.5),
            "mbpo": ("total_loss", 2.0), "tdmpc1": ("total_loss", 2.0)}


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_losses_fall_on_a_fixed_batch(name):
    cfg = variant_config(name)
    cfg.agent.lr = 3e-3
    agent = Agent(cfg)
    data = batch(cfg, 0)
    first = agent.update(data)
    for _ in range(40):
        last = agent.update(data)
    key, factor = LEARNING[name]
    assert first[key] > 0 and last[key] * factor < first[key], (first, last)
    if name == "mbpo":
        assert last["model_value_loss"] > 0
    assert all(np.isfinite(v) for v in last.values())


# -- cross-variant refusal ------------------------------------------------------------------------------------
@pytest.mark.parametrize("saved,loaded,field", [("fsq", "decoder", "model.latent"),
                                                ("tdmpc1", "fsq", "model.preset")])
def test_checkpoint_of_one_variant_is_refused_under_another_naming_the_field(tmp_path, saved, loaded, field):
    path = tmp_path / "a.pt"
    save_checkpoint(path, Agent(variant_config(saved)))
    with pytest.raises(CheckpointError, match=rf"config mismatch: .*{field}: checkpoint"):
        check_model_config(load_checkpoint(path), variant_config(loaded).model)


def test_decoder_state_is_refused_by_an_agent_without_one(tmp_path):
    path = tmp_path / "decoder.pt"
    save_checkpoint(path, Agent(variant_config("decoder")))
    ckpt = load_checkpoint(path)
    with pytest.raises(CheckpointError, match=r"agent\.decoder_coef"):
        check_model_config(ckpt, variant_config("mbpo").model, variant_config("mbpo").agent)
    with pytest.raises(ValueError, match=r"agent\.decoder_coef"):
        Agent(variant_config("mbpo")).load_state_dict(ckpt.agent_state)


def test_bench_variants_puts_the_overrides_on_the_tasks_own_config(tmp_path):
    """Push variants train on config/push.yaml (the cube, the table goals), not on reach's file with a new name."""
    from tdmpc_ros.cli.bench_variants import base_config, variant_config_file
    from tdmpc_ros.config import default_config_path, load_config

    assert base_config("reach", None) == default_config_path()
    assert base_config("push", None) == default_config_path().with_name("push.yaml")
    assert base_config("push", "mine.yaml") == Path("mine.yaml")
    cfg = load_config(variant_config_file(base_config("push", None), VARIANTS["fsq"], False, tmp_path))
    assert (cfg.task.name, cfg.model.latent, cfg.task.goal_low[2]) == ("push", "fsq", 0.025)


def test_bench_variants_names_an_unknown_variant(capsys):
    from tdmpc_ros.cli.main import main

    assert main(["bench", "variants", "--variants", "tdmpc2,dreamerv3"]) == 2
    assert "--variants: unknown ['dreamerv3']" in capsys.readouterr().err


def test_bench_variants_combines_runs_of_one_protocol(tmp_path, capsys):
    """Runs made one variant or one seed per process become one report and one plot: a variant's seeds from
    several runs join in one row in seed order; a seed given twice and runs of another protocol are refused."""
    from tdmpc_ros.cli.main import main

    def run(variant: str, env_steps: int = 1000, seed: int = 0) -> str:
        result = {"seed": seed, "curve": [[500, 0.1], [1000, 0.4]], "env_steps_to_90": None,
                  "final_success_rate": 0.4}
        path = tmp_path / f"{variant}_{env_steps}_{seed}.json"
        path.write_text(json.dumps({"task": "reach", "env_steps": env_steps, "seeds": 1, "demos": 10,
                                    "load_avg_1m": 1.0 + seed, "variants": [{"variant": variant, "seeds": [result]}]}))
        return str(path)

    out, png = tmp_path / "all.json", tmp_path / "all.png"
    assert main(["bench", "variants", "--combine", run("tdmpc2", seed=2), run("fsq"), run("tdmpc2"), "--out",
                 str(out), "--png", str(png)]) == 0
    report = json.loads(out.read_text())
    assert [v["variant"] for v in report["variants"]] == ["tdmpc2", "fsq"] and report["load_avg_1m"] == [3.0, 1.0, 1.0]
    assert [s["seed"] for s in report["variants"][0]["seeds"]] == [0, 2] and report["seeds"] == 2
    assert report["seeds_per_variant"] == {"tdmpc2": 2, "fsq": 1}
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    capsys.readouterr()
    assert main(["bench", "variants", "--combine", run("tdmpc2"), run("fsq", 2000), "--out", str(out)]) == 2
    assert "the runs differ" in capsys.readouterr().err
    assert main(["bench", "variants", "--combine", run("tdmpc2"), run("tdmpc2"), "--out", str(out)]) == 2
    assert "repeats seed(s) [0] of variant tdmpc2" in capsys.readouterr().err