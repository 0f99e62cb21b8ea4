"""TD-MPC2's MPPI as one pure function of the observation, the warm start and all random draws.

Every random number is an input (`Draws`), so the same call runs eagerly, under torch.compile, inside a
CUDA graph, or as an exported ONNX graph, and all of them agree on the same draws.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn

from tdmpc_ros.config import PlannerConfig


@dataclass(frozen=True)
class PlanSpec:
    """The static numbers a plan call is built from (shapes and constants, no tensors)."""

    horizon: int
    iterations: int
    num_samples: int
    num_elites: int
    num_pi_trajs: int
    min_std: float
    max_std: float
    temperature: float
    discount: float
    action_dim: int
    num_q: int

    @classmethod
    def from_config(cls, cfg: PlannerConfig, discount: float, action_dim: int, num_q: int) -> "PlanSpec":
        if not 0 <= cfg.num_pi_trajs < cfg.num_samples:
            raise ValueError(f"planner.num_pi_trajs {cfg.num_pi_trajs} must be in [0, num_samples {cfg.num_samples})")
        if not 0 < cfg.num_elites <= cfg.num_samples:
            raise ValueError(f"planner.num_elites {cfg.num_elites} must be in [1, num_samples {cfg.num_samples}]")
        if cfg.horizon < 1 or cfg.iterations < 1:
            raise ValueError(f"planner.horizon {cfg.horizon} and planner.iterations {cfg.iterations} must be >= 1")
        return cls(cfg.horizon, cfg.iterations, cfg.num_samples, cfg.num_elites, cfg.num_pi_trajs,
                   cfg.min_std, cfg.max_std, cfg.temperature, discount, action_dim, num_q)

    @property
    def num_gaussian(self) -> int:
        return self.num_samples - self.num_pi_trajs

    @property
    def num_heads(self) -> int:
        """Q heads averaged for the terminal value (TD-MPC2: 2 random ones)."""
        return min(2, self.num_q)


class Draws(NamedTuple):
    """All random inputs of one plan call."""

    sample_noise: torch.Tensor  # [I, H, N - P, A] N(0,1): Gaussian action sequences
    pi_noise: torch.Tensor  # [H, P, A] N(0,1): policy-prior sequences
    value_noise: torch.Tensor  # [I, N, A] N(0,1): policy action for the terminal Q
    q_heads: torch.Tensor  # [I, 2] int64: the Q heads averaged per iteration
    elite_u: torch.Tensor  # [1] U(0,1): which elite's first action is taken
    action_noise: torch.Tensor  # [A] N(0,1): exploration noise scaled by the final std


def zero_draws(spec: PlanSpec, device: torch.device | str = "cpu") -> Draws:
    """Preallocated draw buffers (zeros: a valid draw for warm-up), filled in place by `DrawSource.fill`."""
    kw = dict(device=device, dtype=torch.float32)
    return Draws(
        torch.zeros(spec.iterations, spec.horizon, spec.num_gaussian, spec.action_dim, **kw),
        torch.zeros(spec.horizon, spec.num_pi_trajs, spec.action_dim, **kw),
        torch.zeros(spec.iterations, spec.num_samples, spec.action_dim, **kw),
        torch.zeros(spec.iterations, spec.num_heads, dtype=torch.int64, device=device),
        torch.zeros(1, **kw),
        torch.zeros(spec.action_dim, **kw),
    )


class DrawSource:
    """Fills one preallocated `Draws` in place from one seeded generator (no allocation per call)."""

    def __init__(self, spec: PlanSpec, seed: int, device: torch.device | str = "cpu"):
        self.spec = spec
        self.generator = torch.Generator(device=device).manual_seed(seed)
        self.draws = zero_draws(spec, device)
        self._keys = torch.empty(spec.iterations, spec.num_q, device=device)
        self._order = torch.empty(spec.iterations, spec.num_q, dtype=torch.int64, device=device)

    def fill(self) -> Draws:
        d, g = self.draws, self.generator
        for noise in (d.sample_noise, d.pi_noise, d.value_noise, d.action_noise):
            noise.normal_(generator=g)
        d.elite_u.uniform_(generator=g)
        # A random permutation per iteration: argsort of uniform keys; its first heads are the sampled ones.
        self._keys.uniform_(generator=g)
        torch.sort(self._keys, dim=-1, out=(self._keys, self._order))
        d.q_heads.copy_(self._order[:, : self.spec.num_heads])
        return d


def trajectory_value(model: nn.Module, spec: PlanSpec, z: torch.Tensor, actions: torch.Tensor,
                     value_noise: torch.Tensor, q_heads: torch.Tensor) -> torch.Tensor:
    """Discounted reward of each action sequence, cut by the continuation probability, plus terminal Q. [N]"""
    ret = torch.zeros_like(z[:, :1])
    alive = torch.ones_like(ret)
    discount = 1.0
    for t in range(spec.horizon):
        reward = model.scalar(model.reward(z, actions[t]))
        z = model.next(z, actions[t])
        ret = ret + discount * alive * reward
        discount *= spec.discount
        # Deviation 1 (model/world_model.py): soft termination; later rewards and the bootstrap count only
        # as far as the episode is still running.
        alive = alive * (1 - model.termination(z))
    action, _ = model.pi(z, eps=value_noise)
    value = model.Q(z, action, return_type="avg", heads=q_heads)
    return (ret + discount * alive * value).squeeze(-1)


def policy_sequences(model: nn.Module, spec: PlanSpec, z: torch.Tensor, pi_noise: torch.Tensor) -> torch.Tensor:
    """Roll the policy prior through the latent dynamics: [H, P, A]."""
    z = z.expand(spec.num_pi_trajs, -1)
    actions = []
    for t in range(spec.horizon):
        action, _ = model.pi(z, eps=pi_noise[t])
        actions.append(action)
        if t + 1 < spec.horizon:
            z = model.next(z, action)
    return torch.stack(actions)


def mppi_iteration(model: nn.Module, spec: PlanSpec, z: torch.Tensor, pi_actions: torch.Tensor | None,
                   mean: torch.Tensor, std: torch.Tensor, sample_noise: torch.Tensor, value_noise: torch.Tensor,
                   q_heads: torch.Tensor):
    """One refinement: sample around (mean, std), score, keep the elites, refit.
    -> (mean, std, elite indices [E], elite weights [E], elite actions [H, E, A])."""
    # Sample action sequences; compute their values
    sampled = (mean.unsqueeze(1) + std.unsqueeze(1) * sample_noise).clamp(-1, 1)
    actions = sampled if pi_actions is None else torch.cat([pi_actions, sampled], dim=1)
    value = torch.nan_to_num(trajectory_value(model, spec, z, actions, value_noise, q_heads))
    # Select elites; update the parameters
    elite_value, elite_idx = torch.topk(value, spec.num_elites)
    elite_actions = actions.index_select(1, elite_idx)
    # TD-MPC2 scales values by `temperature` (an inverse temperature in effect) before the softmax.
    weights = torch.softmax(spec.temperature * elite_value, dim=0)
    mean = (weights.unsqueeze(-1) * elite_actions).sum(1)
    spread = (weights.unsqueeze(-1) * (elite_actions - mean.unsqueeze(1)) ** 2).sum(1)
    std = spread.sqrt().clamp(spec.min_std, spec.max_std)
    return mean, std, elite_idx, weights, elite_actions


def plan_step(model: nn.Module, spec: PlanSpec, obs: torch.Tensor, mean: torch.Tensor, draws: Draws,
              iteration=mppi_iteration):
    """One MPPI plan call. obs [obs_dim], mean [H, A] (warm start) ->
    (action [A], new mean [H, A], elite indices [E] of the last iteration, elite weights [E]).

    `iteration` is `mppi_iteration` or a compiled version of it (one small graph reused every iteration)."""
    # Encode the observation; roll out the policy prior's trajectories
    z = model.encode(obs.unsqueeze(0))
    pi_actions = policy_sequences(model, spec, z, draws.pi_noise) if spec.num_pi_trajs else None
    z = z.expand(spec.num_samples, -1)
    # Iterate MPPI (the warm-started mean, the std reset to its maximum)
    std = torch.full_like(mean, spec.max_std)
    for i in range(spec.iterations):
        mean, std, elite_idx, weights, elite_actions = iteration(
            model, spec, z, pi_actions, mean, std, draws.sample_noise[i], draws.value_noise[i], draws.q_heads[i])
    # Select the action. Deviation 4 (model/world_model.py): one elite drawn by its weight through the inverse
    # CDF of a uniform draw, then exploration noise scaled by the final std.
    choice = (torch.cumsum(weights, 0) < draws.elite_u).sum().clamp(max=spec.num_elites - 1)
    first = elite_actions[0].index_select(0, choice.reshape(1)).squeeze(0)
    action = (first + std[0] * draws.action_noise).clamp(-1, 1)
    return action, mean, elite_idx, weights


class PlanGraph(nn.Module):
    """`plan_step` as a module over a fixed model (and iteration function): what CUDA-graph capture, ONNX
    export and the compiled torch path run."""

    def __init__(self, model: nn.Module, spec: PlanSpec, iteration=mppi_iteration):
        super().__init__()
        self.model = model
        self.spec = spec
        self.iteration = iteration

    def forward(self, obs, mean, sample_noise, pi_noise, value_noise, q_heads, elite_u, action_noise):
        draws = Draws(sample_noise, pi_noise, value_noise, q_heads, elite_u, action_noise)
        return plan_step(self.model, self.spec, obs, mean, draws, self.iteration)
