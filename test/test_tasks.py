"""The task interface (tdmpc_ros/tasks/): loading by name, sparse and dense rewards, push's observation, scene and
expert in the sim, sensor checks; and the user-task example of docs/tasks.md run by its dotted name over ROS."""
from __future__ import annotations

import math

import numpy as np
import pytest

from tdmpc_ros.config import Config, ConfigError, load_config
from tdmpc_ros.control.inputs import SensorSample, read_sensed
from tdmpc_ros.kinematics import pybullet as p
from tdmpc_ros.tasks import make_task, task_config
from tdmpc_ros.tasks.push import OBJECT, PushTask, cube_xyz_yaw

HOVER = "tdmpc_ros.tasks.examples.hover:HoverTask"
PUSH = task_config("push")


def pose(xyz, yaw=0.0) -> np.ndarray:
    return np.array([*xyz, *p.getQuaternionFromEuler([0.0, 0.0, yaw])])


@pytest.mark.unit
def test_task_name_loads_built_in_and_dotted_classes_and_bad_names_are_named():
    assert type(make_task(Config().task)).__name__ == "ReachTask"
    assert isinstance(make_task(PUSH.task), PushTask)
    hover = load_config(None, {"task": {"name": HOVER}})
    assert type(make_task(hover.task)).__name__ == "HoverTask" and hover.model.obs_dim == 2 * 7 + 9
    assert PUSH.model.obs_dim == 2 * 7 + 20
    for name, words in [("no_such_module:Task", "cannot load 'no_such_module:Task'"),
                        ("tdmpc_ros.tasks.push:Nope", "cannot load"),
                        ("tdmpc_ros.config:Config", "not a subclass of tdmpc_ros.tasks.Task"),
                        ("grasp", "neither a built-in task"), ("bad name!", "task.name")]:
        with pytest.raises(ConfigError, match=words):
            load_config(None, {"task": {"name": name}})


@pytest.mark.unit
def test_sparse_reward_is_0_within_the_goal_and_minus_1_otherwise_for_reach_and_push():
    goal = np.array([0.7, 0.0, 0.025])
    reach = make_task(load_config(None, {"task": {"reward": "sparse"}}).task)
    radius = reach.cfg.success_radius
    assert reach.reward(goal + [0, 0, 0.9 * radius], goal) == 0.0
    assert reach.reward(goal + [0, 0, 1.1 * radius], goal) == -1.0
    dense = make_task(Config().task)
    assert dense.reward(goal + [0.3, 0.4, 0.0], goal) == pytest.approx(-0.5)

    push = make_task(task_config("push", overrides={"task": {"reward": "sparse"}}).task)
    ee = np.array([0.5, 0.0, 0.1])
    near, far = {OBJECT: pose(goal + [0.02, 0, 0])}, {OBJECT: pose(goal + [0.04, 0, 0])}
    assert push.cfg.success_radius == 0.03
    assert push.reward(ee, goal, near) == 0.0 and push.reward(ee, goal, far) == -1.0
    shaped = make_task(task_config("push", overrides={"task": {"approach_offset": 0.0}}).task)  # to the cube
    cube = goal + [0.04, 0, 0]
    expected = -(PUSH.task.ee_object_weight * np.linalg.norm(cube - ee) + PUSH.task.object_goal_weight * 0.04)
    assert shaped.reward(ee, goal, far) == pytest.approx(expected)
    # task.approach_offset: the end effector's term is to a point behind the cube, away from the goal (+x here)
    behind = make_task(task_config("push", overrides={"task": {"approach_offset": 0.08}}).task)
    goal_term = -PUSH.task.object_goal_weight * 0.04
    assert behind.reward(cube + [0.08, 0, 0], goal, far) == pytest.approx(goal_term)
    assert behind.reward(cube - [0.08, 0, 0], goal, far) == \
        pytest.approx(goal_term - 0.16 * behind.cfg.ee_object_weight)
    at_goal = {OBJECT: pose(goal)}  # no line to follow: the cube itself
    assert behind.reward(goal + [0, 0, 0.1], goal, at_goal) == pytest.approx(-0.1 * behind.cfg.ee_object_weight)


@pytest.mark.unit
def test_sparse_episodes_from_the_sim_pay_0_only_on_the_held_steps_within_the_goal():
    """The episode steps every consumer shares (sim env here; controller and raw rebuild alike) with sparse
    reward: a successful expert episode ends on success_hold_steps zeros, every step before them within the goal
    or not, pays 0 only when within."""
    from tdmpc_ros.sim.env import ArmEnv
    from tdmpc_ros.sim.expert import expert_episodes

    cfg = load_config(None, {"task": {"reward": "sparse"}})
    env = ArmEnv(cfg)
    episode = next(expert_episodes(env, 1, noise=0.0, seed=2))
    env.close()
    hold = cfg.task.success_hold_steps
    assert episode.success and set(episode.rewards.tolist()) == {-1.0, 0.0}
    np.testing.assert_array_equal(episode.rewards[-hold:], 0.0)
    assert episode.rewards[0] == -1.0  # starts outside the goal


@pytest.mark.unit
def test_push_observation_holds_the_arm_the_cube_and_their_scaled_differences():
    task = make_task(PUSH.task)
    assert task.cfg.approach_offset == pytest.approx(0.08)
    q, qd = np.linspace(-1, 1, 7), np.full(7, 2.0)
    ee, goal, cube = np.array([0.5, 0.1, 0.2]), np.array([0.7, -0.1, 0.025]), np.array([0.6, 0.0, 0.025])
    obs = task.observation(q, qd, ee, goal, {OBJECT: pose(cube, yaw=0.3)})
    assert obs.shape == (task.obs_dim,) and obs.dtype == np.float32
    np.testing.assert_allclose(obs[:7], q, atol=1e-6)
    np.testing.assert_allclose(obs[7:14], 0.1 * qd, atol=1e-6)
    np.testing.assert_allclose(obs[14:17], ee, atol=1e-6)
    np.testing.assert_allclose(obs[17:20], goal, atol=1e-6)
    np.testing.assert_allclose(obs[20:23], cube, atol=1e-6)
    np.testing.assert_allclose(obs[23:25], [math.sin(1.2), math.cos(1.2)], atol=1e-6)
    np.testing.assert_allclose(obs[25:28], 10 * (cube - ee), atol=1e-5)
    np.testing.assert_allclose(obs[28:31], 10 * (goal - cube), atol=1e-5)
    # the approach point: 8 cm behind the cube on the goal's line through it (the goal is at +x, -y of the cube)
    approach = cube + 0.08 * np.array([-1.0, 1.0, 0.0]) / math.sqrt(2)
    np.testing.assert_allclose(obs[31:34], 10 * (approach - ee), atol=1e-5)
    assert cube_xyz_yaw(pose(cube, yaw=-2.0))[1] == pytest.approx(-2.0)


@pytest.mark.unit
def test_push_scene_draws_the_cubes_mass_friction_and_start_within_the_config_ranges():
    from tdmpc_ros.sim.arm import Arm

    arm = Arm(PUSH.task, PUSH.sim, np.random.default_rng(0))
    masses, frictions, starts = set(), set(), []
    for _ in range(8):
        arm.reset()
        info = p.getDynamicsInfo(arm.scene.cube, -1, physicsClientId=arm.client)
        masses.add(round(info[0], 6))
        frictions.add(round(info[1], 6))
        starts.append(arm.sensed()[OBJECT][:3])
    arm.close()
    low, high = PUSH.task.object_start_low, PUSH.task.object_start_high
    assert len(masses) == 8 and all(PUSH.sim.object_mass_range[0] <= m <= PUSH.sim.object_mass_range[1] for m in masses)
    assert len(frictions) == 8 and all(PUSH.sim.object_friction_range[0] <= f <= PUSH.sim.object_friction_range[1]
                                       for f in frictions)
    starts = np.array(starts)
    assert np.all(starts[:, :2] >= low) and np.all(starts[:, :2] <= high)
    np.testing.assert_allclose(starts[:, 2], PUSH.task.object_size / 2, atol=1e-6)


@pytest.mark.unit
def test_push_cube_rests_on_the_table_until_the_arm_pushes_it():
    from tdmpc_ros.sim.env import ArmEnv

    env = ArmEnv(PUSH)
    _, info = env.reset(seed=3)
    start = info["sensed"][OBJECT][:3].copy()
    for _ in range(20):  # the arm holds its reset pose, far above the cube
        _, _, _, _, info = env.step(np.zeros(7, np.float32))
    np.testing.assert_allclose(info["sensed"][OBJECT][:3], start, atol=1e-4)  # no drift, no sinking, no falling
    env.close()


@pytest.mark.unit
def test_push_expert_succeeds_in_at_least_80_percent_of_episodes():
    from tdmpc_ros.sim.env import ArmEnv
    from tdmpc_ros.sim.expert import expert_episodes

    env = ArmEnv(PUSH)
    episodes = list(expert_episodes(env, 20, noise=0.1, seed=7))
    env.close()
    rate = np.mean([e.success for e in episodes])
    print(f"push expert success rate {rate:.2f}, mean length {np.mean([len(e) for e in episodes]):.1f}")
    assert rate >= 0.8
    moved = [np.linalg.norm(e.observations[-1, 20:22] - e.observations[0, 20:22]) for e in episodes]
    assert min(moved) > 0.05  # every goal is away from the start: the cube really travels


@pytest.mark.unit
def test_demos_command_records_the_push_experts_episodes(tmp_path, capsys):
    import json

    from tdmpc_ros.cli.main import main
    from tdmpc_ros.data.bags import read_episodes

    assert main(["demos", "--task", "push", "--episodes", "2", "--out", str(tmp_path), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert (result["task"], result["episodes"], result["successes"]) == ("push", 2, 2)
    report = read_episodes([tmp_path], PUSH)
    assert len(report.episodes) == 2 and report.episodes[0].observations.shape[1] == PUSH.model.obs_dim


@pytest.mark.unit
def test_sensor_samples_missing_stale_old_stamped_or_bad_are_faults():
    sensors = make_task(PUSH.task).sensors
    good = SensorSample(pose([0.6, 0, 0.025]), received=10.0, stamp_ns=500)
    assert set(read_sensed(sensors, {OBJECT: good}, now=10.1, timeout=0.25)) == {OBJECT}
    assert read_sensed(sensors, {}, 10.1, 0.25).startswith("object_pose missing")
    assert read_sensed(sensors, {OBJECT: good}, 10.3, 0.25).startswith("object_pose stale: 0.300 s old")
    assert read_sensed(sensors, {OBJECT: good}, 99.0, 0.25, stamp_ns=500) == {OBJECT: good.values}  # lockstep: stamps
    assert "stale" in read_sensed(sensors, {OBJECT: good}, 10.0, 0.25, stamp_ns=600)
    bad = SensorSample("holds NaN/inf: [nan]", received=10.0)
    assert read_sensed(sensors, {OBJECT: bad}, 10.0, 0.25) == "object_pose unusable: holds NaN/inf: [nan]"


@pytest.mark.ros
def test_user_task_by_dotted_name_runs_a_lockstep_episode_over_ros(tmp_path, rclpy_context):
    """docs/tasks.md's example, named by `task.name`, drives the sim arm and the controller as launched: every
    transition carries its observation and its reward as the task defines them."""
    import rclpy
    from ros_helpers import CHEAP_PLANNER, CONFIG, spin_until, untrained_checkpoint

    from tdmpc_ros import topics
    from tdmpc_ros.cli.launch import Launcher
    from tdmpc_ros.msg import Transition
    from tdmpc_ros.nodes import qos
    from tdmpc_ros.tasks.examples.hover import HEIGHT

    overrides = {"task.name": HOVER, "task.max_episode_steps": 6, **CHEAP_PLANNER}
    cfg = load_config(CONFIG, {"task": {"name": HOVER}})
    untrained_checkpoint(tmp_path / "hover.pt", cfg)
    transitions = []
    log_path = tmp_path / "launch.log"
    with open(log_path, "w") as log:
        launcher = Launcher({"learn": "false", "lockstep": "true", "config": str(CONFIG)}, out=log,
                            overrides={**overrides, "controller.model_path": str(tmp_path / "hover.pt")})
        node = rclpy.create_node("probe", context=rclpy_context)
        node.create_subscription(Transition, topics.TRANSITIONS, transitions.append, qos.TRANSITIONS)
        launcher.start()

        def whole_episode():  # the first ended episode this probe heard from its step 0 (it may match late)
            started = {m.episode_id for m in transitions if m.step == 0}
            ended = [m.episode_id for m in transitions if m.truncated or m.terminated]
            return next((e for e in ended if e in started), None)

        try:
            assert spin_until(node, lambda: whole_episode() is not None, 120), log_path.read_text()[-3000:]
        finally:
            codes = launcher.shutdown()
            node.destroy_node()
    assert set(codes.values()) == {0}, codes
    first = [m for m in transitions if m.episode_id == whole_episode()]
    assert [m.step for m in first] == list(range(6)) and first[-1].truncated
    for m in transitions:
        obs = np.asarray(m.next_observation)
        assert obs.shape == (cfg.task.obs_dim,)
        ee, goal = obs[14:17], obs[17:20]
        np.testing.assert_allclose(obs[20:23], goal + [0, 0, HEIGHT] - ee, atol=1e-5)  # the task's own entries
        assert m.reward == pytest.approx(-np.linalg.norm(goal + [0, 0, HEIGHT] - ee), abs=1e-5)
