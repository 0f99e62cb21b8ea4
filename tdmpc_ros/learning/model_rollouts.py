"""MBPO's branched model rollouts (Janner et al. 2019, "When to Trust Your Model"), in the latent space:
`agent.model_rollouts` start states from replay, each rolled out k = `agent.model_rollout_horizon` steps under the
policy prior with the model's own rewards and termination; the transitions join the Q and policy updates,
taking `agent.model_rollout_ratio` of those losses (MBPO's real-data ratio is 1 minus it).

MBPO keeps a model buffer refilled every epoch; here each full update branches fresh rollouts from the batch's
own encoded observations (no buffer: the latent of a stored rollout goes stale as the encoder trains).
"""
from __future__ import annotations

from typing import NamedTuple

import torch

from tdmpc_ros.model import WorldModel


class ModelData(NamedTuple):
    """k-step model transitions from M start states, time-major: z [k, M, latent], action [k, M, A], the TD
    target r + gamma (1 - P(terminated)) min Q_target [k, M, 1], and the weight P(still running) [k, M, 1]."""

    z: torch.Tensor
    action: torch.Tensor
    td: torch.Tensor
    alive: torch.Tensor


@torch.no_grad()
def branched_rollouts(model: WorldModel, replayed_z: torch.Tensor, count: int, horizon: int,
                      discount: torch.Tensor) -> ModelData:
    """Roll `count` latents drawn uniformly from replayed_z [..., latent] `horizon` steps under the policy."""
    flat = replayed_z.reshape(-1, replayed_z.shape[-1])
    z = flat[torch.randint(len(flat), (count,), device=flat.device)]
    alive = torch.ones(count, 1, device=flat.device)
    zs, actions, tds, alives = [], [], [], []
    action, _ = model.pi(z)
    for _ in range(horizon):
        # Act with the policy prior; the model predicts the reward, the next latent and whether it ended there
        reward = model.scalar(model.reward(z, action))
        next_z = model.next(z, action)
        terminated = model.termination(next_z)
        next_action, _ = model.pi(next_z)
        td = reward + discount * (1.0 - terminated) * model.Q(next_z, next_action, "min", target=True)
        zs.append(z), actions.append(action), tds.append(td), alives.append(alive)
        alive = alive * (1.0 - terminated)
        z, action = next_z, next_action  # the TD target's action is the next step's
    return ModelData(torch.stack(zs), torch.stack(actions), torch.stack(tds), torch.stack(alives))


def model_value_loss(model: WorldModel, data: ModelData) -> torch.Tensor:
    """Every Q head's regression loss on the model transitions, weighted by P(still running), mean over heads."""
    qs = model.Q(data.z, data.action, "all")  # [num_q, k, M, out]
    per_sample = model.regression_loss(qs, data.td)  # [num_q, k, M, 1]
    return (per_sample * data.alive).mean()
