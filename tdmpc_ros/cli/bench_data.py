"""`tdmpc-ros bench data`: bag write/read throughput (mcap, sqlite3) and replay sampling cost vs buffer size."""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--transitions", type=int, default=20000, help="transitions per bag written and read")
    parser.add_argument("--episode-steps", type=int, default=100, help="steps per synthetic episode")
    parser.add_argument("--buffers", type=int, nargs="+", default=[10_000, 1_000_000],
                        help="online replay sizes (transitions) to time sampling at")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--samples", type=int, default=200, help="timed sample() calls per buffer size")


def synthetic_episodes(cfg, count: int, steps: int, seed: int = 0):
    import numpy as np

    from tdmpc_ros.data.episode import Episode

    rng = np.random.default_rng(seed)
    return [Episode(i, rng.normal(size=(steps + 1, cfg.model.obs_dim)),
                    rng.uniform(-1, 1, (steps, cfg.model.action_dim)), -rng.random(steps), truncated=True)
            for i in range(count)]


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from tdmpc_ros.config import load_config
    from tdmpc_ros.data.bags import read_episodes, write_transition_bag
    from tdmpc_ros.learning.replay import Replay

    cfg = load_config()
    steps = args.episode_steps
    episodes = synthetic_episodes(cfg, max(1, args.transitions // steps), steps)
    total = sum(len(e) for e in episodes)
    result: dict = {"bench": "data", "transitions": total, "obs_dim": cfg.model.obs_dim}
    with tempfile.TemporaryDirectory() as tmp:
        for storage in ("mcap", "sqlite3"):
            path = Path(tmp) / storage
            start = time.perf_counter()
            write_transition_bag(path, episodes, storage=storage)
            written = time.perf_counter() - start
            start = time.perf_counter()
            report = read_episodes(path, cfg)
            read = time.perf_counter() - start
            assert sum(len(e) for e in report.episodes) == total, report.summary()
            size = sum(f.stat().st_size for f in path.iterdir())
            result[storage] = {"write_transitions_per_s": round(total / written), "read_transitions_per_s":
                               round(total / read), "bytes_per_transition": round(size / total)}
    sampling = {}
    rng = np.random.default_rng(0)
    for size in args.buffers:
        cfg = load_config(overrides={"agent": {"buffer_capacity": size}})
        replay = Replay(cfg)
        block = synthetic_episodes(cfg, 64, steps, seed=1)
        start = time.perf_counter()
        for i in range(max(1, size // steps)):
            replay.add_online(block[i % len(block)])
        fill = time.perf_counter() - start
        replay.sample(args.batch_size, cfg.planner.horizon, rng)
        start = time.perf_counter()
        for _ in range(args.samples):
            replay.sample(args.batch_size, cfg.planner.horizon, rng)
        per_sample = (time.perf_counter() - start) / args.samples
        sampling[str(size)] = {"sample_ms": round(1000 * per_sample, 3),
                               "add_transitions_per_s": round(replay.num_online_steps() / fill)}
    result["replay"] = {"batch_size": args.batch_size, "horizon": cfg.planner.horizon, "by_buffer_size": sampling}
    print(json.dumps(result))
    return 0
