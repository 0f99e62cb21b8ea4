"""`tdmpc-ros demos`: the task's scripted-expert demonstrations on the PyBullet arm, one rosbag2 per episode."""
from __future__ import annotations

import argparse
from pathlib import Path

from tdmpc_ros.cli.arm_args import add_arm_arguments, arm_config
from tdmpc_ros.errors import InputError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--episodes", type=int, default=50, help="episodes to record")
    parser.add_argument("--out", default="demos", help="directory for the bags (one per episode)")
    parser.add_argument("--storage", choices=["mcap", "sqlite3"], default="mcap", help="rosbag2 storage format")
    parser.add_argument("--noise", type=float, default=0.1, help="Gaussian noise std on the expert's actions")
    parser.add_argument("--seed", type=int, default=0, help="seed for goals, start poses and noise")
    parser.add_argument("--config", default=None, help="parameter file (default: config/arm.yaml)")
    add_arm_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON object (success_rate, episodes, ...)")


def record_demos(cfg, out: Path, episodes: int, noise: float = 0.1, seed: int = 0, storage: str = "mcap",
                 progress: bool = True) -> dict:
    """`episodes` scripted-expert episodes of cfg's task on the sim arm, one bag each in `out`; the summary
    (success_rate, episodes, successes, mean_return, ...). Existing bags of the same names are an error."""
    import numpy as np
    from tqdm import tqdm

    from tdmpc_ros.data.bags import write_transition_bag
    from tdmpc_ros.sim.expert import expert_episodes
    from tdmpc_ros.sim.env import ArmEnv

    if episodes < 1:
        raise InputError(f"--episodes must be at least 1, got {episodes}")
    out = Path(out)
    paths = [out / f"demo_s{seed}_{i:04d}" for i in range(episodes)]
    existing = [str(p) for p in paths if p.exists()]
    if existing:
        raise InputError(f"{existing[0]} already exists ({len(existing)} of the bags to write); "
                         f"choose another --out or --seed, or remove them")
    out.mkdir(parents=True, exist_ok=True)
    env = ArmEnv(cfg)
    successes, returns = 0, []
    bar = tqdm(paths, desc="demos", unit="episode", disable=not progress)
    for i, (path, episode) in enumerate(zip(bar, expert_episodes(env, len(paths), noise, seed))):
        episode.source = str(path)
        write_transition_bag(path, [episode], storage=storage)
        successes += episode.success
        returns.append(episode.episode_return)
        bar.set_postfix(success=f"{successes / (i + 1):.2f}")
    env.close()
    return {"success_rate": successes / episodes, "episodes": episodes, "successes": successes,
            "mean_return": round(float(np.mean(returns)), 4), "task": cfg.task.name, "reward": cfg.task.reward,
            "storage": storage, "out": str(out)}


def run(args: argparse.Namespace) -> int:
    import json

    cfg = arm_config(args)
    summary = record_demos(cfg, Path(args.out), args.episodes, args.noise, args.seed, args.storage,
                           progress=not args.json)
    if args.json:
        print(json.dumps(summary))
        return 0
    print(f"expert success rate {summary['success_rate']:.3f} ({summary['successes']}/{args.episodes}), "
          f"mean return {summary['mean_return']:.3f}; {args.episodes} {args.storage} bags in {args.out}")
    return 0
