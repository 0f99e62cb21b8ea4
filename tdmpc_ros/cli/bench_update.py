"""`tdmpc-ros bench update`: full TD-MPC2 agent updates per second on synthetic batches (after warm-up)."""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", default="small", help="model size preset")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--horizon", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--updates", type=int, default=50, help="timed updates")
    parser.add_argument("--warmup", type=int, default=5, help="untimed updates first")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def run(args: argparse.Namespace) -> int:
    import torch

    from tdmpc_ros.config import load_config
    from tdmpc_ros.learning.agent import Agent

    torch.set_num_threads(args.threads)
    cfg = load_config(overrides={"model": {"preset": args.preset}, "planner": {"horizon": args.horizon},
                                 "agent": {"batch_size": args.batch_size}})
    agent = Agent(cfg, device=args.device)
    gen = torch.Generator().manual_seed(0)
    h, b, m = args.horizon, args.batch_size, cfg.model

    def batch() -> dict[str, torch.Tensor]:
        return {"obs": torch.randn(h + 1, b, m.obs_dim, generator=gen),
                "action": torch.rand(h, b, m.action_dim, generator=gen) * 2 - 1,
                "reward": -torch.rand(h, b, 1, generator=gen),
                "terminated": (torch.rand(h, b, 1, generator=gen) < 0.02).float()}

    batches = [batch() for _ in range(4)]
    start = time.perf_counter()
    for i in range(args.warmup):
        agent.update(batches[i % 4])
    warmup_s = time.perf_counter() - start
    sync = torch.cuda.synchronize if agent.device.type == "cuda" else (lambda: None)
    sync()
    start, cpu_start = time.perf_counter(), time.process_time()
    for i in range(args.updates):
        losses = agent.update(batches[i % 4])
    sync()
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result = {
        "bench": "update", "updates_per_s": round(args.updates / elapsed, 2),
        "ms_per_update": round(1000 * elapsed / args.updates, 2),
        # CPU time of all this process's threads: with other work on the machine, wall time overstates the cost
        "cpu_ms_per_update": round(1000 * cpu / args.updates, 2), "peak_rss_mb": round(peak_kib / 1024, 1),
        "preset": args.preset, "batch_size": b, "horizon": h, "threads": args.threads, "device": str(agent.device),
        "warmup_s": round(warmup_s, 1), "updates": args.updates, "warmup": args.warmup,
        "load_avg_1m": round(os.getloadavg()[0], 2), "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", ""),
        "torch": torch.__version__,
        "last_total_loss": round(losses["total_loss"], 4),
        "model": {k: getattr(m, k) for k in ("obs_dim", "action_dim", "latent_dim", "mlp_dim", "enc_dim", "num_q")},
    }
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>16}: {value}", file=sys.stdout)
    return 0
