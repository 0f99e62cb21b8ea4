"""DC-MPC's discrete codebook latent (Scannell et al. 2025, "Discrete Codebook World Models for Continuous
Control"): finite scalar quantisation of the encoder's output, and a dynamics head that classifies the next code.

The latent [..., latent_dim] is latent_dim / b groups of b channels (b = len(levels), DC-MPC: b = 2, L = [5, 3]).
Channel i of a group is quantised to one of L_i levels:

    c_i = round_ste(floor(L_i / 2) * tanh(x_i)) / floor(L_i / 2)      (in [-1, 1], on a grid of L_i points)

(the division puts every channel on [-1, 1], as the FSQ reference implementation returns its codes). A group's
code is one of |C| = prod L_i codebook entries. The dynamics head outputs logits over the |C| codes per group:
trained with cross-entropy against the encoded next observation's code; multi-step training feeds the next step a
straight-through Gumbel-softmax sample; planning feeds it the expected code, sum_k p_k C_k (deterministic).
"""
from __future__ import annotations

import itertools

import torch
import torch.nn as nn
import torch.nn.functional as F


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """Round in the forward pass, identity in the backward (straight-through estimator)."""
    return x + (torch.round(x) - x).detach()


class FSQ(nn.Module):
    """Finite scalar quantisation over groups of len(levels) channels, and the codebook those codes form."""

    def __init__(self, levels: list[float]):
        super().__init__()
        levels = [int(v) for v in levels]  # odd integers >= 3: ModelConfig checks model.fsq_levels
        self.levels = levels
        self.channels = len(levels)
        half = torch.tensor([v // 2 for v in levels], dtype=torch.float32)
        # Every code of one group, [|C|, b], in row-major order of the integer levels (index = code_index).
        grid = torch.tensor(list(itertools.product(*[range(-(v // 2), v // 2 + 1) for v in levels])),
                            dtype=torch.float32)
        strides = [1] * self.channels
        for i in range(self.channels - 2, -1, -1):
            strides[i] = strides[i + 1] * levels[i + 1]
        self.register_buffer("half_width", half, persistent=False)
        self.register_buffer("codebook", grid / half, persistent=False)
        self.register_buffer("strides", torch.tensor(strides, dtype=torch.float32), persistent=False)

    @property
    def num_codes(self) -> int:
        return len(self.codebook)

    def groups(self, x: torch.Tensor) -> torch.Tensor:
        """[..., latent_dim] -> [..., groups, b]."""
        return x.reshape(*x.shape[:-1], x.shape[-1] // self.channels, self.channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Quantise [..., latent_dim] to codes on the grid (same shape), gradients straight through."""
        g = self.groups(x)
        return (round_ste(self.half_width * torch.tanh(g)) / self.half_width).reshape(x.shape)

    def code_index(self, z: torch.Tensor) -> torch.Tensor:
        """Codes [..., latent_dim] -> int64 codebook indices [..., groups]."""
        integer = torch.round(self.groups(z) * self.half_width) + self.half_width
        return (integer * self.strides).sum(-1).long()

    def expected_code(self, logits: torch.Tensor) -> torch.Tensor:
        """Dynamics logits [..., groups * |C|] -> the probability-weighted code [..., latent_dim] (planning)."""
        probs = F.softmax(self._by_group(logits), dim=-1)
        return self._decode(probs)

    def sample_code(self, logits: torch.Tensor, tau: float = 1.0) -> torch.Tensor:
        """A straight-through Gumbel-softmax sample of the next code (multi-step training): one codebook entry
        per group in the forward pass, the relaxed sample's gradient in the backward."""
        one_hot = F.gumbel_softmax(self._by_group(logits), tau=tau, hard=True, dim=-1)
        return self._decode(one_hot)

    def cross_entropy(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of dynamics logits [..., groups * |C|] against target codes [..., latent_dim],
        averaged over groups -> [...]."""
        log_probs = F.log_softmax(self._by_group(logits), dim=-1)
        index = self.code_index(target).unsqueeze(-1)
        return -log_probs.gather(-1, index).squeeze(-1).mean(-1)

    def _by_group(self, logits: torch.Tensor) -> torch.Tensor:
        return logits.reshape(*logits.shape[:-1], -1, self.num_codes)

    def _decode(self, weights: torch.Tensor) -> torch.Tensor:
        """Weights over codes [..., groups, |C|] -> codes [..., latent_dim]."""
        codes = weights @ self.codebook
        return codes.reshape(*codes.shape[:-2], -1)

    def extra_repr(self) -> str:
        return f"levels={self.levels}, codes={self.num_codes}"
