"""Replay: RLPD batch composition, windows inside episodes, eviction, and the agent's batch layout."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from tdmpc_ros.config import load_config
from tdmpc_ros.data.episode import Episode
from tdmpc_ros.learning.replay import Replay

pytestmark = pytest.mark.unit

H = 3


def config(capacity: int = 1000, demo_ratio: float = 0.5):
    return load_config(overrides={"planner": {"horizon": H},
                                  "agent": {"buffer_capacity": capacity, "demo_ratio": demo_ratio}})


CFG = config()
OBS, ACT = CFG.model.obs_dim, CFG.model.action_dim


def marked(episode_id: int, steps: int, terminated: bool = False) -> Episode:
    """Every entry names its episode and step: obs[t] = [id, t, ...], action[t] = [id, t, ...], reward = id*1000+t."""
    obs = np.zeros((steps + 1, OBS), np.float32)
    obs[:, 0], obs[:, 1] = episode_id, np.arange(steps + 1)
    act = np.zeros((steps, ACT), np.float32)
    act[:, 0], act[:, 1] = episode_id, np.arange(steps)
    return Episode(episode_id, obs, act, episode_id * 1000 + np.arange(steps), terminated=terminated,
                   truncated=not terminated)


def windows(batch) -> list[tuple[int, int]]:
    """Check every window is one episode's consecutive steps; returns (episode id, first step) per window."""
    obs, act, rew, term = (batch[k].numpy() for k in ("obs", "action", "reward", "terminated"))
    out = []
    for b in range(obs.shape[1]):
        ids, steps = obs[:, b, 0], obs[:, b, 1]
        assert (ids == ids[0]).all() and np.array_equal(steps, steps[0] + np.arange(H + 1)), (ids, steps)
        assert (act[:, b, 0] == ids[0]).all() and np.array_equal(act[:, b, 1], steps[:-1])
        assert np.array_equal(rew[:, b, 0], ids[0] * 1000 + steps[:-1])
        out.append((int(ids[0]), int(steps[0])))
    return out


def test_batch_layout_and_windows_never_cross_episode_ends():
    replay = Replay(CFG)
    lengths = {1: 3, 2: 7, 3: 4, 4: 12}
    for i, n in lengths.items():
        replay.add_demo(marked(i, n, terminated=i % 2 == 0))
    batch = replay.sample(256, H, np.random.default_rng(0))
    assert batch["obs"].shape == (H + 1, 256, OBS) and batch["action"].shape == (H, 256, ACT)
    assert batch["reward"].shape == (H, 256, 1) and batch["terminated"].shape == (H, 256, 1)
    assert all(v.dtype == torch.float32 for v in batch.values())
    seen = set()
    for _ in range(20):
        batch = replay.sample(256, H, np.random.default_rng(len(seen)))
        for b, (i, start) in enumerate(windows(batch)):
            assert start + H <= lengths[i]  # may end at the last observation, never beyond
            ends = [start + k == lengths[i] - 1 and i % 2 == 0 for k in range(H)]
            assert np.array_equal(batch["terminated"][:, b, 0].numpy(), np.array(ends, np.float32))
            seen.add((i, start))
    assert seen == {(i, s) for i, n in lengths.items() for s in range(n - H + 1)}  # every valid window


def test_windows_are_uniform_over_valid_starts():
    replay = Replay(CFG)
    for i, n in enumerate([4, 9, 20]):
        replay.add_online(marked(i, n))
    counts = {}
    for seed in range(40):
        for key in windows(replay.sample(512, H, np.random.default_rng(seed))):
            counts[key] = counts.get(key, 0) + 1
    freq = np.array(list(counts.values()))
    assert len(freq) == (4 - 2) + (9 - 2) + (20 - 2)
    expected = 40 * 512 / len(freq)
    assert np.abs(freq - expected).max() < 5 * np.sqrt(expected)  # ~5 sigma of a multinomial count


@pytest.mark.parametrize("ratio", [0.5, 0.25])
def test_every_batch_holds_the_demo_ratio_and_falls_back_to_one_side(ratio):
    replay = Replay(config(demo_ratio=ratio))
    rng = np.random.default_rng(1)
    with pytest.raises(ValueError, match="replay is empty"):
        replay.sample(8, H, rng)
    replay.add_online(marked(-1, 10))  # online ids are negative
    batch = replay.sample(64, H, rng)
    assert all(i < 0 for i, _ in windows(batch)) and not batch["demo"].any()  # no demos yet: all online
    for i in range(1, 4):
        replay.add_demo(marked(i, 10))
    demo_share = []
    for _ in range(50):
        batch = replay.sample(64, H, rng)
        is_demo = [i > 0 for i, _ in windows(batch)]
        assert batch["demo"].tolist() == [float(d) for d in is_demo]  # the mask marks exactly the demo windows
        demo_share.append(np.mean(is_demo))
    assert np.allclose(demo_share, round(64 * ratio) / 64)
    only_demo = Replay(config(demo_ratio=ratio))
    only_demo.add_demo(marked(5, 6))
    batch = only_demo.sample(64, H, rng)
    assert {i for i, _ in windows(batch)} == {5} and batch["demo"].all()
    with pytest.raises(ValueError, match="horizon"):
        replay.sample(8, H + 1, rng)


def test_online_eviction_is_oldest_first_and_demos_stay():
    replay = Replay(config(capacity=50))
    for i in range(1, 31):  # demos beyond the online capacity are all kept
        replay.add_demo(marked(i, 5))
    lengths = [7, 11, 4, 13, 9, 6, 15, 8, 5, 10, 12, 3, 14]
    rng = np.random.default_rng(2)
    for k, n in enumerate(lengths):
        replay.add_online(marked(-(k + 1), n))
        kept, total = [], 0
        for j in range(k, -1, -1):  # newest first while they fit
            if total + lengths[j] > 50:
                break
            kept.append(-(j + 1))
            total += lengths[j]
        assert replay.num_online_steps() == total and replay.num_online_episodes() == len(kept)
        online = {i for i, _ in windows(replay.sample(400, H, rng)) if i < 0}
        assert online == set(kept)  # the ring wraps, windows still stay inside episodes
    assert replay.num_demo_steps() == 150 and replay.num_demo_episodes() == 30


def test_short_episodes_are_skipped_and_counted():
    replay = Replay(config(capacity=20))
    assert not replay.add_demo(marked(1, H - 1))
    assert not replay.add_online(marked(2, 21))
    assert replay.add_online(marked(3, H))
    assert dict(replay.skipped) == {f"shorter than the horizon ({H} steps)": 1,
                                    "longer than agent.buffer_capacity (20 steps)": 1}
    wrong = Episode(4, np.zeros((6, OBS - 1)), np.zeros((5, ACT)), np.zeros(5), source="x.mcap")
    with pytest.raises(ValueError, match="x.mcap"):
        replay.add_demo(wrong)
