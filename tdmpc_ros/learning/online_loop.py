"""Online learning in one process: scripted demos, then the MPPI planner acting on ArmEnv while the Learner trains.

The same `Learner` as the learner node (replay, RLPD schedule, checkpoints) and the same planner as the
controller (`make_planner`, non-eval, weights refreshed from the learner each episode); only the transport
is gone. Updates run synchronously at episode ends: exactly `utd_ratio` per env step, as the node owes them.

The curve's success rate is the rolling rate over the last ROLLING_WINDOW training episodes (the planner
exploring, not eval mode); optional periodic evaluations use the eval-mode planner on a separate env.
"""
from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tdmpc_ros.config import Config
from tdmpc_ros.learning.learner import Learner
from tdmpc_ros.planner import make_planner
from tdmpc_ros.sim.expert import expert_episodes
from tdmpc_ros.sim.env import ArmEnv, collect_episode

ROLLING_WINDOW = 20  # Learner.recent_success's window
SUCCESS_METRIC = (f"rolling success rate of the last {ROLLING_WINDOW} training episodes (training-mode actions: "
                  "MPPI's, or the policy prior's with planner.mpc false)")
DEMO_NOISE = 0.1


@dataclass
class EpisodeRecord:
    env_steps: int
    """Online env steps so far, this episode included."""
    success: bool
    episode_return: float
    length: int
    success_rate: float
    """Rolling success over the last ROLLING_WINDOW episodes (fewer at the start)."""
    updates: int
    wall_s: float


@dataclass
class EvalRecord:
    env_steps: int
    success_rate: float
    mean_return: float
    mean_length: float


@dataclass
class OnlineResult:
    seed: int
    episodes: list[EpisodeRecord] = field(default_factory=list)
    evals: list[EvalRecord] = field(default_factory=list)
    demo_success_rate: float = 0.0
    wall_s: float = 0.0
    time_s: dict[str, float] = field(default_factory=dict)
    """Wall time by phase: demos, pretrain, plan, env, update, eval."""
    checkpoint: str = ""
    updates: int = 0
    replay_online_steps: int = 0

    def steps_to(self, rate: float) -> int | None:
        """Env steps when the rolling success rate first reached `rate` over a full window, or None."""
        for i, record in enumerate(self.episodes):
            if i + 1 >= ROLLING_WINDOW and record.success_rate >= rate:
                return record.env_steps
        return None


def evaluate(env: ArmEnv, planner, episodes: int) -> EvalRecord:
    """Eval-mode planner episodes on `env`; env_steps is left 0 for the caller to fill."""
    results = []
    for i in range(episodes):
        planner.reset()
        episode, _ = collect_episode(env, lambda obs, info: planner.plan(obs, eval_mode=True), i)
        results.append(episode)
    return EvalRecord(0, float(np.mean([e.success for e in results])),
                      float(np.mean([e.episode_return for e in results])), float(np.mean([len(e) for e in results])))


def seeded_config(cfg: Config, seed: int) -> Config:
    """A copy of cfg with agent, sim and goal seeds set to `seed`."""
    cfg = copy.deepcopy(cfg)
    cfg.agent.seed = seed
    cfg.sim.seed = seed
    return cfg


def run_online(cfg: Config, env_steps: int, seed: int, run_dir: str | Path, demo_episodes: int = 10,
               eval_every: int = 0, eval_episodes: int = 5, log: Callable[[str], None] = print,
               on_episode: Callable[[EpisodeRecord], None] | None = None) -> OnlineResult:
    """Demos, pretraining, then online episodes until `env_steps`; checkpoints and the result under run_dir.

    eval_every > 0 adds an eval-mode evaluation of `eval_episodes` episodes every that many env steps.
    demo_episodes 0: no demos, so no pretraining (online learning only).
    """
    if env_steps < 1 or demo_episodes < 0:
        raise ValueError(f"run_online: env_steps ({env_steps}) must be >= 1 and demo_episodes ({demo_episodes}) "
                         ">= 0")
    cfg = seeded_config(cfg, seed)
    result = OnlineResult(seed)
    times = dict.fromkeys(("demos", "pretrain", "plan", "env", "update", "eval"), 0.0)
    start = time.perf_counter()
    env = ArmEnv(cfg)
    eval_env = ArmEnv(seeded_config(cfg, seed + 10_000)) if eval_every > 0 else None
    try:
        demos = list(expert_episodes(env, demo_episodes, DEMO_NOISE, seed))
        result.demo_success_rate = float(np.mean([d.success for d in demos])) if demos else 0.0
        times["demos"] = time.perf_counter() - start

        learner = Learner(cfg, run_dir, log=log)
        learner.add_demos(demos)
        mark = time.perf_counter()
        while learner.pretraining:
            learner.train_step()
        times["pretrain"] = time.perf_counter() - mark
        log(f"seed {seed}: {demo_episodes} demos (expert success {result.demo_success_rate:.2f}), "
            f"{learner.updates} pretraining updates in {times['pretrain']:.0f} s")

        planner = make_planner(learner.agent.model, cfg.planner, cfg.discount, seed=seed)
        eval_planner = make_planner(learner.agent.model, cfg.planner, cfg.discount, seed=seed + 1) if eval_env else None

        def timed_plan(obs, info):
            mark = time.perf_counter()
            action = planner.plan(obs)
            times["plan"] += time.perf_counter() - mark
            return action

        steps, next_eval, episode_id = 0, eval_every, 0
        while steps < env_steps:
            planner.set_model(learner.agent.model)
            planner.reset()
            mark = time.perf_counter()
            plan_before = times["plan"]
            episode, _ = collect_episode(env, timed_plan, episode_id)
            times["env"] += time.perf_counter() - mark - (times["plan"] - plan_before)
            episode_id += 1
            steps += len(episode)
            learner.add_online(episode)
            mark = time.perf_counter()
            while learner.can_train():
                learner.train_step()
            times["update"] += time.perf_counter() - mark
            record = EpisodeRecord(steps, episode.success, episode.episode_return, len(episode),
                                   learner.success_rate(), learner.updates, time.perf_counter() - start)
            result.episodes.append(record)
            if on_episode:
                on_episode(record)
            if eval_env is not None and steps >= next_eval:
                mark = time.perf_counter()
                eval_planner.set_model(learner.agent.model)
                evaluation = evaluate(eval_env, eval_planner, eval_episodes)
                evaluation.env_steps = steps
                result.evals.append(evaluation)
                times["eval"] += time.perf_counter() - mark
                next_eval += eval_every
        result.checkpoint = learner.checkpoint().path
        result.updates = learner.updates
        result.replay_online_steps = learner.replay.num_online_steps()
    finally:
        env.close()
        if eval_env is not None:
            eval_env.close()
    result.wall_s = time.perf_counter() - start
    result.time_s = {k: round(v, 2) for k, v in times.items()}
    return result
