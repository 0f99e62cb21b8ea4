"""TD-MPC (v1; Hansen, Wang, Su 2022, "Temporal Difference Learning for Model Predictive Control") where its
TOLD model differs from TD-MPC2's, selected by `model.preset: tdmpc1-*`:

- latent: unnormalised (no SimNorm): encoder and dynamics are plain MLPs with ELU activations and a linear
  output, z_t = h(s_t), z_{t+1} = d(z_t, a_t);
- reward R(z, a) and value Q(z, a) are scalars regressed with MSE (no two-hot, no symlog);
- two Q heads; the TD target takes their minimum (TD-MPC2's "min of two heads" with num_q = 2);
- loss weights c1 (reward) 0.5, c2 (value) 0.1, c3 (consistency) 2, one learning rate 1e-3, clip 10, and
  its planner's horizon 5 with a 5 % policy-prior share (config.TDMPC1_DEFAULTS).

Deviations from the v1 reference (nicklashansen/tdmpc), kept so every variant plans and trains through one
code path: the Q heads keep TD-MPC2's layer shape (LayerNorm + Mish on both hidden layers, v1: LayerNorm +
Tanh then ELU); the policy prior stays TD-MPC2's squashed Gaussian with its entropy bonus (v1: a deterministic
tanh policy with a scheduled exploration std); the consistency and TD targets come from the online encoder
under no_grad (v1: a Polyak copy of the whole model); all layers take TD-MPC2's truncated-normal init (v1:
orthogonal); MPPI has no momentum on the refitted mean (v1: 0.1).
"""
from __future__ import annotations

import torch.nn as nn


def elu_mlp(in_dim: int, hidden_dims: list[int], out_dim: int) -> nn.Sequential:
    """TD-MPC v1's MLP: Linear + ELU hidden layers, a linear output."""
    dims = [in_dim] + list(hidden_dims)
    layers: list[nn.Module] = []
    for i, o in zip(dims[:-1], dims[1:]):
        layers += [nn.Linear(i, o), nn.ELU()]
    layers.append(nn.Linear(dims[-1], out_dim))
    return nn.Sequential(*layers)
