"""`tdmpc-ros bench plan`: MPPI plan-call latency for one preset, backend and device.

The model is freshly initialised (planning cost does not depend on the weights). Set-up time (torch.compile,
CUDA-graph capture or ONNX export + session) is reported apart from the steady-state calls.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time

from tdmpc_ros.errors import InputError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", default="small", help="model size preset (config.MODEL_PRESETS)")
    parser.add_argument("--backend", choices=["torch", "onnx"], default="torch")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads (torch and onnxruntime)")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=True,
                        help="torch backend: torch.compile (CPU) or CUDA-graph capture (CUDA)")
    parser.add_argument("--calls", type=int, default=200, help="timed plan calls (at least 100)")
    parser.add_argument("--warmup", type=int, default=10, help="untimed plan calls after set-up")
    parser.add_argument("--config", default=None, help="config file for the planner section (default: defaults)")
    parser.add_argument("--json", action="store_true", help="print only the JSON object")


def plan_matmul_gflop(model, p) -> float:
    """Matmul work of one plan call (GFLOP), as `plan_step` does it: per iteration and sample, `horizon`
    steps of reward + dynamics (+ termination), then pi and the terminal value's Q heads; plus the prior
    rollouts and encoding the observation. Per-row costs are the model's own layers (row_flops), so each
    variant is counted as built."""
    from tdmpc_ros.model.world_model import row_flops

    f, heads = row_flops(model), min(2, model.cfg.num_q)
    step = f["reward"] + f["dynamics"] + f["termination"]
    per_iteration = p.num_samples * (p.horizon * step + f["pi"] + heads * f["qs"])
    prior = p.num_pi_trajs * (p.horizon * f["pi"] + (p.horizon - 1) * f["dynamics"])
    return (p.iterations * per_iteration + prior + f["encoder"]) / 1e9


def gemm_gflops(rows: int, width: int, reps: int = 50) -> float:
    """This CPU's float32 matmul rate (GFLOP/s) on the planner's shapes, at the current thread count."""
    import torch

    a, b = torch.randn(rows, width), torch.randn(width, width)
    for _ in range(5):
        a @ b
    start = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * rows * width * width * reps / (time.perf_counter() - start) / 1e9


def run(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from tdmpc_ros.config import load_config
    from tdmpc_ros.model.world_model import WorldModel
    from tdmpc_ros.planner import make_planner

    if args.calls < 100:
        raise InputError(f"--calls {args.calls} is below 100; percentiles need at least 100 calls")
    cfg = load_config(args.config, {"model": {"preset": args.preset}, "planner": {
        "backend": args.backend, "device": args.device, "threads": args.threads, "compile": args.compile}})
    torch.manual_seed(0)
    model = WorldModel(cfg.model)
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    planner = make_planner(model, cfg.planner, cfg.discount, seed=0)
    setup_s = time.perf_counter() - start
    obs = np.random.default_rng(0).normal(size=cfg.model.obs_dim).astype(np.float32)
    start = time.perf_counter()
    planner.plan(obs)
    first_call_ms = (time.perf_counter() - start) * 1e3
    for _ in range(args.warmup):
        planner.plan(obs)
    times = np.empty(args.calls)
    cpu_start = time.process_time()
    for i in range(args.calls):
        start = time.perf_counter()
        planner.plan(obs)
        times[i] = time.perf_counter() - start
    cpu_ms = (time.process_time() - cpu_start) / args.calls * 1e3
    times *= 1e3
    gflop = plan_matmul_gflop(model, cfg.planner)
    # On a CPU the matmuls alone bound the call from below: work / the measured matmul rate (same threads).
    gemm = gemm_gflops(cfg.planner.num_samples * cfg.planner.horizon, cfg.model.mlp_dim) \
        if planner.device == "cpu" else None
    policy_times = []
    for _ in range(50):
        start = time.perf_counter()
        planner.policy_action(obs)
        policy_times.append(time.perf_counter() - start)
    result = {
        "preset": args.preset, "backend": planner.backend, "device": planner.device, "threads": args.threads,
        "compiled": planner.compiled, "calls": args.calls,
        "p50_ms": float(np.percentile(times, 50)), "p99_ms": float(np.percentile(times, 99)),
        "mean_ms": float(times.mean()), "min_ms": float(times.min()),
        # CPU time of this process per call: with threads=1, close to the wall time on an idle core even
        # when other processes share the machine (wall-clock percentiles then include waiting for a core).
        "cpu_ms_per_call": round(cpu_ms, 3),
        "matmul_gflop_per_call": round(gflop, 3), "gemm_gflops": round(gemm, 1) if gemm else None,
        "matmul_floor_ms": round(gflop / gemm * 1e3, 2) if gemm else None,
        "setup_s": round(setup_s, 3), "first_call_ms": round(first_call_ms, 3),
        "policy_action_p50_ms": float(np.percentile(policy_times, 50) * 1e3),
        "load_avg_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)], "cpu_count": os.cpu_count(),
        "planner": dataclasses.asdict(cfg.planner), "model": dataclasses.asdict(cfg.model),
        "discount": cfg.discount, "torch": torch.__version__,
    }
    if not args.json:
        print(f"plan {args.preset} {planner.backend}/{planner.device} threads={args.threads}: "
              f"p50 {result['p50_ms']:.2f} ms, p99 {result['p99_ms']:.2f} ms (set-up {setup_s:.1f} s)")
    print(json.dumps(result))
    return 0
