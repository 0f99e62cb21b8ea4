"""`tdmpc-ros export-onnx CHECKPOINT OUT.onnx`: a trained checkpoint's whole MPPI plan call as one ONNX graph.

Inputs: obs [obs_dim], mean [H, A] (warm start: the previous mean shifted one step, zeros at an episode's
start) and every random draw (see tdmpc_ros.planner.mppi.Draws); outputs: action, new_mean, elite_idx,
elite_weights. The PlanSpec is stored in the file's metadata. The export is checked against torch on one
set of draws before the command reports success.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import time


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="checkpoint file written by the learner or `tdmpc-ros train`")
    parser.add_argument("out", help="ONNX file to write")
    parser.add_argument("--config", default=None,
                        help="take the planner section from this config file instead of the checkpoint's")
    parser.add_argument("--seed", type=int, default=0, help="seed of the draws used for the check")


def run(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from tdmpc_ros.config import load_config
    from tdmpc_ros.learning.checkpoint import agent_from_checkpoint, load_checkpoint
    from tdmpc_ros.planner import DrawSource, PlanSpec, plan_step
    from tdmpc_ros.planner.onnx_backend import INPUT_NAMES, export_plan, load_plan_session

    ckpt = load_checkpoint(args.checkpoint)  # a bad file is a CheckpointError: one line from the CLI
    model = agent_from_checkpoint(ckpt).model.eval().requires_grad_(False)
    planner_cfg = load_config(args.config).planner if args.config else ckpt.config.planner
    spec = PlanSpec.from_config(planner_cfg, ckpt.config.discount, model.cfg.action_dim, model.cfg.num_q)
    start = time.perf_counter()
    export_plan(model, spec, args.out)
    export_s = time.perf_counter() - start

    session, stored = load_plan_session(args.out)
    draws = DrawSource(spec, args.seed).fill()
    obs = torch.from_numpy(np.random.default_rng(args.seed).normal(size=model.cfg.obs_dim).astype(np.float32))
    mean = torch.zeros(spec.horizon, spec.action_dim)
    feed = dict(zip(INPUT_NAMES, (t.numpy() for t in (obs, mean, *draws))))
    got = session.run(None, feed)
    with torch.inference_mode():
        want = plan_step(model, spec, obs, mean, draws)
    diff = max(float(np.abs(g - w.numpy()).max()) for g, w in zip(got[:2], want[:2]))
    same_elites = set(got[2].tolist()) == set(want[2].tolist())
    print(json.dumps({"out": args.out, "export_s": round(export_s, 2), "spec": dataclasses.asdict(stored),
                      "check_max_abs_diff": diff, "check_same_elites": same_elites}))
    if diff > 1e-4 or not same_elites:
        print(f"export-onnx: {args.out} disagrees with torch (max abs diff {diff:.2e}, same elites {same_elites})")
        return 1
    return 0
