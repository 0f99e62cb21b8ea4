"""The reconstruction auxiliary (Dreamer, Hafner et al. 2020): a decoder from the latent back to the observation,
trained with MSE beside TD-MPC2's consistency loss (`agent.decoder_coef`).

Dreamer reconstructs every observation from its latent state so that the latent keeps what the observation
holds; TD-MPC2 argues the latent only needs what predicts rewards and values. The decoder reads the latents of
the model's own rollout (the encoded first observation, then the dynamics' predictions), so the reconstruction
shapes both encoder and dynamics. It is part of the agent, not of the world model the planner runs.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from tdmpc_ros.config import ModelConfig
from tdmpc_ros.model.layers import init_weights, mlp


class Decoder(nn.Module):
    """mlp(latent, [enc_dim] * (num_enc_layers - 1), obs_dim): the encoder's shape mirrored."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.net = mlp(cfg.latent_dim, max(cfg.num_enc_layers - 1, 1) * [cfg.enc_dim], cfg.obs_dim)
        self.apply(init_weights)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


def reconstruction_loss(decoder: Decoder, zs: torch.Tensor, obs: torch.Tensor, rho: torch.Tensor) -> torch.Tensor:
    """MSE of decoded latents zs [T, B, latent] against observations obs [T, B, obs_dim], rho-weighted over T."""
    per_step = (decoder(zs) - obs).pow(2).mean(dim=(1, 2))
    return (per_step * rho).sum() / len(rho)
