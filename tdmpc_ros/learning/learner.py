"""Online learning without ROS: replay of demos + online episodes, RLPD update schedule, checkpoints.

The learner node feeds it episodes as they complete and runs `run()` on a thread of its own; `tdmpc-ros
bench learn` drives the same object synchronously from the gymnasium env.
"""
from __future__ import annotations

import re
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from tdmpc_ros.config import Config
from tdmpc_ros.data.episode import Episode
from tdmpc_ros.learning.agent import Agent
from tdmpc_ros.learning.checkpoint import load_checkpoint, save_checkpoint
from tdmpc_ros.learning.checkpoint_file import CheckpointError
from tdmpc_ros.learning.replay import Replay

CHECKPOINT_NAME = re.compile(r"ckpt_(\d{6})\.pt$")


@dataclass
class Published:
    version: int
    path: str
    sha256: str
    updates: int
    env_steps: int


def resolve_device(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("agent.device is cuda but torch sees no CUDA device")
    return name


class CheckpointStore:
    """Numbered checkpoints in one folder: the newest valid one resumes, only the last `keep` stay."""

    def __init__(self, folder: Path, keep: int, log: Callable[[str], None] = print):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.keep = max(1, keep)
        self.log = log
        for leftover in self.folder.glob(".*.tmp"):  # a write cut short by a crash: never a checkpoint
            self.log(f"removing unfinished checkpoint write {leftover}")
            leftover.unlink(missing_ok=True)

    def versions(self) -> list[tuple[int, Path]]:
        found = [(int(m.group(1)), p) for p in self.folder.iterdir() if (m := CHECKPOINT_NAME.match(p.name))]
        return sorted(found)

    def latest_valid(self):
        """(version, Checkpoint) of the newest checkpoint that verifies, or None; bad ones are logged."""
        for version, path in reversed(self.versions()):
            try:
                return version, load_checkpoint(path, require_checksum=True)
            except CheckpointError as exc:
                self.log(f"skipping checkpoint: {exc}")
        return None

    def save(self, agent: Agent, meta: dict) -> tuple[int, Path, str]:
        versions = self.versions()
        version = (versions[-1][0] if versions else 0) + 1
        path = self.folder / f"ckpt_{version:06d}.pt"
        sha256 = save_checkpoint(path, agent, dict(meta, version=version))
        for _, old in self.versions()[:-self.keep]:
            old.unlink(missing_ok=True)
            Path(f"{old}.sha256").unlink(missing_ok=True)
        return version, path, sha256


class Learner:
    """Owns the agent and the replay; trains at `utd_ratio` updates per online transition after pretraining."""

    def __init__(self, cfg: Config, run_dir: str | Path, log: Callable[[str], None] = print,
                 on_publish: Callable[[Published], None] | None = None):
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.log = log
        self.on_publish = on_publish
        self.device = resolve_device(cfg.agent.device)
        self.agent = Agent(cfg, device=self.device)
        self.replay = Replay(cfg)
        self.rng = np.random.default_rng(cfg.agent.seed)
        self.store = CheckpointStore(self.run_dir / "checkpoints", cfg.learner.keep_checkpoints, log)
        self.lock = threading.Lock()  # replay is filled by the subscription thread, sampled by the trainer
        self.wake = threading.Condition(self.lock)
        self.updates = 0
        self.env_steps = 0
        self.owed = 0.0  # updates earned by online transitions, not yet done
        self.version = 0
        self.last_losses: dict[str, float] = {}
        self.recent_success: deque[bool] = deque(maxlen=20)
        self.episodes_seen = 0
        self.steps_by_arm: Counter[str] = Counter()  # online env steps counted per arm (their sum: this learner's env steps)
        self._rate = deque(maxlen=50)  # (time, updates) samples for updates/s
        self._resume()

    # -- data ---------------------------------------------------------------------------------------------
    def _resume(self) -> None:
        found = self.store.latest_valid()
        if found is None:
            return
        self.version, ckpt = found
        self.agent.load_state_dict(ckpt.agent_state)
        self.updates = int(ckpt.meta.get("updates", 0))
        self.env_steps = int(ckpt.meta.get("env_steps", 0))
        self.log(f"resumed from checkpoint v{self.version} ({self.updates} updates, {self.env_steps} env steps)")

    def add_demos(self, episodes: list[Episode]) -> None:
        with self.lock:
            for episode in episodes:
                self.replay.add_demo(episode)

    def add_online(self, episode: Episode, count_steps: bool = True) -> None:
        """A completed online episode; `count_steps` False for episodes reloaded from disk at start."""
        with self.wake:
            self.replay.add_online(episode)
            self.episodes_seen += 1
            self.recent_success.append(bool(episode.terminated))
            if count_steps:
                self.env_steps += len(episode)
                self.steps_by_arm[episode.arm] += len(episode)
                self.owed += len(episode) * self.cfg.agent.utd_ratio
                self.wake.notify()

    # -- training -----------------------------------------------------------------------------------------
    @property
    def pretraining(self) -> bool:
        """RLPD's demo-only start; without demos there is nothing to pretrain on, and learning is online only."""
        return self.updates < self.cfg.learner.pretrain_updates and self.replay.num_demo_steps() > 0

    @property
    def backlog_steps(self) -> int:
        """Online env steps (of completed episodes) whose scheduled updates are not done yet."""
        utd = self.cfg.agent.utd_ratio
        return int(np.ceil(self.owed / utd)) if utd > 0 else 0

    @property
    def updated_in_process(self) -> bool:
        """Whether an update has finished in this process (the first one compiles the training graphs)."""
        return bool(self._rate)

    def can_train(self) -> bool:
        if self.replay.num_demo_steps() + self.replay.num_online_steps() == 0:
            return False
        return self.pretraining or self.owed >= 1.0

    def train_step(self) -> dict[str, float]:
        """One scheduled update (critic-only extras included), then a checkpoint every publish_every."""
        batch_size, horizon = self.cfg.agent.batch_size, self.cfg.planner.horizon

        def sample():
            with self.lock:
                return self.replay.sample(batch_size, horizon, self.rng, device=self.device)

        first = not self.updated_in_process
        if first and self.cfg.agent.compile:
            self.log("first update: compiling the training graphs (torch.compile; about a minute with a cold "
                     "inductor cache, seconds once cached)")
        started = time.monotonic()
        losses = self.agent.train_step(sample)
        if first:
            self.log(f"first update took {time.monotonic() - started:.1f} s")
        with self.lock:
            self.updates += 1
            if not self.pretraining:
                self.owed = max(0.0, self.owed - 1.0)
        self.last_losses = losses
        self._rate.append((time.monotonic(), self.updates))
        if self.updates % self.cfg.learner.publish_every == 0:
            self.checkpoint()
        return losses

    def checkpoint(self) -> Published:
        version, path, sha256 = self.store.save(self.agent, {"updates": self.updates, "env_steps": self.env_steps})
        self.version = version
        published = Published(version, str(path.resolve()), sha256, self.updates, self.env_steps)
        if self.on_publish:
            self.on_publish(published)
        return published

    def run(self, stop: threading.Event) -> None:
        """Train whenever there is work, sleep on the condition otherwise, until `stop` is set."""
        while not stop.is_set():
            with self.wake:
                if not self.can_train():
                    self.wake.wait(timeout=0.1)
                    continue
            self.train_step()

    def updates_per_second(self) -> float:
        if len(self._rate) < 2:
            return 0.0
        (t0, u0), (t1, u1) = self._rate[0], self._rate[-1]
        return (u1 - u0) / (t1 - t0) if t1 > t0 else 0.0

    def success_rate(self) -> float:
        return float(np.mean(self.recent_success)) if self.recent_success else 0.0
