"""`tdmpc-ros eval --checkpoint C`: the eval-mode MPPI planner on ArmEnv; success rate, return, length, latency.

The task, sim and planner come from the config file (as the controller gets them), the network from the
checkpoint. `--backend onnx` exports the plan call from the checkpoint as the controller does; `--onnx FILE`
runs a graph exported earlier (e.g. models/reach_small.onnx) instead.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from tdmpc_ros.cli.arm_args import add_arm_arguments, arm_config
from tdmpc_ros.errors import InputError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="checkpoint file (e.g. models/reach_small.pt)")
    parser.add_argument("--episodes", type=int, default=20, help="evaluation episodes")
    parser.add_argument("--backend", choices=["torch", "onnx"], default="torch", help="planner backend")
    parser.add_argument("--onnx", default=None, help="with --backend onnx: plan graph file to run instead of exporting")
    parser.add_argument("--seed", type=int, default=100, help="seed of goals, start poses and planner draws")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=False,
                        help="torch backend: torch.compile the plan call (minutes of set-up on a busy CPU)")
    parser.add_argument("--threads", type=int, default=1, help="planner threads")
    parser.add_argument("--config", default=None, help="parameter file (default: config/arm.yaml)")
    add_arm_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print only the JSON object")


def exported_planner(path: Path, model, planner_cfg, discount: float, seed: int):
    """An ONNX planner that runs the graph in `path` (checked against this config's PlanSpec) instead of exporting."""
    from tdmpc_ros.planner import PlanSpec
    from tdmpc_ros.planner.onnx_backend import OnnxPlanner, spec_of

    data = path.read_bytes()
    wanted = PlanSpec.from_config(planner_cfg, discount, model.cfg.action_dim, model.cfg.num_q)
    if spec_of(data) != wanted:
        raise InputError(f"{path} was exported for {spec_of(data)}, this config plans with {wanted}")

    class ExportedPlanner(OnnxPlanner):
        def _setup(self) -> None:  # the backend hook: load the given graph where OnnxPlanner would export
            self._load(data)
            self.compiled = True

    return ExportedPlanner(model, planner_cfg, discount, seed)


def evaluate_checkpoint(args: argparse.Namespace) -> dict:
    """Run the evaluation; the figures as a dict."""
    import numpy as np

    from tdmpc_ros.learning.checkpoint import agent_from_checkpoint, check_arm, check_model_config, load_checkpoint
    from tdmpc_ros.planner import make_planner
    from tdmpc_ros.sim.env import ArmEnv, collect_episode

    if args.episodes < 1:
        raise InputError(f"--episodes must be at least 1, got {args.episodes}")
    if args.onnx and args.backend != "onnx":
        raise InputError("--onnx needs --backend onnx")
    cfg = arm_config(args, {
        "planner": {"backend": args.backend, "device": "cpu", "compile": args.compile, "threads": args.threads},
        "sim": {"seed": args.seed}})
    ckpt = load_checkpoint(args.checkpoint)
    check_arm(ckpt, cfg.task)
    check_model_config(ckpt, cfg.model)
    model = agent_from_checkpoint(ckpt).model
    start = time.perf_counter()
    if args.onnx:
        planner = exported_planner(Path(args.onnx), model, cfg.planner, ckpt.config.discount, args.seed)
    else:
        planner = make_planner(model, cfg.planner, ckpt.config.discount, seed=args.seed)
    setup_s = time.perf_counter() - start
    env = ArmEnv(cfg)
    latencies, episodes, distances = [], [], []

    def act(obs, info):
        mark = time.perf_counter()
        action = planner.plan(obs, eval_mode=True)
        latencies.append(time.perf_counter() - mark)
        return action

    try:
        for i in range(args.episodes):
            planner.reset()
            episode, last = collect_episode(env, act, i)
            episodes.append(episode)
            distances.append(round(float(last["distance"]), 4))
    finally:
        env.close()
    ms = np.asarray(latencies) * 1e3
    return {
        "checkpoint": args.checkpoint, "backend": planner.backend, "onnx": args.onnx, "episodes": args.episodes,
        "seed": args.seed, "success_rate": float(np.mean([e.success for e in episodes])),
        "mean_return": float(np.mean([e.episode_return for e in episodes])),
        "mean_length": float(np.mean([len(e) for e in episodes])),
        "successes": [bool(e.success) for e in episodes],
        # the task's distance to its goal as each episode ended (m; reach: the end effector's, push: the cube's)
        "final_distances": distances,
        "plan_p50_ms": float(np.percentile(ms, 50)), "plan_p99_ms": float(np.percentile(ms, 99)),
        "setup_s": round(setup_s, 2), "updates": int(ckpt.meta.get("updates", 0)),
        "env_steps": int(ckpt.meta.get("env_steps", 0)),
    }


def run(args: argparse.Namespace) -> int:
    result = evaluate_checkpoint(args)
    if not args.json:
        print(f"eval {result['checkpoint']} ({result['backend']}): success {result['success_rate']:.2f} over "
              f"{result['episodes']} episodes, mean return {result['mean_return']:.2f}, mean length "
              f"{result['mean_length']:.1f}, plan p50 {result['plan_p50_ms']:.1f} ms p99 {result['plan_p99_ms']:.1f} ms")
    print(json.dumps(result))
    return 0
