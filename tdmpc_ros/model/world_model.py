"""TD-MPC2's implicit world model (single task, state observations).

Components (named as in `parameter_counts`): encoder, dynamics, reward, termination (episodic only),
qs (the Q ensemble), target_qs (its Polyak copy, not trained) and pi (the policy prior). All verbs take
batch-first tensors [..., dim].

Deliberate deviations from the reference implementation (nicklashansen/tdmpc2), each marked `Deviation:` where
it is made:
1. Soft termination in planning (planner/mppi.py `trajectory_value`): later rewards and the bootstrap are
   weighted by the probability that the episode is still running, 1 - P(terminated), instead of being cut
   by P > 0.5. Smooth in the action sequence, and exportable without a comparison.
2. Eval-mode action is the elite mean (planner/torch_backend.py `plan`): the first action of the refitted
   mean, not a sampled elite. Deterministic for evaluation and for a deployed arm.
3. Triangle two-hot (model/math.py `two_hot`): weights from a one-bin-wide triangle kernel around each bin
   centre, the same two neighbour weights as the reference's scatter, without a scatter (traces to ONNX).
4. Inverse-CDF elite choice (planner/mppi.py `plan_step`): the executed elite is drawn by comparing one
   uniform draw with the cumulative elite weights, instead of a Gumbel-softmax sample: the same
   distribution, with every random number an input of the plan call (torch and ONNX agree on it).
5. Q ensemble as stacked weights with batched matmuls (model/layers.py `QEnsemble`) instead of torch.vmap
   over modules: the same heads and parameter counts, exportable, and a subset of heads can run alone.

Variants, one config switch each (docs/variants.md), behind the same verbs so training, both planner backends,
checkpoints and nodes take them unchanged:
- `model.latent: fsq` (model/fsq.py, DC-MPC): quantised codes; `dynamics` gives logits over the next code,
  `next` their expected code (planning), `sample_next` a straight-through Gumbel-softmax sample (training);
- `model.latent: plain`: no normalisation of the latent (TD-MPC v1's);
- `model.preset: tdmpc1-*` (model/tdmpc1.py): v1's ELU MLPs, scalar reward and value heads with MSE, two Q heads;
- `agent.decoder_coef` (model/decoder.py) lives in the agent, not here.
"""
from __future__ import annotations

import copy

import torch
import torch.nn as nn

from tdmpc_ros.config import ModelConfig
from tdmpc_ros.model import math
from tdmpc_ros.model.fsq import FSQ
from tdmpc_ros.model.layers import QEnsemble, SimNorm, count_parameters, init_weights, mlp
from tdmpc_ros.model.tdmpc1 import elu_mlp


class WorldModel(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        if cfg.obs_dim <= 0 or cfg.action_dim <= 0:
            raise ValueError(f"model.obs_dim and model.action_dim must be set (got {cfg.obs_dim}, {cfg.action_dim})")
        self.cfg = cfg
        latent, act, hidden = cfg.latent_dim, cfg.action_dim, 2 * [cfg.mlp_dim]
        enc_hidden = max(cfg.num_enc_layers - 1, 1) * [cfg.enc_dim]
        # Reward and value: two-hot logits over num_bins (TD-MPC2) or one scalar (TD-MPC v1).
        self.two_hot = not cfg.tdmpc1
        value_out = cfg.num_bins if self.two_hot else 1
        self._fsq = FSQ(cfg.fsq_levels) if cfg.latent == "fsq" else None
        if cfg.tdmpc1:
            self._encoder = elu_mlp(cfg.obs_dim, enc_hidden, latent)
            self._dynamics = elu_mlp(latent + act, hidden, latent)
            self._reward = elu_mlp(latent + act, hidden, 1)
        else:
            norm = SimNorm(cfg.simnorm_dim) if cfg.latent == "simnorm" else None
            self._encoder = mlp(cfg.obs_dim, enc_hidden, latent, act=norm)
            dynamics_out = latent // self._fsq.channels * self._fsq.num_codes if self._fsq else latent
            self._dynamics = mlp(latent + act, hidden, dynamics_out, act=norm)
            self._reward = mlp(latent + act, hidden, value_out)
        self._termination = mlp(latent, hidden, 1) if cfg.episodic else None
        self._pi = mlp(latent, hidden, 2 * act)
        self._qs = QEnsemble(cfg.num_q, latent + act, hidden, value_out, dropout=cfg.dropout)
        self.apply(init_weights)
        with torch.no_grad():  # zero-init outputs so rewards and values start at 0 (as TD-MPC2)
            self._reward[-1].weight.zero_()
            self._qs.weight[-1].zero_()
        self._target_qs = copy.deepcopy(self._qs).requires_grad_(False).train(False)
        self.register_buffer("bins", math.value_bins(cfg.num_bins, cfg.vmin, cfg.vmax), persistent=False)

    def train(self, mode: bool = True) -> "WorldModel":
        """The target ensemble always runs in eval mode (no dropout)."""
        super().train(mode)
        self._target_qs.train(False)
        return self

    # -- The verbs -------------------------------------------------------------------------------------------
    def encode(self, obs: torch.Tensor) -> torch.Tensor:
        z = self._encoder(obs)
        return self._fsq(z) if self._fsq is not None else z

    def dynamics(self, z: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """The dynamics head's output: the next latent, or (fsq) logits [..., groups * codes] over the next code."""
        return self._dynamics(torch.cat([z, a], dim=-1))

    def next(self, z: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """The next latent for planning: deterministic (fsq: the probability-weighted expected code)."""
        out = self.dynamics(z, a)
        return self._fsq.expected_code(out) if self._fsq is not None else out

    def sample_next(self, out: torch.Tensor) -> torch.Tensor:
        """The next latent for multi-step training from `dynamics`' output (fsq: a straight-through Gumbel-softmax
        sample of the code)."""
        return self._fsq.sample_code(out) if self._fsq is not None else out

    def consistency(self, out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Per-sample latent consistency [...] of `dynamics`' output against the encoded next observation:
        MSE over the latent (TD-MPC2, v1), or (fsq) cross-entropy of the code logits against its code."""
        if self._fsq is not None:
            return self._fsq.cross_entropy(out, target)
        return (out - target).pow(2).mean(-1)

    def reward(self, z: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """Reward head output: logits [..., num_bins] (two-hot) or [..., 1]; `scalar` gives the reward."""
        return self._reward(torch.cat([z, a], dim=-1))

    def scalar(self, out: torch.Tensor) -> torch.Tensor:
        """A reward or value head's output -> the scalar [..., 1] it predicts."""
        return math.two_hot_inv(out, self.bins) if self.two_hot else out

    def regression_loss(self, out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Reward/value loss [..., 1] of a head's output against scalar targets [..., 1]: soft cross-entropy
        against the two-hot target (TD-MPC2) or the squared error (TD-MPC v1)."""
        return math.soft_ce(out, target, self.bins) if self.two_hot else (out - target).pow(2)

    def termination(self, z: torch.Tensor, unnormalized: bool = False) -> torch.Tensor:
        """Probability (or logit) that the step into z ended the episode, [..., 1]; zeros if not episodic."""
        if self._termination is None:
            return z.new_zeros(*z.shape[:-1], 1)
        logit = self._termination(z)
        return logit if unnormalized else torch.sigmoid(logit)

    def pi(self, z: torch.Tensor, eps: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Sample the tanh-squashed Gaussian policy prior; `eps` (standard normal draws) may be passed in."""
        mean, log_std = self._pi(z).chunk(2, dim=-1)
        log_std = math.bound_log_std(log_std, self.cfg.log_std_min, self.cfg.log_std_max)
        if eps is None:
            eps = torch.randn_like(mean)
        log_prob = math.gaussian_logprob(eps, log_std)
        scaled_log_prob = log_prob * eps.shape[-1]
        action = mean + eps * log_std.exp()
        mean, action, log_prob = math.squash(mean, action, log_prob)
        # TD-MPC2's entropy scaling by the action dimension (kept as written there, gradient included).
        entropy_scale = scaled_log_prob / (log_prob + 1e-8)
        info = {"mean": mean, "log_std": log_std, "entropy": -log_prob, "scaled_entropy": -log_prob * entropy_scale}
        return action, info

    def Q(self, z: torch.Tensor, a: torch.Tensor, return_type: str = "min", target: bool = False,
          heads: torch.Tensor | None = None) -> torch.Tensor:
        """State-action value.

        "all": head outputs [num_q (or len(heads)), ..., num_bins or 1]. "min"/"avg": min or mean of two heads' scalar
        values [..., 1]; the heads are `heads` (a LongTensor of 2 indices) or drawn at random.
        """
        if return_type not in ("min", "avg", "all"):
            raise ValueError(f"Q: return_type must be min, avg or all, got {return_type!r}")
        net = self._target_qs if target else self._qs
        x = torch.cat([z, a], dim=-1)
        if return_type == "all":
            return net(x, heads)
        if heads is None and self.cfg.num_q > 2:  # two heads of two: both (inductor fails on the full slice)
            heads = torch.randperm(self.cfg.num_q, device=z.device)[:2]
        q = self.scalar(net(x, heads))
        return q.min(0).values if return_type == "min" else q.mean(0)

    # -- Target network ------------------------------------------------------------------------------------
    @torch.no_grad()
    def soft_update_target_Q(self, tau: float) -> None:
        """Polyak-average the target ensemble towards the online one."""
        torch._foreach_lerp_(list(self._target_qs.parameters()), list(self._qs.parameters()), tau)

    def track_q_grad(self, enable: bool = True) -> None:
        """Switch gradients and dropout of the online Q ensemble (off while the policy is trained through it)."""
        self._qs.requires_grad_(enable)
        self._qs.dropout = self.cfg.dropout if enable else 0.0


COMPONENTS = ("encoder", "dynamics", "reward", "termination", "qs", "target_qs", "pi")


def parameter_counts(model: WorldModel) -> dict[str, int]:
    """Parameters per component, and `total`: trainable ones only (target_qs excluded)."""
    counts = {name: count_parameters(getattr(model, f"_{name}")) for name in COMPONENTS}
    counts["total"] = sum(v for k, v in counts.items() if k != "target_qs")
    return counts


def row_flops(model: WorldModel) -> dict[str, int]:
    """Matmul FLOPs (2 x multiply-adds) of one row through each component as built (a variant's output widths
    included): `dynamics` with FSQ's expected code, `qs` one Q head; termination 0 where there is none."""
    def linear(module: nn.Module | None) -> int:
        return sum(2 * m.in_features * m.out_features for m in module.modules() if isinstance(m, nn.Linear)) \
            if module is not None else 0

    fsq = model._fsq
    decode = 2 * fsq.num_codes * fsq.channels * (model.cfg.latent_dim // fsq.channels) if fsq is not None else 0
    return {"encoder": linear(model._encoder), "dynamics": linear(model._dynamics) + decode,
            "reward": linear(model._reward), "termination": linear(model._termination), "pi": linear(model._pi),
            "qs": sum(2 * w.shape[1] * w.shape[2] for w in model._qs.weight)}
