"""`tdmpc-ros bench variants`: the world-model variants side by side (docs/variants.md). For each variant, `bench
learn`'s own run (demos, pretraining, online MPPI) on its config: env steps to 90 % rolling success (else the
rate at the end), wall time, updates/s; then the planner's p50 plan call on the trained checkpoint, and the
trainable parameters. One plot of the rolling success curves, one line per variant and seed.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from tdmpc_ros.errors import InputError
from tdmpc_ros.learning.metrics import plot_success_curves

# name -> config overrides; "tdmpc2" is the package's default model.
VARIANTS: dict[str, dict[str, dict]] = {
    "tdmpc2": {},
    "fsq": {"model": {"latent": "fsq"}},
    "decoder": {"agent": {"decoder_coef": 1.0}},
    "mbpo": {"agent": {"model_rollouts": 128, "model_rollout_horizon": 2, "model_rollout_ratio": 0.5}},
    "tdmpc1": {"model": {"preset": "tdmpc1-small"}},
}
PLAN_CALLS = 50


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, from {list(VARIANTS)}")
    parser.add_argument("--task", default="reach", help="task.name (reach; push where the task exists)")
    parser.add_argument("--seeds", type=int, default=3, help="N seeds per variant")
    parser.add_argument("--first-seed", type=int, default=0,
                        help="the seeds are K..K+N-1 (to split seeds over processes; --combine joins them)")
    parser.add_argument("--env-steps", type=int, default=10_000, help="online env steps per seed")
    parser.add_argument("--demos", type=int, default=10, help="scripted-expert demo episodes per seed")
    parser.add_argument("--config", default=None, help="base parameter file (default: the task's bundled "
                                                        "config/<task>.yaml, else config/arm.yaml)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--compile-train", action=argparse.BooleanOptionalAction, default=False,
                        help="agent.compile (off by default: each variant would compile its own training graphs)")
    parser.add_argument("--out", default="docs/variants.json", help="the JSON object, also written here")
    parser.add_argument("--png", default="docs/variants.png", help="the curves of all variants")
    parser.add_argument("--json", action="store_true", help="print only the JSON object (progress on stderr)")
    parser.add_argument("--combine", nargs="+", default=None, metavar="JSON",
                        help="run nothing: combine the JSON files of earlier runs (e.g. one variant per process) "
                             "into --out and --png")


def base_config(task: str, config: str | None) -> Path:
    """The parameter file the variants' overrides go on: `config`, else the task's bundled config/<task>.yaml
    (push's cube and table), else config/arm.yaml."""
    from tdmpc_ros.config import default_config_path
    from tdmpc_ros.tasks.base import task_config_path

    return Path(task_config_path(task, config) or default_config_path())


def variant_config_file(base: Path, overrides: dict, compile_train: bool, folder: Path) -> Path:
    """The base parameter file with the variant's overrides (and agent.compile) as a parameter file of its own."""
    import yaml

    from tdmpc_ros.config import load_config, merge, read_yaml

    data = merge(read_yaml(base), overrides)
    data = merge(data, {"agent": {"compile": compile_train}})
    load_config(None, data)  # refuse a bad variant now, naming the field
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump({"/**": {"ros__parameters": data}}, sort_keys=False))
    return path


def learn(args: argparse.Namespace, config: Path, folder: Path) -> dict:
    """`bench learn`'s run on `config`, its JSON object returned (its progress lines go to stderr)."""
    from tdmpc_ros.cli import bench_learn

    parser = argparse.ArgumentParser()
    bench_learn.add_arguments(parser)
    argv = ["--seeds", str(args.seeds), "--first-seed", str(args.first_seed), "--env-steps", str(args.env_steps),
            "--demos", str(args.demos), "--config", str(config), "--threads", str(args.threads),
            "--run-dir", str(folder / "runs"), "--png", str(folder / "learning_curve.png"), "--json"]
    if args.task != "reach":
        argv += ["--task", args.task]
    captured = io.StringIO()
    with contextlib.redirect_stdout(captured):
        bench_learn.run(parser.parse_args(argv))
    return json.loads(captured.getvalue().strip().splitlines()[-1])


def measure_checkpoint(path: str, threads: int) -> dict:
    """p50 of PLAN_CALLS plan calls (eager torch planner, the checkpoint's planner settings) and parameters."""
    import numpy as np

    from tdmpc_ros.learning.checkpoint import agent_from_checkpoint, load_checkpoint
    from tdmpc_ros.model import parameter_counts
    from tdmpc_ros.model.layers import count_parameters
    from tdmpc_ros.planner import make_planner

    ckpt = load_checkpoint(path)
    agent = agent_from_checkpoint(ckpt)
    cfg = ckpt.config
    cfg.planner.compile, cfg.planner.threads = False, threads
    planner = make_planner(agent.model, cfg.planner, cfg.discount, seed=0)
    rng = np.random.default_rng(0)
    times = []
    for _ in range(PLAN_CALLS + 5):
        obs = rng.normal(size=cfg.model.obs_dim).astype(np.float32)
        start = time.perf_counter()
        planner.plan(obs)
        times.append(time.perf_counter() - start)
    return {"plan_p50_ms": round(1e3 * statistics.median(times[5:]), 2),
            "parameters": parameter_counts(agent.model)["total"] + count_parameters(agent.decoder)}


def combine(args: argparse.Namespace) -> int:
    """One report and plot from several runs' JSON files (the same task, steps and demos): the runs of one variant
    (e.g. its seeds split over processes) become one row with their seeds in order; a seed given twice is refused.
    Plan p50 and parameters are the first run's of the variant (p50 depends on the load it was measured under)."""
    reports = [json.loads(Path(path).read_text()) for path in args.combine]
    keys = ("task", "env_steps", "demos")
    if any(tuple(r[k] for k in keys) != tuple(reports[0][k] for k in keys) for r in reports):
        raise InputError(f"--combine: the runs differ in {keys}; combine runs of one protocol only")
    rows: dict[str, dict] = {}
    for path, report in zip(args.combine, reports):
        for row in report["variants"]:
            merged = rows.setdefault(row["variant"], dict(row, seeds=[]))
            taken = {s["seed"] for s in merged["seeds"]}
            twice = sorted(taken & {s["seed"] for s in row["seeds"]})
            if twice:
                raise InputError(f"--combine: {path} repeats seed(s) {twice} of variant {row['variant']}")
            merged["seeds"] = sorted(merged["seeds"] + row["seeds"], key=lambda s: s["seed"])
    counts = {name: len(row["seeds"]) for name, row in rows.items()}
    first = reports[0]
    report = dict(first, variants=list(rows.values()), seeds=max(counts.values()), seeds_per_variant=counts,
                  png=args.png, combined_from=list(args.combine), load_avg_1m=[r["load_avg_1m"] for r in reports])
    plot_success_curves(Path(args.png), [(row["variant"], row["seeds"]) for row in report["variants"]],
                        f"{first['task']}, {report['seeds']} seed(s) x {first['env_steps']} env steps, "
                        f"{first['demos']} demos")
    Path(args.out).write_text(json.dumps(report, indent=1))
    print(json.dumps(report))
    return 0


def run(args: argparse.Namespace) -> int:
    if args.combine:
        return combine(args)
    names = [n.strip() for n in args.variants.split(",") if n.strip()]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown or not names:
        raise InputError(f"--variants: unknown {unknown}; choose from {list(VARIANTS)}")
    if args.seeds < 1 or args.env_steps < 1 or args.first_seed < 0:
        raise InputError("--seeds and --env-steps must be at least 1, --first-seed at least 0")
    out = sys.stderr if args.json else sys.stdout
    base = base_config(args.task, args.config)
    rows = []
    for name in names:
        print(f"variant {name}: {args.seeds} seed(s) x {args.env_steps} env steps", file=out, flush=True)
        with tempfile.TemporaryDirectory(prefix=f"bench_variants_{name}_") as tmp:
            config = variant_config_file(base, VARIANTS[name], args.compile_train, Path(tmp))
            result = learn(args, config, Path(tmp))
            measured = measure_checkpoint(result["seeds"][0]["checkpoint"], args.threads)
        seeds = [{"seed": s["seed"], "env_steps_to_50": s.get("env_steps_to_50"),
                  "env_steps_to_80": s.get("env_steps_to_80"), "env_steps_to_90": s["env_steps_to_90"],
                  "final_success_rate": s["final_success_rate"], "wall_s": s["wall_s"], "updates": s["updates"],
                  "updates_per_s": round(s["updates"] / max(s["time_s"]["update"] + s["time_s"]["pretrain"], 1e-9),
                                         2),
                  "curve": s["curve"]} for s in result["seeds"]]
        rows.append({"variant": name, "overrides": VARIANTS[name], **measured, "seeds": seeds})
        print(f"variant {name}: to 90 % {[s['env_steps_to_90'] for s in seeds]}, final "
              f"{[s['final_success_rate'] for s in seeds]}, p50 {measured['plan_p50_ms']} ms", file=out, flush=True)
        plot_success_curves(Path(args.png), [(row["variant"], row["seeds"]) for row in rows],
                            f"{args.task}, {args.seeds} seed(s) x {args.env_steps} env steps, {args.demos} demos")
        report = {"task": args.task, "env_steps": args.env_steps, "seeds": args.seeds, "demos": args.demos,
                  "agent_compile": args.compile_train, "cpu_count": os.cpu_count(),
                  "load_avg_1m": round(os.getloadavg()[0], 2), "torch_threads": args.threads, "png": args.png,
                  "variants": rows}
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=1))  # after every variant
    print(json.dumps(report))
    return 0
