"""`tdmpc-ros demos`: the task's scripted-expert demonstrations on the PyBullet arm, one rosbag2 per episode."""
from __future__ import annotations

import argparse
from pathlib import Path

from tdmpc_ros.cli.arm_args import add_arm_arguments, arm_overrides
from tdmpc_ros.errors import InputError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--episodes", type=int, default=50, help="episodes to record")
    parser.add_argument("--out", default="demos", help="directory for the bags (one per episode)")
    parser.add_argument("--storage", choices=["mcap", "sqlite3"], default="mcap", help="rosbag2 storage format")
    parser.add_argument("--noise", type=float, default=0.1, help="Gaussian noise std on the expert's actions")
    parser.add_argument("--seed", type=int, default=0, help="seed for goals, start poses and noise")
    parser.add_argument("--task", default=None,
                        help="task.name (reach, push or package.module:Class); without --config a bundled "
                             "config/<task>.yaml is used where there is one")
    parser.add_argument("--config", default=None, help="parameter file (default: config/arm.yaml)")
    add_arm_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON object (success_rate, episodes, ...)")


def run(args: argparse.Namespace) -> int:
    import json

    import numpy as np
    from tqdm import tqdm

    from tdmpc_ros.data.bags import write_transition_bag
    from tdmpc_ros.sim.expert import expert_episodes
    from tdmpc_ros.sim.env import ArmEnv
    from tdmpc_ros.tasks import task_config

    if args.episodes < 1:
        raise InputError(f"--episodes must be at least 1, got {args.episodes}")
    cfg = task_config(getattr(args, "task", None), args.config, arm_overrides(args))
    out = Path(args.out)
    paths = [out / f"demo_s{args.seed}_{i:04d}" for i in range(args.episodes)]
    existing = [str(p) for p in paths if p.exists()]
    if existing:
        raise InputError(f"{existing[0]} already exists ({len(existing)} of the bags to write); "
                         f"choose another --out or --seed, or remove them")
    out.mkdir(parents=True, exist_ok=True)
    env = ArmEnv(cfg)
    successes, returns = 0, []
    progress = tqdm(paths, desc="demos", unit="episode", disable=args.json)
    for i, (path, episode) in enumerate(zip(progress, expert_episodes(env, len(paths), args.noise, args.seed))):
        episode.source = str(path)
        write_transition_bag(path, [episode], storage=args.storage)
        successes += episode.success
        returns.append(episode.episode_return)
        progress.set_postfix(success=f"{successes / (i + 1):.2f}")
    env.close()
    if args.json:
        print(json.dumps({"success_rate": successes / args.episodes, "episodes": args.episodes,
                          "successes": successes, "mean_return": round(float(np.mean(returns)), 4),
                          "task": cfg.task.name, "reward": cfg.task.reward,
                          "storage": args.storage, "out": str(out)}))
        return 0
    print(f"expert success rate {successes / args.episodes:.3f} ({successes}/{args.episodes}), "
          f"mean return {np.mean(returns):.3f}; {args.episodes} {args.storage} bags in {out}")
    return 0
