"""`tdmpc-ros info`: parameter counts of the world model for a preset and observation/action sizes."""
from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", default="small", help="model size preset (small, medium, 1m, 5m, 19m, 48m, 317m)")
    parser.add_argument("--obs-dim", type=int, default=0, help="observation size (default: the reach task's)")
    parser.add_argument("--action-dim", type=int, default=0, help="action size (default: the reach task's)")
    parser.add_argument("--episodic", action="store_true", help="include the termination head")
    parser.add_argument("--json", action="store_true", help="print one JSON object of counts")


def run(args: argparse.Namespace) -> int:
    import torch

    from tdmpc_ros.config import Config, ModelConfig
    from tdmpc_ros.model import WorldModel, parameter_counts

    task = Config().task
    model_cfg = ModelConfig(preset=args.preset, obs_dim=args.obs_dim or task.obs_dim,
                            action_dim=args.action_dim or task.action_dim, episodic=args.episodic)
    with torch.device("meta"):  # shapes only, so even 317m costs no memory
        counts = parameter_counts(WorldModel(model_cfg))
    if args.json:
        print(json.dumps(counts))
        return 0
    print(f"preset {args.preset}: obs {model_cfg.obs_dim}, action {model_cfg.action_dim}, latent "
          f"{model_cfg.latent_dim}, mlp {model_cfg.mlp_dim}, enc {model_cfg.enc_dim}, num_q {model_cfg.num_q}, "
          f"episodic {model_cfg.episodic}")
    for name, count in counts.items():
        note = " (not trained; excluded from total)" if name == "target_qs" else ""
        print(f"  {name:<12} {count:>13,}{note}")
    return 0
