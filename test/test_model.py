"""World model: exact TD-MPC2 parameter counts, two-hot numerics, SimNorm, the stacked Q ensemble."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tdmpc_ros.config import MODEL_PRESETS, ModelConfig
from tdmpc_ros.model import WorldModel, math, parameter_counts
from tdmpc_ros.model.kernels import _EnsembleNormMish, mish_fast
from tdmpc_ros.model.kernels import dropout as fast_dropout
from tdmpc_ros.model.layers import Mish, QEnsemble, SimNorm, mlp

pytestmark = pytest.mark.unit

# Official TD-MPC2 5m counts (single task) for two observation/action sizes.
REFERENCE_COUNTS = [
    (dict(obs_dim=18, action_dim=4, episodic=True), dict(
        encoder=137_984, dynamics=793_088, reward=581_221, termination=527_873, qs=2_906_105,
        target_qs=2_906_105, pi=531_464, total=5_477_735)),
    (dict(obs_dim=18, action_dim=4, episodic=False), dict(termination=0, total=4_949_862)),
    (dict(obs_dim=30, action_dim=7, episodic=True), dict(
        encoder=141_056, dynamics=794_624, reward=582_757, termination=527_873, qs=2_913_785,
        target_qs=2_913_785, pi=534_542, total=5_494_637)),
]

# tdmpc2/common/__init__.py MODEL_SIZE, with the config default num_q=5 where a size leaves it out.
TDMPC2_MODEL_SIZE = {
    "1m": dict(enc_dim=256, mlp_dim=384, latent_dim=128, num_enc_layers=2, num_q=2),
    "5m": dict(enc_dim=256, mlp_dim=512, latent_dim=512, num_enc_layers=2, num_q=5),
    "19m": dict(enc_dim=1024, mlp_dim=1024, latent_dim=768, num_enc_layers=3, num_q=5),
    "48m": dict(enc_dim=1792, mlp_dim=1792, latent_dim=768, num_enc_layers=4, num_q=5),
    "317m": dict(enc_dim=4096, mlp_dim=4096, latent_dim=1376, num_enc_layers=5, num_q=8),
}


def closed_form_counts(p: dict, obs: int, act: int, bins: int = 101, episodic: bool = True) -> dict:
    """Counts from the architecture by hand: Linear in*out+out, LayerNorm 2*out per hidden/normed layer."""
    def normed(i, o):
        return i * o + 3 * o

    def head(i, o):  # two mlp_dim hidden layers, plain Linear out
        return normed(i, p["mlp_dim"]) + normed(p["mlp_dim"], p["mlp_dim"]) + p["mlp_dim"] * o + o

    enc_hidden = max(p["num_enc_layers"] - 1, 1)
    encoder = normed(obs, p["enc_dim"]) + (enc_hidden - 1) * normed(p["enc_dim"], p["enc_dim"]) \
        + normed(p["enc_dim"], p["latent_dim"])
    za = p["latent_dim"] + act
    dynamics = normed(za, p["mlp_dim"]) + normed(p["mlp_dim"], p["mlp_dim"]) + normed(p["mlp_dim"], p["latent_dim"])
    counts = dict(encoder=encoder, dynamics=dynamics, reward=head(za, bins),
                  termination=head(p["latent_dim"], 1) if episodic else 0,
                  qs=p["num_q"] * head(za, bins), pi=head(p["latent_dim"], 2 * act))
    counts["target_qs"] = counts["qs"]
    counts["total"] = sum(v for k, v in counts.items() if k != "target_qs")
    return counts


@pytest.mark.parametrize("dims,expected", REFERENCE_COUNTS)
def test_counts_match_official_tdmpc2_5m(dims, expected):
    counts = parameter_counts(WorldModel(ModelConfig(preset="5m", **dims)))
    assert {k: counts[k] for k in expected} == expected


def test_presets_match_tdmpc2_model_size():
    for name, dims in TDMPC2_MODEL_SIZE.items():
        assert {k: MODEL_PRESETS[name][k] for k in dims} == dims, name


# TD-MPC2 presets (the tdmpc1-* ones are v1's architecture: test_variants.py)
@pytest.mark.parametrize("preset", sorted(p for p in MODEL_PRESETS if not p.startswith("tdmpc1")))
def test_counts_follow_closed_form(preset):
    with torch.device("meta"):  # shapes only: the 317m model allocates nothing
        for obs, act, episodic in [(23, 7, True), (39, 6, False)]:
            model = WorldModel(ModelConfig(preset=preset, obs_dim=obs, action_dim=act, episodic=episodic))
            assert parameter_counts(model) == closed_form_counts(MODEL_PRESETS[preset], obs, act, episodic=episodic)


@pytest.mark.parametrize("preset,nominal", [("1m", 1e6), ("5m", 5e6), ("19m", 19e6), ("48m", 48e6), ("317m", 317e6)])
def test_presets_land_near_nominal_size(preset, nominal):
    # TD-MPC2's mt80 dims: state observations zero-padded to the largest task's (Meta-World, 39) and actions to
    # the largest (6); no termination head. Our single-task model has no 96-d task embedding, so it lands a
    # little under TD-MPC2's own multitask count.
    with torch.device("meta"):
        total = parameter_counts(WorldModel(ModelConfig(preset=preset, obs_dim=39, action_dim=6, episodic=False)))["total"]
    assert abs(total - nominal) / nominal < 0.25, (preset, total)


def test_two_hot_round_trips_and_is_a_distribution():
    bins = math.value_bins(101, -10.0, 10.0, dtype=torch.float64)
    x = math.symexp(torch.linspace(-9.99, 9.99, 2001, dtype=torch.float64)).unsqueeze(-1)
    encoded = math.two_hot(x, bins)
    assert torch.allclose(encoded.sum(-1), torch.ones(len(x), dtype=torch.float64))
    assert (encoded >= 0).all() and ((encoded > 0).sum(-1) <= 2).all()
    back = math.two_hot_inv(torch.log(encoded), bins)
    assert torch.allclose(back, x, rtol=1e-9, atol=1e-9)
    # out-of-range values clamp to the end bins
    assert math.two_hot(torch.tensor([[1e9]], dtype=torch.float64), bins)[0, -1] == 1.0
    assert torch.allclose(math.symexp(math.symlog(x)), x)


def test_soft_ce_is_lowest_at_the_target():
    bins = math.value_bins(101, -10.0, 10.0)
    target = torch.tensor([[3.0]])
    exact = torch.log(math.two_hot(target, bins) + 1e-12)
    off = torch.log(math.two_hot(torch.tensor([[30.0]]), bins) + 1e-12)
    assert math.soft_ce(exact, target, bins) < math.soft_ce(off, target, bins)


def test_simnorm_groups_are_distributions():
    z = SimNorm(8)(torch.randn(3, 5, 64) * 10)
    groups = z.view(3, 5, 8, 8)
    assert torch.allclose(groups.sum(-1), torch.ones(3, 5, 8)) and (z >= 0).all()


def test_fast_mish_matches_mish():
    x = torch.linspace(-60, 60, 100_001)
    assert torch.allclose(mish_fast(x), F.mish(x), atol=1e-5, rtol=1e-5)
    assert torch.isfinite(mish_fast(torch.tensor([1e30, -1e30]))).all()
    # the training path: same values and gradients as F.mish, and its backward checks numerically
    xg = x.clone().requires_grad_()
    ref = x.clone().requires_grad_()
    Mish()(xg).square().sum().backward()
    F.mish(ref).square().sum().backward()
    assert torch.allclose(xg.grad, ref.grad, atol=1e-4, rtol=1e-4)
    torch.autograd.gradcheck(Mish(), torch.linspace(-8, 8, 41, dtype=torch.float64, requires_grad=True))


def test_fast_dropout_is_iid_bernoulli_with_rescaling():
    torch.manual_seed(0)
    x = torch.ones(2_000_000, requires_grad=True)
    y = fast_dropout(x, 0.05)
    dropped = (y == 0).numpy()
    assert abs(dropped.mean() - 0.05) < 0.001
    assert abs(dropped[1:][dropped[:-1]].mean() - 0.05) < 0.004  # a drop says nothing about the next entry
    assert torch.allclose(y[y != 0], torch.tensor(1 / 0.95))
    y.sum().backward()
    assert torch.equal(x.grad == 0, y == 0)


def separate_heads(num_q, in_dim, hidden, out_dim):
    torch.manual_seed(0)
    heads = [mlp(in_dim, hidden, out_dim, dropout=0.01) for _ in range(num_q)]
    for net in heads:  # random LayerNorm affine too, so a layout mix-up cannot pass
        for p in net.parameters():
            torch.nn.init.normal_(p, std=0.3)
    ens = QEnsemble(num_q, in_dim, hidden, out_dim, dropout=0.01)
    linears = [[m for m in net if isinstance(m, torch.nn.Linear)] for net in heads]
    with torch.no_grad():
        for k in range(len(hidden) + 1):
            ens.weight[k].copy_(torch.stack([ls[k].weight.t() for ls in linears]))
            ens.bias[k].copy_(torch.stack([ls[k].bias for ls in linears]))
            if k < len(hidden):
                ens.ln_weight[k].copy_(torch.stack([ls[k].ln.weight for ls in linears]))
                ens.ln_bias[k].copy_(torch.stack([ls[k].ln.bias for ls in linears]))
    return heads, ens.eval()


def test_stacked_ensemble_equals_separate_heads():
    heads, ens = separate_heads(5, 20, [32, 32], 11)
    assert sum(p.numel() for p in ens.parameters()) == sum(p.numel() for h in heads for p in h.parameters())
    x = torch.randn(4, 6, 20, requires_grad=True)
    expected = torch.stack([h.eval()(x) for h in heads])
    got = ens(x)
    assert got.shape == (5, 4, 6, 11)
    assert torch.allclose(got, expected, atol=1e-5)
    # gradients agree too (the training path: fused LayerNorm + Mish), for the input and every LayerNorm affine
    ln_params = [m.ln.weight for h in heads for m in h[:2]] + [m.ln.bias for h in heads for m in h[:2]]
    g_sep = torch.autograd.grad(expected.square().sum(), [x, *ln_params])
    g_ens = torch.autograd.grad(ens(x).square().sum(), [x, *ens.ln_weight, *ens.ln_bias])
    assert torch.allclose(g_sep[0], g_ens[0], atol=1e-4)
    per_head = torch.stack(g_sep[1:]).view(2, 5, 2, 32)  # (weight|bias, head, layer, dim)
    assert torch.allclose(per_head.transpose(1, 2), torch.stack(g_ens[1:]).view(2, 2, 5, 32), rtol=1e-4, atol=1e-4)


def test_fused_ensemble_norm_mish_backward_checks_numerically():
    torch.manual_seed(0)
    h = torch.randn(3, 5, 16, dtype=torch.float64, requires_grad=True)
    gamma = (1 + 0.3 * torch.randn(3, 1, 16, dtype=torch.float64)).requires_grad_()
    beta = (0.3 * torch.randn(3, 1, 16, dtype=torch.float64)).requires_grad_()
    torch.autograd.gradcheck(_EnsembleNormMish.apply, (h, gamma, beta))


def test_selected_heads_equal_all_heads_slice():
    _, ens = separate_heads(5, 20, [32, 32], 11)
    x = torch.randn(7, 20)
    heads = torch.tensor([3, 1])
    assert torch.allclose(ens(x, heads), ens(x)[heads], atol=1e-6)


def small_model(**kw) -> WorldModel:
    torch.manual_seed(0)
    model = WorldModel(ModelConfig(preset="small", obs_dim=9, action_dim=3, **kw)).eval()
    with torch.no_grad():  # leave the zero init so values are not all 0
        for p in model._qs.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


def test_q_min_avg_use_the_given_heads():
    model = small_model()
    z = model.encode(torch.randn(8, 9))
    a = torch.rand(8, 3) * 2 - 1
    heads = torch.tensor([4, 0])
    values = math.two_hot_inv(model.Q(z, a, "all")[heads], model.bins)
    assert torch.allclose(model.Q(z, a, "min", heads=heads), values.min(0).values)
    assert torch.allclose(model.Q(z, a, "avg", heads=heads), values.mean(0))
    assert model.Q(z, a, "min").shape == (8, 1)
    with pytest.raises(ValueError, match="return_type"):
        model.Q(z, a, "max")


def test_target_ensemble_tracks_by_polyak_average():
    model = small_model()
    online = [p.detach().clone() for p in model._qs.parameters()]
    target = [p.detach().clone() for p in model._target_qs.parameters()]
    assert all(not p.requires_grad for p in model._target_qs.parameters())
    model.soft_update_target_Q(0.25)
    for o, t, new in zip(online, target, model._target_qs.parameters()):
        assert torch.allclose(new, t + 0.25 * (o - t))
    model.train()
    assert model._qs.training and not model._target_qs.training


def test_pi_is_squashed_bounded_and_takes_noise():
    model = small_model()
    z = model.encode(torch.randn(16, 9))
    eps = torch.randn(16, 3)
    a1, info = model.pi(z, eps)
    a2, _ = model.pi(z, eps)
    assert torch.equal(a1, a2) and (a1.abs() < 1).all()
    assert ((info["log_std"] >= -10) & (info["log_std"] <= 2)).all()
    mean_action, _ = model.pi(z, torch.zeros_like(eps))
    assert torch.allclose(mean_action, info["mean"])
    for key in ("entropy", "scaled_entropy"):
        assert info[key].shape == (16, 1)


def test_termination_head_only_when_episodic():
    z = torch.softmax(torch.randn(5, 64), -1)
    p = small_model(episodic=True).termination(z)
    assert p.shape == (5, 1) and ((p > 0) & (p < 1)).all()
    assert torch.equal(small_model(episodic=False).termination(z), torch.zeros(5, 1))


def test_track_q_grad_stops_parameter_grads_not_action_grads():
    model = small_model()
    z = model.encode(torch.randn(4, 9)).detach()
    a = torch.zeros(4, 3, requires_grad=True)
    model.track_q_grad(False)
    model.Q(z, a, "avg").sum().backward()
    assert a.grad is not None and all(p.grad is None for p in model._qs.parameters())
    assert model._qs.dropout == 0.0  # as TD-MPC2: no dropout in the ensemble the policy is trained through
    model.track_q_grad(True)
    assert all(p.requires_grad for p in model._qs.parameters()) and model._qs.dropout == model.cfg.dropout


def test_info_command_prints_the_counts(capsys):
    import json

    from tdmpc_ros.cli.main import main

    assert main(["info", "--preset", "5m", "--obs-dim", "18", "--action-dim", "4", "--episodic", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == REFERENCE_COUNTS[0][1]
