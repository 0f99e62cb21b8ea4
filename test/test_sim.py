"""The PyBullet arm, kinematics, ArmEnv and the scripted expert, run for real (no ROS)."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from tdmpc_ros.config import Config, ConfigError, SimConfig, TaskConfig, load_config
from tdmpc_ros.kinematics import ArmKinematics, robot_overrides
from tdmpc_ros.sim.arm import Arm
from tdmpc_ros.sim.expert import expert_episodes
from tdmpc_ros.sim.env import ArmEnv, collect_episode
from tdmpc_ros.tasks.reach import ReachTask

pytestmark = pytest.mark.unit

HOME = np.array(Config().sim.home)


def make_arm(**sim_fields) -> Arm:
    return Arm(TaskConfig(), SimConfig(home_noise=0.0, **sim_fields))


def settle(arm: Arm, periods: int) -> list[np.ndarray]:
    """Joint positions after each of `periods` control periods."""
    out = []
    for _ in range(periods):
        arm.step_control_period()
        out.append(arm.state()[0])
    return out


@pytest.mark.parametrize("robot", ["kuka_iiwa", "panda"])
def test_ik_reaches_goals_in_the_box_and_fk_agrees(robot):
    cfg = load_config(None, robot_overrides(robot))
    kin = ArmKinematics(cfg.task)
    rng = np.random.default_rng(0)
    for _ in range(20):
        goal = ReachTask(cfg.task).sample_goal(rng)
        q = kin.ik(goal, np.array(cfg.sim.home))
        assert np.all(q >= kin.safe_lower) and np.all(q <= kin.safe_upper)
        assert np.linalg.norm(kin.fk(q) - goal) < 0.01
    assert np.all(kin.safe_lower == kin.lower + cfg.task.joint_margin)
    kin.close()


def test_wrong_joint_names_and_rates_name_the_field():
    with pytest.raises(ConfigError, match="task.joint_names.*panda_joint1"):
        ArmKinematics(TaskConfig(robot="panda", joint_names=[f"lbr_iiwa_joint_{i}" for i in range(1, 8)]))
    with pytest.raises(ConfigError, match="task.ee_link"):
        ArmKinematics(TaskConfig(ee_link="no_such_link"))
    with pytest.raises(ConfigError, match="sim.physics_hz"):
        Arm(TaskConfig(control_rate_hz=7.0), SimConfig())
    with pytest.raises(ConfigError, match="sim.home"):
        Arm(TaskConfig(), SimConfig(home=[0.0, 0.1]))


def test_pd_arm_holds_before_a_command_then_tracks_the_target_within_limits():
    arm = make_arm()
    q0 = arm.state()[0]
    np.testing.assert_allclose(q0, HOME)
    held = settle(arm, 20)  # one second, no command
    assert np.abs(held[-1] - q0).max() < 1e-4
    target = HOME + np.array([0.4, -0.3, 0.3, 0.4, -0.3, 0.3, 0.5])
    arm.set_target(target)
    peak = 0.0
    for _ in range(40):
        arm.step_control_period()
        peak = max(peak, np.abs(arm.state()[1]).max())
    assert np.abs(arm.state()[0] - target).max() < 0.01
    assert peak <= arm.sim.max_velocity + 1e-6  # velocity limit respected while moving fast
    assert peak > 0.5 * arm.sim.max_velocity
    clipped = arm.set_target(arm.upper + 1.0)  # beyond the URDF limits: clipped to them
    np.testing.assert_allclose(clipped, arm.upper)
    arm.close()


def test_two_arms_in_one_process_do_not_interfere():
    a, b = make_arm(), make_arm()
    a.set_target(HOME + 0.3)
    settle(a, 10)
    settle(b, 10)
    assert np.abs(a.state()[0] - HOME).max() > 0.2
    assert np.abs(b.state()[0] - HOME).max() < 1e-4
    a.close()
    b.close()


def test_latency_delays_motion_by_exactly_k_periods():
    target = HOME + 0.2
    fast, slow = make_arm(), make_arm(latency_steps=2)
    fast.set_target(target)
    slow.set_target(target)
    q_fast, q_slow = settle(fast, 8), settle(slow, 8)
    assert np.abs(q_fast[0] - HOME).max() > 0.02
    for t in range(2):
        assert np.abs(q_slow[t] - HOME).max() < 1e-6
    for t in range(6):
        np.testing.assert_allclose(q_slow[t + 2], q_fast[t], atol=1e-9)
    fast.close()
    slow.close()


def test_friction_gain_scale_and_observation_noise_change_what_they_should():
    small_step = HOME.copy()
    small_step[0] += 0.01  # kp * 0.01 = 4 Nm: less than 5 Nm of friction
    plain, sticky = make_arm(), make_arm(friction_range=[5.0, 5.0])
    for arm in (plain, sticky):
        arm.set_target(small_step)
    assert abs(settle(plain, 20)[-1][0] - small_step[0]) < 1e-3
    assert abs(settle(sticky, 20)[-1][0] - HOME[0]) < 1e-6

    soft = make_arm(gain_scale_range=[0.25, 0.25])
    plain.reset()
    for arm in (plain, soft):
        arm.set_target(HOME + 0.2)
    err_plain = np.abs(settle(plain, 2)[-1] - (HOME + 0.2)).max()
    err_soft = np.abs(settle(soft, 2)[-1] - (HOME + 0.2)).max()
    assert err_soft > err_plain + 0.02

    noisy = make_arm(obs_noise=0.01)
    true_q = noisy.state()[0]
    samples = np.array([noisy.measured()[0] for _ in range(200)]) - true_q
    assert 0.007 < samples.std() < 0.013
    np.testing.assert_allclose(noisy.state()[0], true_q)
    for arm in (plain, sticky, soft, noisy):
        arm.close()


@pytest.mark.filterwarnings("ignore:.*Box observation space")  # unbounded observations are intended
def test_reach_env_interface_matches_the_task():
    cfg = Config()
    env = ArmEnv(cfg)
    check_env(env, skip_render_check=True)
    obs, info = env.reset(seed=5)
    obs_again, _ = env.reset(seed=5)
    np.testing.assert_array_equal(obs, obs_again)
    task = ReachTask(cfg.task)
    rng = np.random.default_rng(0)
    for _ in range(5):
        last_target = env.target.copy()
        obs, reward, terminated, truncated, info = env.step(rng.uniform(-2, 2, 7).astype(np.float32))
        assert env.observation_space.contains(obs)
        # the applied action is the one that produced the target, after the clips
        np.testing.assert_allclose(last_target + info["action"] * cfg.task.action_scale, info["target"], atol=1e-6)
        assert np.all(np.abs(info["action"]) <= 1.0)
        ee = env.kinematics.fk(info["q"])
        np.testing.assert_allclose(obs, task.observation(info["q"], env.arm.state()[1], ee, env.goal), atol=1e-6)
        assert reward == pytest.approx(task.reward(ee, env.goal))
    env.close()


def test_env_truncates_at_the_step_limit():
    cfg = Config(task=dataclasses.replace(TaskConfig(), max_episode_steps=7))
    env = ArmEnv(cfg)
    episode, info = collect_episode(env, lambda obs, info: np.zeros(7, np.float32), episode_id=3, seed=1)
    assert len(episode) == 7 and episode.truncated and not episode.terminated
    assert episode.observations.shape == (8, cfg.task.obs_dim)
    env.close()


@pytest.mark.parametrize("robot", ["kuka_iiwa", "panda"])
def test_scripted_expert_succeeds_in_at_least_90_percent_of_episodes(robot):
    env = ArmEnv(load_config(None, robot_overrides(robot)))
    episodes = list(expert_episodes(env, 20, noise=0.1, seed=100))
    success_rate = np.mean([e.success for e in episodes])
    print(f"expert success rate {success_rate:.2f}")
    assert success_rate >= 0.9
    assert len({tuple(np.round(e.observations[0, -6:-3], 4)) for e in episodes}) == 20  # 20 different goals
    env.close()


def test_demos_command_writes_one_readable_bag_per_episode(tmp_path, capsys):
    from tdmpc_ros.cli.main import main
    from tdmpc_ros.data.bags import read_episodes

    out = tmp_path / "demos"
    assert main(["demos", "--episodes", "3", "--out", str(out), "--storage", "sqlite3", "--seed", "4"]) == 0
    assert "expert success rate 1.000 (3/3)" in capsys.readouterr().out
    report = read_episodes([out], Config())
    assert len(report.episodes) == 3 and not report.skipped
    assert all(e.success and np.abs(e.actions).max() <= 1.0 for e in report.episodes)
    assert main(["demos", "--episodes", "3", "--out", str(out), "--seed", "4"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["demos", "--episodes", "2", "--out", str(out), "--seed", "5", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)  # one JSON object, no progress bar or summary line
    assert (result["success_rate"], result["episodes"], result["successes"]) == (1.0, 2, 2)
    assert result["mean_return"] < 0 and result["out"] == str(out)
