"""MPPI planner (torch backend) on real world models: one fitted to a reward with a known optimum, and
random ones for the exact checks (warm start, termination, determinism)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from tdmpc_ros.config import ModelConfig, PlannerConfig
from tdmpc_ros.model.layers import SimNorm
from tdmpc_ros.model.math import soft_ce, two_hot_inv
from tdmpc_ros.model.world_model import WorldModel
from tdmpc_ros.planner import DrawSource, PlanSpec, make_planner, plan_step
from tdmpc_ros.planner.mppi import trajectory_value

pytestmark = pytest.mark.unit

OPTIMUM = torch.tensor([0.5, -0.3])
TINY = dict(obs_dim=4, action_dim=2, latent_dim=16, mlp_dim=32, enc_dim=32, num_q=3)
FAST = dict(iterations=3, num_samples=64, num_elites=8, num_pi_trajs=8, compile=False)


def random_model(seed: int = 0, **overrides) -> WorldModel:
    """A WorldModel with every weight perturbed, so rewards, values and terminations are all non-trivial."""
    torch.manual_seed(seed)
    model = WorldModel(ModelConfig(**{**TINY, **overrides})).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    return model


def fit_optimum_model() -> WorldModel:
    """Reward -4 |a - OPTIMUM|^2 fitted by real two-hot training over random latents; Q stays zero."""
    torch.set_num_threads(1)  # as the planners here do; tiny matmuls gain nothing from more on a shared box
    torch.manual_seed(0)
    model = WorldModel(ModelConfig(**TINY, episodic=False))
    optim = torch.optim.Adam(model._reward.parameters(), lr=3e-3)
    simnorm = SimNorm(model.cfg.simnorm_dim)
    for _ in range(400):
        z = simnorm(torch.randn(256, model.cfg.latent_dim) * 2)
        a = torch.rand(256, 2) * 2 - 1
        target = -4 * ((a - OPTIMUM) ** 2).sum(-1, keepdim=True)
        loss = soft_ce(model.reward(z, a), target, model.bins).mean()
        optim.zero_grad()
        loss.backward()
        optim.step()
    return model.eval()


@pytest.fixture(scope="module")
def optimum_model() -> WorldModel:
    return fit_optimum_model()


def plan_error(model, iterations: int, calls: int = 6, seed: int = 0) -> float:
    """Mean distance of the planned (eval-mode) first action to the optimum, from cold starts, at the default
    sample counts (with only 64 samples the mean still moves after 6 iterations)."""
    planner = make_planner(model, PlannerConfig(iterations=iterations, compile=False), discount=0.9, seed=seed)
    rng = np.random.default_rng(seed)
    errors = []
    for _ in range(calls):
        planner.reset()
        action = planner.plan(rng.normal(size=4).astype(np.float32), eval_mode=True)
        errors.append(np.linalg.norm(action - OPTIMUM.numpy()))
    return float(np.mean(errors))


def test_mean_converges_to_the_known_optimum_and_iterations_help(optimum_model):
    errors = {n: plan_error(optimum_model, n) for n in (1, 3, 6)}
    assert errors[6] < 0.05, errors
    assert errors[6] <= errors[3] + 0.02 and errors[3] <= errors[1] + 0.02, errors
    assert errors[1] > errors[6], errors  # one iteration from std max_std is measurably rougher


def test_sampled_action_stays_in_bounds_and_near_the_optimum(optimum_model):
    planner = make_planner(optimum_model, PlannerConfig(compile=False), discount=0.9)
    actions = np.stack([planner.plan(np.zeros(4, np.float32)) for _ in range(20)])
    assert actions.dtype == np.float32 and actions.shape == (20, 2)
    assert np.abs(actions).max() <= 1.0
    # Elite choice plus min_std-scale noise: individually noisy, centred on the optimum.
    assert np.linalg.norm(actions.mean(0) - OPTIMUM.numpy()) < 0.15


def test_warm_start_shifts_the_previous_mean_and_reset_clears_it():
    model = random_model()
    cfg = PlannerConfig(**FAST)
    spec = PlanSpec.from_config(cfg, 0.9, 2, model.cfg.num_q)
    obs = np.linspace(-1, 1, 4).astype(np.float32)
    warm = make_planner(model, cfg, discount=0.9, seed=5)
    cold = make_planner(model, cfg, discount=0.9, seed=5)
    warm.plan(obs)
    cold.plan(obs)
    first_mean = torch.as_tensor(warm.last_mean)
    shifted = torch.cat([first_mean[1:], torch.zeros(1, 2)])
    assert torch.equal(warm._warm, shifted)
    cold.reset()
    assert not cold._warm.any()

    # Replay the same draws through plan_step: the second call started from the shifted mean (warm) or zeros.
    source = DrawSource(spec, 5)
    source.fill()
    draws = source.fill()
    obs_t = torch.from_numpy(obs)
    with torch.inference_mode():
        expect_warm = plan_step(warm.model, spec, obs_t, shifted, draws)
        expect_cold = plan_step(cold.model, spec, obs_t, torch.zeros(3, 2), draws)
    got_warm, got_cold = warm.plan(obs), cold.plan(obs)
    np.testing.assert_array_equal(got_warm, expect_warm[0].numpy())
    np.testing.assert_array_equal(got_cold, expect_cold[0].numpy())
    assert not np.array_equal(got_warm, got_cold)


def test_terminated_branches_stop_accruing_reward():
    model = random_model(1)
    spec = PlanSpec.from_config(PlannerConfig(**FAST), 0.9, 2, model.cfg.num_q)
    z = SimNorm(8)(torch.randn(5, 16))
    actions = torch.rand(spec.horizon, 5, 2) * 2 - 1
    noise, heads = torch.randn(5, 2), torch.tensor([0, 2])
    with torch.no_grad():
        first_reward = two_hot_inv(model.reward(z, actions[0]), model.bins).squeeze(-1)
        model._termination[-1].weight.zero_()
        model._termination[-1].bias.fill_(50.0)  # every step ends the episode: p = 1
        ended = trajectory_value(model, spec, z, actions, noise, heads)
        model._termination[-1].bias.fill_(-50.0)  # never ends: p = 0
        alive = trajectory_value(model, spec, z, actions, noise, heads)
        model._termination = None  # not episodic: the plain discounted return plus bootstrap
        plain = trajectory_value(model, spec, z, actions, noise, heads)
    torch.testing.assert_close(ended, first_reward)
    torch.testing.assert_close(alive, plain)
    assert (alive - ended).abs().min() > 1e-3


def test_terminal_value_uses_the_given_q_heads():
    model = random_model(2)
    spec = PlanSpec.from_config(PlannerConfig(**FAST), 0.9, 2, model.cfg.num_q)
    z, actions, noise = SimNorm(8)(torch.randn(5, 16)), torch.zeros(spec.horizon, 5, 2), torch.randn(5, 2)
    with torch.no_grad():
        values = [trajectory_value(model, spec, z, actions, noise, torch.tensor(h)) for h in ([0, 1], [1, 0], [0, 2])]
    torch.testing.assert_close(values[0], values[1])
    assert not torch.allclose(values[0], values[2])


def test_same_seed_same_plans_other_seed_differs():
    model = random_model(3)
    obs = [np.full(4, v, np.float32) for v in (-0.5, 0.0, 0.5)]

    def run(seed):
        planner = make_planner(model, PlannerConfig(**FAST), discount=0.9, seed=seed)
        return np.stack([planner.plan(o) for o in obs] + [planner.policy_action(o) for o in obs])

    np.testing.assert_array_equal(run(7), run(7))
    assert not np.array_equal(run(7), run(8))


def test_eval_mode_returns_the_elite_mean_and_policy_action_its_mean():
    model = random_model(4)
    planner = make_planner(model, PlannerConfig(**FAST), discount=0.9)
    obs = np.ones(4, np.float32)
    action = planner.plan(obs, eval_mode=True)
    np.testing.assert_array_equal(action, planner.last_mean[0])
    weights = planner.last_weights
    assert weights.shape == (8,) and abs(weights.sum() - 1) < 1e-5 and len(set(planner.last_elites)) == 8
    with torch.no_grad():
        _, info = model.pi(model.encode(torch.from_numpy(obs)[None]))
    np.testing.assert_allclose(planner.policy_action(obs, eval_mode=True), info["mean"][0].numpy(), atol=1e-6)


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_without_mpc_the_planner_acts_with_the_policy_prior(backend):
    model = random_model(4)
    obs = np.ones(4, np.float32)
    prior = make_planner(model, PlannerConfig(**dict(FAST, compile=True), backend=backend, mpc=False), discount=0.9,
                         seed=3)
    reference = make_planner(model, PlannerConfig(**FAST), discount=0.9, seed=3)
    np.testing.assert_array_equal(prior.plan(obs, eval_mode=True), reference.policy_action(obs, eval_mode=True))
    sampled = [prior.plan(obs) for _ in range(3)]
    np.testing.assert_array_equal(sampled, [reference.policy_action(obs) for _ in range(3)])
    assert prior.last_mean is None and not prior.compiled  # no MPPI ran, no plan graph was built
    prior.set_model(random_model(5))
    assert not np.array_equal(prior.plan(obs, eval_mode=True), reference.policy_action(obs, eval_mode=True))
    assert not np.array_equal(sampled[0], reference.plan(obs))


def test_set_model_swaps_weights_and_the_planner_owns_a_copy():
    a, b = random_model(5), random_model(6)
    planner = make_planner(a, PlannerConfig(**FAST), discount=0.9)
    obs = np.zeros(4, np.float32)
    before = planner.policy_action(obs, eval_mode=True)
    with torch.no_grad():
        for p in a.parameters():
            p.zero_()  # training the caller's model does not reach the planner
    np.testing.assert_array_equal(planner.policy_action(obs, eval_mode=True), before)
    planner.set_model(b)
    assert not np.array_equal(planner.policy_action(obs, eval_mode=True), before)
    with pytest.raises(ValueError, match="architecture"):
        planner.set_model(random_model(7, latent_dim=24))


def test_bad_inputs_are_named():
    model = random_model()
    planner = make_planner(model, PlannerConfig(**FAST), discount=0.9)
    with pytest.raises(ValueError, match="observation has shape"):
        planner.plan(np.zeros(5, np.float32))
    with pytest.raises(ValueError, match="planner.backend"):
        make_planner(model, PlannerConfig(backend="jax"), discount=0.9)
    with pytest.raises(ValueError, match="num_elites"):
        make_planner(model, PlannerConfig(num_samples=16, num_elites=32, num_pi_trajs=4), discount=0.9)


def test_compiled_plan_matches_eager():
    """torch.compile (inductor, C++ codegen) on a 1-iteration, 1-step spec: the slowest test here with a cold
    inductor cache (~45 s of g++ on 2 busy cores), ~5 s with a warm one."""
    model = random_model(8)
    cfg = PlannerConfig(**{**FAST, "iterations": 1, "horizon": 1})
    eager = make_planner(model, cfg, discount=0.9, seed=1)
    cfg.compile = True
    compiled = make_planner(model, cfg, discount=0.9, seed=1)
    assert compiled.compiled, "torch.compile fell back to eager"
    for step, v in enumerate((0.1, -0.2, 0.3)):
        if step == 2:  # new weights copied in place: the compiled code must read them, not stale ones
            other = random_model(9)
            compiled.set_model(other)
            eager.set_model(other)
        obs = np.full(4, v, np.float32)
        np.testing.assert_allclose(compiled.plan(obs), eager.plan(obs), atol=1e-5)
        assert set(compiled.last_elites) == set(eager.last_elites)


@pytest.mark.parametrize("model", [{"episodic": True}, {"episodic": False}, {"latent": "fsq"},
                                   {"preset": "tdmpc1-small"}], ids=["episodic", "not episodic", "fsq", "tdmpc1"])
def test_bench_matmul_count_matches_what_a_plan_call_runs(model):
    from torch.utils.flop_counter import FlopCounterMode

    from tdmpc_ros.cli.bench_plan import plan_matmul_gflop
    from tdmpc_ros.config import load_config

    cfg = load_config(overrides={"model": {"preset": "small", **model}, "planner": {"compile": False}})
    world_model = WorldModel(cfg.model)
    planner = make_planner(world_model, cfg.planner, cfg.discount, seed=0)
    obs = np.zeros(cfg.model.obs_dim, np.float32)
    with FlopCounterMode(display=False) as counter:
        planner.plan(obs)
    assert counter.get_total_flops() / 1e9 == pytest.approx(plan_matmul_gflop(world_model, cfg.planner), rel=1e-6)
