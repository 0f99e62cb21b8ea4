"""MPPI planning in a world model's latent space (TD-MPC2), with torch and ONNX Runtime backends."""
from __future__ import annotations

from tdmpc_ros.config import PlannerConfig
from tdmpc_ros.planner.mppi import Draws, DrawSource, PlanGraph, PlanSpec, plan_step
from tdmpc_ros.planner.torch_backend import Planner

BACKENDS = ("torch", "onnx")


def make_planner(model, cfg: PlannerConfig, discount: float, seed: int = 0, action_dim: int | None = None) -> Planner:
    """The configured planner over `model` (a WorldModel; copied, so later training does not affect it)."""
    if cfg.backend == "torch":
        return Planner(model, cfg, discount, seed, action_dim)
    if cfg.backend == "onnx":
        from tdmpc_ros.planner.onnx_backend import OnnxPlanner

        return OnnxPlanner(model, cfg, discount, seed, action_dim)
    raise ValueError(f"planner.backend: unknown backend {cfg.backend!r}; choose from {BACKENDS}")


__all__ = ["BACKENDS", "DrawSource", "Draws", "PlanGraph", "PlanSpec", "Planner", "make_planner", "plan_step"]
