"""`tdmpc-ros train`: offline training from demo (and online) bags, the same replay and agent as the learner.

Ctrl-C saves a checkpoint at --out and exits 0; `--resume` continues from it (weights, optimisers, update
count) until --updates in total. Metrics go to <run-dir>/metrics.csv and TensorBoard, the learning curve to
<run-dir>/learning_curve.png.
"""
from __future__ import annotations

import argparse
import signal
from pathlib import Path

from tdmpc_ros.cli.arm_args import add_arm_arguments, arm_config
from tdmpc_ros.errors import InputError

CURVE_KEYS = ("total_loss", "consistency_loss", "reward_loss", "value_loss", "termination_loss", "pi_loss")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default=None, help="parameter file (default: config/arm.yaml)")
    add_arm_arguments(parser)
    parser.add_argument("--demos", nargs="+", required=True, metavar="DIR", help="demo bag folders or bags")
    parser.add_argument("--online", nargs="*", default=[], metavar="DIR", help="online bag folders or bags")
    parser.add_argument("--updates", type=int, required=True, help="train until this many updates in total")
    parser.add_argument("--out", required=True, help="checkpoint to write (e.g. models/arm.pt)")
    parser.add_argument("--resume", action="store_true", help="continue from the checkpoint at --out")
    parser.add_argument("--preset", default=None, help="model size preset (model.preset)")
    parser.add_argument("--batch-size", type=int, default=None, help="windows per update (agent.batch_size)")
    parser.add_argument("--device", default=None, help="cpu, cuda or auto (agent.device)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--run-dir", default=None, help="metrics folder (default: runs/train_<out name>)")
    parser.add_argument("--save-every", type=int, default=1000, help="also checkpoint every this many updates")
    parser.add_argument("--log-every", type=int, default=10, help="metrics row every this many updates")


def overrides(args: argparse.Namespace) -> dict:
    values = {"model": {"preset": args.preset}, "agent": {"batch_size": args.batch_size, "device": args.device}}
    return {section: {k: v for k, v in fields.items() if v is not None} for section, fields in values.items()}


def run(args: argparse.Namespace) -> int:
    import numpy as np
    import torch
    from tqdm import tqdm

    from tdmpc_ros.data.bags import read_episodes
    from tdmpc_ros.learning.agent import Agent
    from tdmpc_ros.learning.checkpoint import (agent_from_checkpoint, check_model_config, load_checkpoint,
                                               save_checkpoint)
    from tdmpc_ros.learning.checkpoint_file import CheckpointError
    from tdmpc_ros.learning.learner import resolve_device
    from tdmpc_ros.learning.metrics import MetricsLogger, plot_learning_curve
    from tdmpc_ros.learning.replay import Replay

    if args.updates < 1:
        raise InputError(f"--updates must be at least 1, got {args.updates}")
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    cfg = arm_config(args, overrides(args))
    out = Path(args.out)
    device = resolve_device(cfg.agent.device)
    if args.resume:
        if not out.exists():
            raise InputError(f"--resume given but {out} does not exist")
        try:
            ckpt = load_checkpoint(out)
            check_model_config(ckpt, cfg.model, cfg.agent)
            agent = agent_from_checkpoint(ckpt, device=device)
        except CheckpointError as exc:
            raise InputError(f"cannot resume: {exc}") from None
        print(f"resumed {out} at update {agent.updates}")
    else:
        if out.exists():
            raise InputError(f"{out} exists; pass --resume to continue it or choose another --out")
        agent = Agent(cfg, device=device)

    replay = Replay(cfg)
    for label, paths, add in (("demos", args.demos, replay.add_demo), ("online", args.online, replay.add_online)):
        if not paths:
            continue
        report = read_episodes(paths, cfg)
        print(f"{label}: {report.summary()}")
        for episode in report.episodes:
            add(episode)
    for reason, count in replay.skipped.items():
        print(f"replay: skipped {count} episodes {reason}")
    if replay.num_demo_steps() + replay.num_online_steps() == 0:
        raise InputError("no usable episodes in --demos/--online (see the reports above)")
    print(f"replay: {replay.num_demo_episodes()} demo episodes ({replay.num_demo_steps()} steps), "
          f"{replay.num_online_episodes()} online ({replay.num_online_steps()} steps); "
          f"{cfg.model.preset} model on {device}")

    run_dir = Path(args.run_dir or Path("runs") / f"train_{out.stem}")
    metrics = MetricsLogger(run_dir, config=agent.cfg)
    rng = np.random.default_rng(cfg.agent.seed + agent.updates)
    batch_size, horizon = cfg.agent.batch_size, cfg.planner.horizon
    meta = {"source": "tdmpc-ros train", "demos": [str(p) for p in args.demos],
            "online": [str(p) for p in args.online]}

    def save() -> None:
        out.parent.mkdir(parents=True, exist_ok=True)
        save_checkpoint(out, agent, dict(meta, updates=agent.updates))

    interrupted = []
    previous = signal.signal(signal.SIGINT, lambda *_: interrupted.append(True))
    torch.manual_seed(cfg.agent.seed + agent.updates)
    progress = tqdm(total=args.updates, initial=min(agent.updates, args.updates), desc="train", unit="update")
    try:
        while agent.updates < args.updates and not interrupted:
            losses = agent.train_step(lambda: replay.sample(batch_size, horizon, rng, device=device))
            progress.update(1)
            if agent.updates % args.log_every == 0:
                metrics.log(agent.updates, losses)
                progress.set_postfix({k: f"{losses[k]:.3g}" for k in CURVE_KEYS[:3]})
            if agent.updates % args.save_every == 0:
                save()
    finally:
        progress.close()
        signal.signal(signal.SIGINT, previous)
        save()
        metrics.close()
    if interrupted:
        print(f"interrupted: saved {out} at update {agent.updates}; continue with --resume")
        return 0
    if metrics.columns:
        curve = plot_learning_curve(metrics.csv_path, run_dir / "learning_curve.png", x="step",
                                    ys=[k for k in CURVE_KEYS if k in metrics.columns],
                                    title=f"tdmpc-ros train {out.name}", xlabel="updates")
        print(f"learning curve: {curve}")
    print(f"saved {out} after {agent.updates} updates; metrics in {metrics.csv_path}")
    return 0
