"""`tdmpc-ros bench learn --arms N`: learning over ROS with N lockstep sim arms feeding one learner (#16).

The fleet launch (`arms:=N lockstep:=true`, the same node set as arm.launch.py) on a ROS domain of its own, one
seed after another; the learner's /diagnostics (once a second) give the env steps summed over the arms, each
arm's share and the rolling success rate of the last 20 episodes of any arm, the metric `bench learn` uses.
Arm 0 of a fleet is the lone arm of `--arms 1` (sim.seed 0, controller.seed 1) and the learner's agent.seed is the
seed, so `--arms 2` against `--arms 1` at one seed compares the same first arm with and without a second.
Steps and time are read at the first diagnostics past the target: up to a second's steps late.
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

from tdmpc_ros.cli.bench_learn import TARGET_RATE
from tdmpc_ros.learning.online_loop import DEMO_NOISE, ROLLING_WINDOW, SUCCESS_METRIC


def run_seed(args, config: str, seed: int, root: Path, say) -> dict:
    from tdmpc_ros.cli.demos import record_demos
    from tdmpc_ros.cli.harness import LaunchedGraph
    from tdmpc_ros.config import load_config

    demos = record_demos(load_config(config), root / "demos", args.demos, DEMO_NOISE, seed, progress=False)
    arguments = {"arms": str(args.arms), "lockstep": "true", "config": config, "demos": str(root / "demos"),
                 "run_dir": str(root / "run")}
    overrides = {"agent.seed": seed, "planner.compile": args.compile,
                 **({"model.preset": args.preset} if args.preset else {})}
    arms = [f"arm{i}" for i in range(args.arms)]
    samples, reached = [], None
    with LaunchedGraph(arguments, overrides=overrides, log_path=root / "launch.log",
                       observer_name="bench_fleet") as graph:
        learner = graph.observer.learner_values()
        graph.start()
        started = time.monotonic()
        first_step_s = None

        def progressed() -> bool:
            nonlocal first_step_s, reached
            if not learner or (samples and samples[-1]["updates"] == int(learner["updates"])
                               and samples[-1]["env_steps"] == int(learner["env_steps"])):
                return False
            wall = round(time.monotonic() - started, 1)
            sample = {"wall_s": wall, "env_steps": int(learner["env_steps"]), "updates": int(learner["updates"]),
                      "episodes": int(learner["episodes"]), "success_rate": float(learner["success_rate"]),
                      "per_arm": {arm: int(learner.get(f"{arm}/env_steps", 0)) for arm in arms}}
            samples.append(sample)
            if first_step_s is None and sample["env_steps"]:
                first_step_s = wall
            if reached is None and sample["episodes"] >= ROLLING_WINDOW and sample["success_rate"] >= TARGET_RATE:
                reached = sample
            if len(samples) % 30 == 1:
                say(f"seed {seed}, {args.arms} arm(s): {sample['env_steps']} env steps {sample['per_arm']}, "
                    f"success {sample['success_rate']:.2f}, updates {sample['updates']}, {wall:.0f} s")
            return reached is not None or sample["env_steps"] >= args.env_steps

        graph.spin_until(progressed, args.max_wall_s or float("inf"))
        wall = round(time.monotonic() - started, 1)
        graph.shutdown(timeout=60)
    last = samples[-1] if samples else {"env_steps": 0, "success_rate": 0.0, "updates": 0, "per_arm": {}}
    cut = reached is None and last["env_steps"] < args.env_steps
    return {"seed": seed, "env_steps_to_90": reached and reached["env_steps"],
            "wall_s_to_90": reached and reached["wall_s"], "per_arm_steps_at_90": reached and reached["per_arm"],
            "first_env_step_s": first_step_s, "wall_s": wall, "env_steps": last["env_steps"],
            "per_arm_steps": last["per_arm"], "final_success_rate": last["success_rate"], "updates": last["updates"],
            "cut_short_by_max_wall_s": cut, "demo_success_rate": demos["success_rate"],
            "curve": [[s["env_steps"], s["wall_s"], round(s["success_rate"], 3)] for s in samples[::10]]}


def run_fleet(args) -> int:
    """Prints one JSON object (progress on stderr with --json)."""
    from tdmpc_ros.config import default_config_path

    config = str(Path(args.config or default_config_path()).resolve())
    out = sys.stderr if args.json else sys.stdout
    say = lambda text: print(text, file=out, flush=True)  # noqa: E731
    root = Path(args.run_dir) if args.run_dir else Path(tempfile.mkdtemp(prefix="bench_fleet_"))
    seeds = [run_seed(args, config, seed, root / f"seed{seed}", say)
             for seed in range(args.first_seed, args.first_seed + args.seeds)]
    print(json.dumps({
        "over": "ROS (lockstep sim arms, one learner; tdmpc-ros launch arm arms:=N)", "arms": args.arms,
        "success_metric": SUCCESS_METRIC + ", any arm", "target_rate": TARGET_RATE, "env_steps": args.env_steps,
        "max_wall_s": args.max_wall_s, "demos": args.demos, "seeds": seeds,
        "cpu_count": os.cpu_count(), "load_avg_1m": round(os.getloadavg()[0], 2), "config": config,
    }))
    return 0
