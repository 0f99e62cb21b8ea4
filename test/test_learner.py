"""The learner core without ROS: demo pretraining lowers the loss, the RLPD schedule, checkpoint rotation."""
from __future__ import annotations

import numpy as np
import pytest

from tdmpc_ros.config import load_config
from tdmpc_ros.learning.learner import Learner
from tdmpc_ros.sim.expert import expert_episodes
from tdmpc_ros.sim.env import ArmEnv



@pytest.fixture(scope="module")
def demos():
    cfg = load_config()
    env = ArmEnv(cfg)
    episodes = list(expert_episodes(env, 8))
    env.close()
    return episodes


def make_learner(tmp_path, **learner):
    # Eager training: the schedule does not depend on compiling, which would cost the first update
    cfg = load_config(overrides={"agent": {"batch_size": 32, "compile": False},
                                 "learner": {"publish_every": 1000, **learner}})
    return Learner(cfg, tmp_path, log=lambda line: None)


@pytest.mark.slow
def test_demo_pretraining_lowers_the_loss(tmp_path, demos):
    learner = make_learner(tmp_path, pretrain_updates=200)
    learner.add_demos(demos)
    losses = []
    while learner.can_train():
        losses.append(learner.train_step()["total_loss"])
    assert len(losses) == 200
    assert np.mean(losses[-20:]) < 0.5 * np.mean(losses[:10])


@pytest.mark.unit
def test_updates_follow_utd_ratio_after_pretraining(tmp_path, demos):
    learner = make_learner(tmp_path, pretrain_updates=5)
    learner.cfg.agent.utd_ratio = 0.5
    learner.add_demos(demos[:4])
    done = 0
    while learner.can_train():
        learner.train_step()
        done += 1
    assert done == 5 and learner.env_steps == 0  # pretraining, then it waits for online data
    learner.add_online(demos[5])
    while learner.can_train():
        learner.train_step()
        done += 1
    assert done == 5 + int(len(demos[5]) * 0.5)
    assert learner.env_steps == len(demos[5]) and learner.replay.num_online_episodes() == 1


@pytest.mark.unit
def test_checkpoints_rotate_and_resume(tmp_path, demos):
    learner = make_learner(tmp_path, pretrain_updates=4, keep_checkpoints=2)
    learner.add_demos(demos[:2])
    published = []
    learner.on_publish = published.append
    for _ in range(4):
        learner.train_step()
        learner.checkpoint()
    assert [p.version for p in published] == [1, 2, 3, 4]
    assert [v for v, _ in learner.store.versions()] == [3, 4]
    resumed = make_learner(tmp_path)
    assert resumed.version == 4 and resumed.updates == 4
    # a damaged newest checkpoint is skipped, not loaded; a write cut short by a crash is cleaned up
    (tmp_path / "checkpoints" / "ckpt_000004.pt").write_bytes(b"garbage")
    leftover = tmp_path / "checkpoints" / ".ckpt_000005.pt.x1y2.tmp"
    leftover.write_bytes(b"half a checkpoint")
    assert make_learner(tmp_path).version == 3 and not leftover.exists()
    # killed between the file and its checksum: an unverifiable file, also skipped (a flipped bit would load)
    learner = make_learner(tmp_path)
    learner.checkpoint()
    newest = learner.store.versions()[-1][1]
    assert newest.name == "ckpt_000005.pt"
    (tmp_path / "checkpoints" / "ckpt_000005.pt.sha256").unlink()
    logged = []
    assert Learner(learner.cfg, tmp_path, log=logged.append).version == 3
    assert any(f"skipping checkpoint: {newest}: no checksum file" in line for line in logged), logged
