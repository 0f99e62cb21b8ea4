"""`tdmpc-ros demo` (what `make demo` runs): learn the task (reach; `--task push`) on the PyBullet arm with the
full ROS loop.

Records scripted demos if there are none, launches sim + controller + learner (lockstep by default) through
the same node list as arm.launch.py, follows the run over DDS, prints progress, and ends with a summary
and a learning curve (success rate and return against env steps).
"""
from __future__ import annotations

import argparse
import csv
import time
from collections import deque
from pathlib import Path

from tdmpc_ros.cli.arm_args import add_arm_arguments, arm_config

SUCCESS_WINDOW = 20  # episodes in the rolling success rate


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--env-steps", type=int, default=12000, help="stop after this many control steps")
    parser.add_argument("--minutes", type=float, default=30.0, help="stop after this long in any case")
    parser.add_argument("--demos", default=None,
                        help="demo bag directory, recorded if empty (default: demos, or demos_<task> with --task)")
    parser.add_argument("--demo-episodes", type=int, default=10, help="expert episodes to record if none exist")
    parser.add_argument("--run-dir", default="", help="run folder (default runs/demo-<time>)")
    parser.add_argument("--realtime", action="store_true", help="real-time sim instead of lockstep")
    parser.add_argument("--config", default="", help="parameter file (default config/arm.yaml)")
    add_arm_arguments(parser)


def has_bags(folder: Path) -> bool:
    return folder.is_dir() and any(folder.rglob("metadata.yaml"))


class RunMonitor:
    """Follows transitions, planner status and learner diagnostics; keeps one row per finished episode."""

    def __init__(self, observer):
        self.env_steps = 0
        self.episode_return = 0.0
        self.rows: list[dict] = []
        self.recent: deque[bool] = deque(maxlen=SUCCESS_WINDOW)
        observer.record("transitions", keep=False, on_message=self.on_transition)
        self.statuses = observer.record("statuses", keep=False)
        self.learner = observer.learner_values()

    def on_transition(self, sample) -> None:
        msg = sample.msg
        self.env_steps += 1
        self.episode_return += msg.reward
        if msg.terminated or msg.truncated:
            self.recent.append(bool(msg.terminated))
            self.rows.append({"env_steps": self.env_steps, "episode": len(self.rows) + 1,
                              "success": int(msg.terminated), "return": round(self.episode_return, 4),
                              "length": msg.step + 1, "success_rate": round(self.success_rate(), 4)})
            self.episode_return = 0.0

    def success_rate(self) -> float:
        return sum(self.recent) / len(self.recent) if self.recent else 0.0

    def progress_line(self, elapsed: float) -> str:
        status = self.statuses.last.msg if self.statuses.last else None
        p99 = f"{status.plan_ms_p99:.1f} ms" if status else "-"
        mode = status.mode if status else "starting"
        return (f"[demo {elapsed:6.0f} s] env steps {self.env_steps:6d} | episodes {len(self.rows):4d} | "
                f"success (last {SUCCESS_WINDOW}) {self.success_rate():5.0%} | "
                f"updates {self.learner.get('updates', '0')} ({self.learner.get('updates_per_s', '0')}/s) | "
                f"model v{self.learner.get('model_version', '0')} | planner p99 {p99} | {mode}")


def run(args: argparse.Namespace) -> int:
    from tdmpc_ros.cli.demos import record_demos
    from tdmpc_ros.cli.harness import LaunchedGraph, RequiredNodeExited
    from tdmpc_ros.learning.metrics import plot_learning_curve
    from tdmpc_ros.tasks.base import task_config_path

    task = args.task
    config = task_config_path(task, args.config or None) or ""
    overrides = {"task.name": task} if task else None
    demos_dir = Path(args.demos or (f"demos_{task.replace(':', '_').replace('.', '_')}" if task else "demos"))
    if not has_bags(demos_dir):
        print(f"[demo] no demo bags in {demos_dir}: recording {args.demo_episodes} scripted-expert episodes")
        record_demos(arm_config(args), demos_dir, args.demo_episodes)
    run_dir = Path(args.run_dir or f"runs/demo-{time.strftime('%Y%m%d-%H%M%S')}")
    run_dir.mkdir(parents=True, exist_ok=True)
    arguments = {"lockstep": str(not args.realtime).lower(), "demos": str(demos_dir.resolve()),
                 "run_dir": str(run_dir.resolve()), "learn": "true"}
    if config:
        arguments["config"] = config
    arguments.update({name: value for name, value in (("robot", args.robot), ("action_space", args.action_space))
                      if value})  # launch arguments of the same names
    with LaunchedGraph(arguments, overrides, log_path=run_dir / "launch.log", observer_name="demo_monitor") as graph:
        print(f"[demo] run folder {run_dir} (node output in {run_dir / 'launch.log'}); "
              f"target {args.env_steps} env steps")
        monitor = RunMonitor(graph.observer)
        graph.start()
        start = last_print = time.monotonic()
        end = start + 60 * args.minutes
        failed = None
        try:
            while monitor.env_steps < args.env_steps and time.monotonic() < end:
                graph.spin_until(lambda: monitor.env_steps >= args.env_steps,
                                 min(last_print + 10.0, end) - time.monotonic())
                if time.monotonic() - last_print >= 10.0:
                    last_print = time.monotonic()
                    print(monitor.progress_line(last_print - start), flush=True)
        except RequiredNodeExited as exc:
            failed = exc.node
        except KeyboardInterrupt:
            print("[demo] interrupted: shutting down")
        finally:
            codes = graph.shutdown()
    elapsed = time.monotonic() - start
    if failed:
        print(f"[demo] {failed} exited early (code {codes[failed]}); last lines of {run_dir / 'launch.log'}:")
        print("".join((run_dir / "launch.log").read_text().splitlines(keepends=True)[-30:]))
        return 1
    curve_csv = run_dir / "episodes.csv"
    with open(curve_csv, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["env_steps", "episode", "success", "return", "length",
                                               "success_rate"])
        writer.writeheader()
        writer.writerows(monitor.rows)
    if monitor.rows:
        plot_learning_curve(curve_csv, run_dir / "learning_curve.png", x="env_steps", ys=["success_rate", "return"])
    print(monitor.progress_line(elapsed))
    print(f"[demo] summary: {monitor.env_steps} env steps in {elapsed:.0f} s, {len(monitor.rows)} episodes, "
          f"success rate over the last {SUCCESS_WINDOW} episodes {monitor.success_rate():.0%}, "
          f"learner updates {monitor.learner.get('updates', '0')}, newest model "
          f"v{monitor.learner.get('model_version', '0')}")
    print(f"[demo] learning curve: {run_dir / 'learning_curve.png'} (data {curve_csv}); checkpoints in "
          f"{run_dir / 'checkpoints'}; exit codes {codes}")
    return 0
