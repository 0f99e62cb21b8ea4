"""TD-MPC2's building blocks: NormedLinear, SimNorm, mlp, and a Q ensemble held as stacked weights.

Parameter layouts and counts match TD-MPC2 (tdmpc2/common/layers.py) exactly. Deviation 5
(model/world_model.py): the ensemble runs its heads with batched matmuls instead of torch.vmap, so it traces to
ONNX and can evaluate a subset of heads.

Mish, the ensemble's per-head LayerNorm + Mish and dropout run through `model/kernels.py`, which computes the
same maths faster on a CPU; read them as F.mish, F.layer_norm and F.dropout.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from tdmpc_ros.model import kernels


class Mish(nn.Module):
    """Mish (x tanh(softplus(x))), TD-MPC2's activation."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return kernels.mish(x)


class SimNorm(nn.Module):
    """Simplicial normalisation: a softmax over each consecutive group of `dim` latent entries."""

    def __init__(self, dim: int = 8):
        super().__init__()
        self.dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        return F.softmax(x.reshape(*shape[:-1], shape[-1] // self.dim, self.dim), dim=-1).reshape(shape)

    def extra_repr(self) -> str:
        return f"dim={self.dim}"


class NormedLinear(nn.Linear):
    """Linear, then dropout (if any), LayerNorm and an activation (Mish unless given)."""

    def __init__(self, in_features: int, out_features: int, dropout: float = 0.0, act: nn.Module | None = None):
        super().__init__(in_features, out_features)
        self.ln = nn.LayerNorm(out_features)
        self.act = act if act is not None else Mish()
        self.dropout = nn.Dropout(dropout) if dropout else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = super().forward(x)
        if self.dropout is not None:
            x = self.dropout(x)
        return self.act(self.ln(x))


def mlp(in_dim: int, hidden_dims: list[int] | int, out_dim: int, act: nn.Module | None = None,
        dropout: float = 0.0) -> nn.Sequential:
    """NormedLinear hidden layers (dropout in the first only); a plain Linear out unless `act` is given."""
    hidden_dims = [hidden_dims] if isinstance(hidden_dims, int) else list(hidden_dims)
    dims = [in_dim] + hidden_dims + [out_dim]
    layers: list[nn.Module] = [NormedLinear(dims[i], dims[i + 1], dropout=dropout * (i == 0))
                               for i in range(len(dims) - 2)]
    layers.append(NormedLinear(dims[-2], dims[-1], act=act) if act is not None else nn.Linear(dims[-2], dims[-1]))
    return nn.Sequential(*layers)


def init_weights(module: nn.Module) -> None:
    """TD-MPC2's init: truncated normal (std 0.02) weights, zero biases."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


class QEnsemble(nn.Module):
    """`num_q` copies of mlp(in_dim, hidden_dims, out_dim, dropout=dropout) with weights stacked per layer.

    Layer k holds weight [num_q, in, out] and bias [num_q, out]; hidden layers also a stacked LayerNorm
    (ln_weight, ln_bias [num_q, out]). forward(x [..., in], heads) -> [len(heads) or num_q, ..., out].
    """

    def __init__(self, num_q: int, in_dim: int, hidden_dims: list[int], out_dim: int, dropout: float = 0.0):
        super().__init__()
        dims = [in_dim] + list(hidden_dims) + [out_dim]
        self.num_q = num_q
        self.dropout = dropout
        self.weight = nn.ParameterList(nn.Parameter(torch.empty(num_q, i, o)) for i, o in zip(dims[:-1], dims[1:]))
        self.bias = nn.ParameterList(nn.Parameter(torch.zeros(num_q, o)) for o in dims[1:])
        self.ln_weight = nn.ParameterList(nn.Parameter(torch.ones(num_q, o)) for o in dims[1:-1])
        self.ln_bias = nn.ParameterList(nn.Parameter(torch.zeros(num_q, o)) for o in dims[1:-1])
        for w in self.weight:
            nn.init.trunc_normal_(w, std=0.02)

    def forward(self, x: torch.Tensor, heads: torch.Tensor | None = None) -> torch.Tensor:
        lead = x.shape[:-1]
        h = x.reshape(1, -1, x.shape[-1])
        for k, (w, b) in enumerate(zip(self.weight, self.bias)):
            if heads is not None:
                w, b = w.index_select(0, heads), b.index_select(0, heads)
            # [1 or Q, N, in] @ [Q, in, out]: the shared input of the first layer broadcasts over heads.
            h = torch.baddbmm(b.unsqueeze(1), h.expand(w.shape[0], -1, -1), w)
            if k == len(self.ln_weight):
                break
            if k == 0 and self.training:
                h = kernels.dropout(h, self.dropout)
            g, beta = self.ln_weight[k], self.ln_bias[k]
            if heads is not None:
                g, beta = g.index_select(0, heads), beta.index_select(0, heads)
            h = kernels.ensemble_norm_mish(h, g.unsqueeze(1), beta.unsqueeze(1))
        return h.reshape(h.shape[0], *lead, h.shape[-1])

    def extra_repr(self) -> str:
        dims = [self.weight[0].shape[1]] + [w.shape[2] for w in self.weight]
        return f"num_q={self.num_q}, dims={dims}, dropout={self.dropout}"


def count_parameters(module: nn.Module | None) -> int:
    return 0 if module is None else sum(p.numel() for p in module.parameters())

