"""Replay for RLPD-style learning: demo and online episodes kept apart, every batch drawn half from each.

Episodes are packed back to back in preallocated arrays (one row per observation, so an episode of T steps
takes T+1 rows), and each side keeps the start row of every window of `horizon` steps that stays inside
one episode. Sampling picks uniformly among those starts: O(batch * horizon), whatever the buffer size.
"""
from __future__ import annotations

from collections import Counter, deque
from typing import NamedTuple

import numpy as np
import torch

from tdmpc_ros.config import Config
from tdmpc_ros.data.episode import Episode


class Stored(NamedTuple):
    """One episode in an EpisodeRing."""

    steps: int
    starts: int  # window starts it holds
    key: tuple[str, int]  # (arm, episode_id)


class EpisodeRing:
    """Episodes in ring arrays that grow (doubling) up to `max_steps` transitions, then evict oldest first."""

    def __init__(self, obs_dim: int, action_dim: int, horizon: int, max_steps: int | None, rows: int = 1024):
        self.horizon = horizon
        self.max_steps = max_steps
        # Every stored episode has >= horizon steps, so T+1 rows per T steps bounds the rows needed.
        self.max_rows = None if max_steps is None else max_steps + max_steps // horizon + 1
        rows = rows if self.max_rows is None else min(rows, self.max_rows)
        self.obs = np.zeros((rows, obs_dim), np.float32)
        self.action = np.zeros((rows, action_dim), np.float32)
        self.reward = np.zeros(rows, np.float32)
        self.terminated = np.zeros(rows, np.float32)
        self.starts = np.zeros(rows, np.int64)  # ring of window start rows (never more than rows in use)
        self.head = self.used = 0  # first row of the oldest episode; rows in use
        self.starts_head = self.num_starts = 0
        self.steps = 0
        self.episodes: deque[Stored] = deque()  # oldest first

    @property
    def rows(self) -> int:
        return len(self.obs)

    def add(self, episode: Episode) -> None:
        steps, need = len(episode), len(episode) + 1
        while ((self.max_steps is not None and self.steps + steps > self.max_steps)
               or self.used + need > self.rows):
            if self.max_rows is None or self.rows < self.max_rows:
                self._grow(self.used + need)
            else:
                self._evict()
        rows = (self.head + self.used + np.arange(need)) % self.rows
        self.obs[rows] = episode.observations
        self.action[rows[:-1]] = episode.actions
        self.reward[rows[:-1]] = episode.rewards
        self.terminated[rows] = 0.0
        self.terminated[rows[-2]] = float(episode.terminated)  # the step that ended by success
        count = steps - self.horizon + 1
        self.starts[(self.starts_head + self.num_starts + np.arange(count)) % self.rows] = rows[:count]
        self.num_starts += count
        self.used += need
        self.steps += steps
        self.episodes.append(Stored(steps, count, (episode.arm, episode.episode_id)))

    def _grow(self, needed: int) -> None:
        """Larger arrays; only ever called before the first eviction, so contents start at row 0 unwrapped."""
        rows = max(2 * self.rows, needed)
        if self.max_rows is not None:
            rows = min(rows, self.max_rows)
        for name in ("obs", "action", "reward", "terminated", "starts"):
            old = getattr(self, name)
            new = np.zeros((rows,) + old.shape[1:], old.dtype)
            new[:len(old)] = old
            setattr(self, name, new)

    def _evict(self) -> None:
        steps, count, _ = self.episodes.popleft()
        self.head = (self.head + steps + 1) % self.rows
        self.used -= steps + 1
        self.steps -= steps
        self.starts_head = (self.starts_head + count) % self.rows
        self.num_starts -= count

    def sample_rows(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """[horizon+1, n] row indices of n windows drawn uniformly among all valid ones."""
        picks = rng.integers(0, self.num_starts, size=n)
        starts = self.starts[(self.starts_head + picks) % self.rows]
        return (starts[None, :] + np.arange(self.horizon + 1)[:, None]) % self.rows


class Replay:
    """Demo episodes (never evicted) and online episodes (at most agent.buffer_capacity transitions).

    Batches hold `agent.demo_ratio` demo windows and the rest online ones (RLPD symmetric sampling), or
    all from one side while the other is empty. Episodes shorter than the horizon are skipped and counted
    in `skipped`.
    """

    def __init__(self, cfg: Config):
        self.horizon = cfg.planner.horizon
        self.demo_ratio = cfg.agent.demo_ratio
        dims = (cfg.model.obs_dim, cfg.model.action_dim, self.horizon)
        self.demo = EpisodeRing(*dims, max_steps=None)
        self.online = EpisodeRing(*dims, max_steps=cfg.agent.buffer_capacity)
        self.skipped: Counter[str] = Counter()

    def _add(self, ring: EpisodeRing, episode: Episode) -> bool:
        if len(episode) < self.horizon:
            self.skipped[f"shorter than the horizon ({self.horizon} steps)"] += 1
            return False
        if ring.max_steps is not None and len(episode) > ring.max_steps:
            self.skipped[f"longer than agent.buffer_capacity ({ring.max_steps} steps)"] += 1
            return False
        if episode.observations.shape[1] != ring.obs.shape[1] or episode.actions.shape[1] != ring.action.shape[1]:
            raise ValueError(f"episode {episode.episode_id} ({episode.source or 'memory'}): observation/action "
                             f"sizes {episode.observations.shape[1]}/{episode.actions.shape[1]} do not match "
                             f"model.obs_dim/action_dim {ring.obs.shape[1]}/{ring.action.shape[1]}")
        ring.add(episode)
        return True

    def add_demo(self, episode: Episode) -> bool:
        """Store a demonstration; False if it was skipped (see `skipped`)."""
        return self._add(self.demo, episode)

    def add_online(self, episode: Episode) -> bool:
        """Store an online episode, evicting the oldest online ones beyond capacity; False if skipped."""
        return self._add(self.online, episode)

    def num_demo_steps(self) -> int:
        return self.demo.steps

    def num_online_steps(self) -> int:
        return self.online.steps

    def num_demo_episodes(self) -> int:
        return len(self.demo.episodes)

    def num_online_episodes(self) -> int:
        return len(self.online.episodes)

    def online_keys(self) -> list[tuple[str, int]]:
        """(arm, episode_id) of every online episode held, oldest first: ids repeat across arms, never within one."""
        return [stored.key for stored in self.online.episodes]

    def sample(self, batch_size: int, horizon: int, rng: np.random.Generator,
               device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
        """obs [H+1,B,obs_dim], action [H,B,A], reward [H,B,1], terminated [H,B,1] (1 where success ended it),
        demo [B] (1 on the demo windows, which come first)."""
        if horizon != self.horizon:
            raise ValueError(f"replay windows are {self.horizon} steps (planner.horizon), asked for {horizon}")
        sides = [ring for ring in (self.demo, self.online) if ring.num_starts]
        if not sides:
            raise ValueError("replay is empty: add demo or online episodes before sampling")
        n_demo = round(batch_size * self.demo_ratio) if len(sides) == 2 else batch_size
        counts = [n_demo, batch_size - n_demo] if len(sides) == 2 else [batch_size]
        parts = []
        for ring, n in zip(sides, counts):
            rows = ring.sample_rows(n, rng)
            parts.append((ring.obs[rows], ring.action[rows[:-1]], ring.reward[rows[:-1]][..., None],
                          ring.terminated[rows[:-1]][..., None]))
        keys = ("obs", "action", "reward", "terminated")
        batch = {key: torch.from_numpy(np.concatenate([p[i] for p in parts], axis=1)).to(device)
                 for i, key in enumerate(keys)}
        batch["demo"] = torch.zeros(batch_size, device=device)
        if sides[0] is self.demo:
            batch["demo"][:counts[0]] = 1.0
        return batch
