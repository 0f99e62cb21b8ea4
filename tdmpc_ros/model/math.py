"""TD-MPC2's numerics: symlog two-hot regression, the squashed Gaussian policy, log-std bounding.

Functions are batch-first over any leading shape ([..., dim]); scalars are carried as a trailing [..., 1].
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

LOG_SQRT_2PI = 0.9189385332046727  # log(sqrt(2 pi)), the Gaussian normaliser


def symlog(x: torch.Tensor) -> torch.Tensor:
    return torch.sign(x) * torch.log1p(torch.abs(x))


def symexp(x: torch.Tensor) -> torch.Tensor:
    return torch.sign(x) * torch.expm1(torch.abs(x))


def value_bins(num_bins: int, vmin: float, vmax: float, device=None, dtype=torch.float32) -> torch.Tensor:
    """Bin centres in symlog space: evenly spaced over [vmin, vmax]."""
    if num_bins < 2:
        raise ValueError(f"model.num_bins must be >= 2 for two-hot regression, got {num_bins}")
    return torch.linspace(vmin, vmax, num_bins, device=device, dtype=dtype)


def two_hot(x: torch.Tensor, bins: torch.Tensor) -> torch.Tensor:
    """[..., 1] scalars -> [..., num_bins] two-hot weights of symlog(x) (clamped to the bin range).

    Deviation 3 (model/world_model.py): a triangle kernel of one bin width around each centre gives exactly the
    two neighbouring bins weights that sum to one, with no scatter (so it traces and exports cleanly).
    """
    width = bins[1] - bins[0]
    x = symlog(x).clamp(bins[0], bins[-1])
    return torch.relu(1.0 - torch.abs(x - bins) / width)


def two_hot_inv(logits: torch.Tensor, bins: torch.Tensor) -> torch.Tensor:
    """[..., num_bins] logits -> [..., 1] scalar: symexp of the softmax-weighted bin centre."""
    return symexp(torch.sum(F.softmax(logits, dim=-1) * bins, dim=-1, keepdim=True))


def soft_ce(logits: torch.Tensor, target: torch.Tensor, bins: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of [..., num_bins] logits against two-hot encoded [..., 1] targets -> [..., 1]."""
    return -(two_hot(target, bins) * F.log_softmax(logits, dim=-1)).sum(-1, keepdim=True)


def bound_log_std(x: torch.Tensor, log_std_min: float, log_std_max: float) -> torch.Tensor:
    """Map an unbounded output into [log_std_min, log_std_max] through tanh (TD-MPC2's formula)."""
    return log_std_min + 0.5 * (log_std_max - log_std_min) * (torch.tanh(x) + 1.0)


def gaussian_logprob(eps: torch.Tensor, log_std: torch.Tensor) -> torch.Tensor:
    """Log-density of mean + eps * std under N(mean, std), summed over the last dim -> [..., 1]."""
    return (-0.5 * eps.pow(2) - log_std - LOG_SQRT_2PI).sum(-1, keepdim=True)


def squash(mean: torch.Tensor, action: torch.Tensor, log_prob: torch.Tensor):
    """tanh both, and correct the log-probability for the change of variables (1e-6 keeps log finite)."""
    mean, action = torch.tanh(mean), torch.tanh(action)
    log_prob = log_prob - torch.log(F.relu(1.0 - action.pow(2)) + 1e-6).sum(-1, keepdim=True)
    return mean, action, log_prob
