"""`tdmpc-ros bench learn`: the learning benchmark. run_online per seed (sequentially): env steps to 50, 80
and 90 % success, wall time, the curve as JSON, a CSV (one row per episode per seed) and a PNG (success rate
and return against env steps, one line per seed). `--task` and `--reward` pick the task and its reward; the
demo ablation: `--demo-ratio 0` (demos for pretraining only) and `--demos 0` (none). In-process runs only
(`--arms` runs the fleet's config as it is).
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import tempfile
from pathlib import Path

from tdmpc_ros.cli.arm_args import add_arm_arguments, arm_config
from tdmpc_ros.errors import InputError

TARGET_RATE = 0.9
DEFAULT_PNG = "docs/learning_curve.png"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seeds", type=int, default=3, help="N seeds, run one after another")
    parser.add_argument("--first-seed", type=int, default=0,
                        help="the seeds are K..K+N-1 (to split seeds over processes; --combine joins them)")
    parser.add_argument("--env-steps", type=int, default=10_000, help="online env steps per seed")
    parser.add_argument("--preset", default=None, help="model size preset (default: the config's)")
    parser.add_argument("--demos", type=int, default=10, help="scripted-expert demo episodes per seed (0: none)")
    parser.add_argument("--reward", choices=["dense", "sparse"], default=None, help="task.reward (default: config's)")
    parser.add_argument("--demo-ratio", type=float, default=None,
                        help="agent.demo_ratio: demo share of each online batch (0: demos for pretraining only)")
    parser.add_argument("--eval-every", type=int, default=0,
                        help="also evaluate the eval-mode planner every N env steps (0: rolling rate only)")
    parser.add_argument("--eval-episodes", type=int, default=5, help="episodes per evaluation")
    parser.add_argument("--config", default=None, help="parameter file (default: config/arm.yaml)")
    add_arm_arguments(parser)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=False,
                        help="torch.compile the planner: minutes of set-up per seed on a busy CPU for ~15%% per call")
    parser.add_argument("--run-dir", default=None, help="folder for each seed's checkpoints (default: a temp dir)")
    parser.add_argument("--png", default=None, help=f"learning-curve plot to write (default: {DEFAULT_PNG})")
    parser.add_argument("--csv", default=None, help="per-episode CSV (default: the PNG's path with .csv)")
    parser.add_argument("--json", action="store_true", help="print only the JSON object (progress on stderr)")
    # A fleet over ROS (#16): tdmpc_ros/cli/bench_fleet.py.
    parser.add_argument("--arms", type=int, default=0,
                        help="N >= 1: lockstep over ROS, N sim arms feeding one learner (the fleet launch), steps "
                             "summed over the arms; 0: in-process, no ROS")
    parser.add_argument("--max-wall-s", type=float, default=0.0,
                        help="with --arms: stop a seed after this long (0: no limit)")
    parser.add_argument("--compare", nargs="+", default=None, metavar="JSON",
                        help="run nothing: plot earlier runs' JSON objects together (--png; e.g. an ablation), the "
                             "first labelled by the settings in which the runs differ, each other by where it "
                             "departs from the first")
    parser.add_argument("--combine", nargs="+", default=None, metavar="JSON",
                        help="run nothing: join runs of one protocol (e.g. seeds split over processes) into one "
                             "report (stdout) and plot (--png)")


def curve_points(result, every: int = 500) -> list[list[float]]:
    """[env_steps, rolling success rate] at the first episode past each multiple of `every` steps, and the last."""
    points, next_mark = [], every
    for record in result.episodes:
        if record.env_steps >= next_mark or record is result.episodes[-1]:
            points.append([record.env_steps, round(record.success_rate, 3)])
            next_mark = (record.env_steps // every + 1) * every
    return points


def write_csv(path: Path, results) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["seed", "episode", "env_steps", "success", "return", "length", "success_rate", "updates",
                         "wall_s"])
        for result in results:
            for i, r in enumerate(result.episodes):
                writer.writerow([result.seed, i + 1, r.env_steps, int(r.success), round(r.episode_return, 4),
                                 r.length, round(r.success_rate, 4), r.updates, round(r.wall_s, 2)])


def plot(path: Path, results, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tdmpc_ros.learning.metrics import save_figure

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 5.4), sharex=True)
    for result in results:
        steps = [r.env_steps for r in result.episodes]
        top.plot(steps, [r.success_rate for r in result.episodes], lw=1.3, label=f"seed {result.seed}")
        bottom.plot(steps, [r.episode_return for r in result.episodes], lw=1.0, alpha=0.8)
        if result.evals:
            top.plot([e.env_steps for e in result.evals], [e.success_rate for e in result.evals], "o", ms=3,
                     color=top.lines[-1].get_color())
    top.axhline(TARGET_RATE, color="gray", ls="--", lw=0.8)
    top.set_ylabel("success rate (last 20 ep.)")
    top.set_ylim(-0.02, 1.02)
    top.legend(loc="lower right")
    bottom.set_ylabel("episode return")
    bottom.set_xlabel("online env steps")
    for ax in (top, bottom):
        ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=10)
    save_figure(fig, path)


# What a comparison's labels are made of: the settings in which its runs differ (name -> read from a run's JSON),
# then any other config field that differs.
COMPARED = {
    "demos": lambda r: f"{r['demos']} demos", "demo_ratio": lambda r: f"demo_ratio {r['demo_ratio']:g}",
    "reward": lambda r: f"{r['reward']} reward", "env_steps": lambda r: f"{r['env_steps']} steps",
    "robot": lambda r: os.path.basename(r["config"]["task"]["robot"]),
    "action_space": lambda r: f"{r['config']['task']['action_space']} actions",
}
NAMED_FIELDS = {"task.reward", "task.robot", "task.joint_names", "task.ee_link", "task.action_space",
                "agent.demo_ratio"}
"""Config fields a COMPARED setting names already (or that follow from one: an arm's joints and end effector)."""


def config_fields(report: dict) -> dict[str, object]:
    """A run's config fields outside NAMED_FIELDS as 'section.field' -> value. A field the run's JSON lacks
    did not exist then: it counts as its default now (fields are added with the default that keeps the old
    behaviour)."""
    from tdmpc_ros.config import Config, config_to_dict

    defaults = config_to_dict(Config())
    return {f"{section}.{name}": report.get("config", {}).get(section, {}).get(name, default)
            for section in report.get("config", {}) for name, default in defaults.get(section, {}).items()
            if f"{section}.{name}" not in NAMED_FIELDS}


def run_settings(path: str, report: dict) -> dict[str, str]:
    """COMPARED's settings of one run's JSON; an InputError naming the file if it is not one."""
    try:
        if "task" in report and "seeds" in report:
            return {name: read(report) for name, read in COMPARED.items()}
    except (KeyError, TypeError):
        pass
    raise InputError(f"{path} is not a bench learn JSON of this version (it lacks the task, the seeds or one of "
                     f"{list(COMPARED)})")


def compare(args: argparse.Namespace) -> int:
    """One plot of several runs' curves, labelled by what differs between them; their figures as JSON."""
    from tdmpc_ros.learning.metrics import plot_success_curves

    reports = [json.loads(Path(path).read_text()) for path in args.compare]
    settings = [run_settings(path, report) for path, report in zip(args.compare, reports)]
    if len({r["task"] for r in reports}) != 1:
        raise InputError(f"--compare: runs of one task only, got {sorted({r['task'] for r in reports})}")
    differ = [name for name in COMPARED if len({s[name] for s in settings}) > 1]
    fields = [config_fields(report) for report in reports]
    field_differ = sorted(name for name in set().union(*fields)
                          if len({repr(f.get(name)) for f in fields}) > 1)
    texts = [[s[name] for name in differ] + [f"{name} {f.get(name)}" for name in field_differ]
             for s, f in zip(settings, fields)]
    # the first run by all of them, each other by where it departs from the first (an ablation's baseline first)
    labels = [", ".join(text if i == 0 else [t for t, first in zip(text, texts[0]) if t != first]) or path
              for i, (text, path) in enumerate(zip(texts, args.compare))]
    same = ", ".join(text for name, text in settings[0].items() if name not in differ)
    png = Path(args.png or DEFAULT_PNG)
    plot_success_curves(png, [(label, r["seeds"]) for label, r in zip(labels, reports)],
                        f"{reports[0]['task']}, {same}", TARGET_RATE)
    print(json.dumps({"png": str(png), "runs": [
        {"label": label, "json": path, "seeds": [
            {k: s[k] for k in ("seed", "env_steps_to_50", "env_steps_to_80", "env_steps_to_90", "final_success_rate")}
            for s in r["seeds"]]} for label, path, r in zip(labels, args.compare, reports)]}))
    return 0


def summary(seeds: list[dict]) -> dict:
    """The report's figures over all its seeds."""
    reached = [s["env_steps_to_90"] for s in seeds]
    return {"all_reached_90": all(r is not None for r in reached),
            "max_env_steps_to_90": max(reached) if all(r is not None for r in reached) else None,
            "max_wall_s": max(s["wall_s"] for s in seeds)}


def combine(args: argparse.Namespace) -> int:
    """One report and plot from runs of one protocol (the same task, steps, demos and config; e.g. seeds split
    over processes with --first-seed): their seeds in order, the figures over all; a seed given twice is refused."""
    from tdmpc_ros.learning.metrics import plot_success_curves

    reports = [json.loads(Path(path).read_text()) for path in args.combine]
    protocols = [{"task": report["task"], **run_settings(path, report), **config_fields(report)}
                 for path, report in zip(args.combine, reports)]
    for path, protocol in zip(args.combine, protocols):
        if differ := [name for name, value in protocol.items() if value != protocols[0].get(name)]:
            raise InputError(f"--combine: {path} differs from {args.combine[0]} in {differ}; combine runs of one "
                             "protocol only")
    seeds = sorted((s for report in reports for s in report["seeds"]), key=lambda s: s["seed"])
    numbers = [s["seed"] for s in seeds]
    if twice := sorted({n for n in numbers if numbers.count(n) > 1}):
        raise InputError(f"--combine: seed(s) {twice} given twice")
    png = Path(args.png or DEFAULT_PNG)
    first = reports[0]
    plot_success_curves(png, [(f"{len(seeds)} seeds", seeds)],
                        f"{first['task']} ({first['reward']} reward), {first['demos']} demos", TARGET_RATE)
    print(json.dumps(dict(first, seeds=seeds, **summary(seeds), png=str(png), csv=[r["csv"] for r in reports],
                          combined_from=list(args.combine), load_avg_1m=[r["load_avg_1m"] for r in reports])))
    return 0


def run(args: argparse.Namespace) -> int:
    import sys

    import torch

    from tdmpc_ros.config import config_to_dict
    from tdmpc_ros.learning.online_loop import SUCCESS_METRIC, run_online

    if args.compare:
        return compare(args)
    if args.combine:
        return combine(args)
    if args.seeds < 1 or args.env_steps < 1 or args.demos < 0 or args.first_seed < 0:
        raise InputError("--seeds and --env-steps must be at least 1, --demos and --first-seed at least 0")
    if args.arms and (args.robot or args.action_space or args.task or args.reward or args.demo_ratio is not None
                      or args.demos == 0):
        raise InputError("--robot, --action-space, --task, --reward, --demo-ratio and --demos 0 are for in-process "
                         "runs; with --arms use --config")
    if args.arms and (args.png or args.csv or args.eval_every or args.threads != 1):
        raise InputError("--png, --csv, --eval-every and --threads are for in-process runs; with --arms the nodes "
                         "take their threads from --config and the curve is in the JSON")
    if args.arms:
        from tdmpc_ros.cli.bench_fleet import run_fleet

        if args.arms < 0 or args.arms > 64:
            raise InputError(f"--arms {args.arms}: between 1 and 64 (0: in-process)")
        return run_fleet(args)
    torch.set_num_threads(args.threads)
    overrides = {"planner": {"compile": args.compile}, **({"model": {"preset": args.preset}} if args.preset else {})}
    if args.reward:
        overrides["task"] = {"reward": args.reward}
    if args.demo_ratio is not None:
        overrides["agent"] = {"demo_ratio": args.demo_ratio}
    cfg = arm_config(args, overrides)
    out = sys.stderr if args.json else sys.stdout

    def say(text: str) -> None:
        print(text, file=out, flush=True)

    png = Path(args.png or DEFAULT_PNG)
    csv_path = Path(args.csv) if args.csv else png.with_suffix(".csv")
    run_root = Path(args.run_dir) if args.run_dir else Path(tempfile.mkdtemp(prefix="bench_learn_"))
    results, seeds = [], []
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        def progress(r, seed=seed):
            say(f"seed {seed}: {r.env_steps:6d}/{args.env_steps} steps  success {int(r.success)}  "
                f"rate {r.success_rate:.2f}  return {r.episode_return:7.2f}  updates {r.updates}  {r.wall_s:6.0f} s")

        result = run_online(cfg, args.env_steps, seed, run_root / f"seed{seed}", args.demos, args.eval_every,
                            args.eval_episodes, log=say, on_episode=progress)
        results.append(result)
        last = result.episodes[-1]
        seeds.append({
            "seed": seed, "env_steps_to_50": result.steps_to(0.5), "env_steps_to_80": result.steps_to(0.8),
            "env_steps_to_90": result.steps_to(TARGET_RATE), "final_success_rate": last.success_rate,
            "episodes": len(result.episodes), "wall_s": round(result.wall_s, 1), "time_s": result.time_s,
            "updates": result.updates, "demo_success_rate": result.demo_success_rate,
            "checkpoint": result.checkpoint, "curve": curve_points(result),
            "evals": [[e.env_steps, e.success_rate, round(e.mean_return, 3)] for e in result.evals],
        })
        say(f"seed {seed}: done in {result.wall_s:.0f} s; env steps to {TARGET_RATE:.0%}: "
            f"{seeds[-1]['env_steps_to_90']}")
        # Written after every seed, so a long benchmark leaves its finished seeds behind if stopped.
        write_csv(csv_path, results)
        plot(png, results, f"{cfg.task.name} ({cfg.task.reward} reward), {os.path.basename(cfg.task.robot)}, "
                           f"{cfg.task.action_space} actions, {cfg.model.preset} preset, {args.demos} demos "
                           f"(demo_ratio {cfg.agent.demo_ratio:g}), {len(results)} seed(s)")
    print(json.dumps({
        "success_metric": SUCCESS_METRIC, "target_rate": TARGET_RATE, "env_steps": args.env_steps,
        "task": cfg.task.name, "reward": cfg.task.reward, "demo_ratio": cfg.agent.demo_ratio,
        "demos": args.demos, "preset": cfg.model.preset, "seeds": seeds, **summary(seeds),
        "png": str(png), "csv": str(csv_path),
        "cpu_count": os.cpu_count(), "load_avg_1m": round(os.getloadavg()[0], 2), "torch_threads": args.threads,
        "config": {k: config_to_dict(cfg)[k] for k in ("planner", "agent", "task", "learner")},
    }))
    return 0
