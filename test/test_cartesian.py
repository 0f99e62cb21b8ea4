"""Cartesian actions and the workspace box (control/action_rule.py), through the controller's tick and the sim
env; a model for another arm refused; the xArm6 with the scripted expert."""
from __future__ import annotations

import re
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tdmpc_ros.config import load_config
from tdmpc_ros.control.action_rule import ActionRule, box_distance
from tdmpc_ros.control.inputs import JointSample
from tdmpc_ros.control.loop import HOLD, ControlLoop
from tdmpc_ros.kinematics import ArmKinematics, robot_overrides

from test_control_loop import ScriptedPlanner, anything

pytestmark = pytest.mark.unit

BOX = {"workspace_low": [0.3, -0.4, 0.2], "workspace_high": [0.8, 0.4, 0.8]}
CFG = {space: load_config(None, {"task": {"action_space": space, **BOX}}) for space in ("joint", "cartesian")}
KIN = ArmKinematics(CFG["joint"].task)
LOW, HIGH = np.array(BOX["workspace_low"]), np.array(BOX["workspace_high"])
HOME = np.array(CFG["joint"].sim.home)
SCALE = CFG["joint"].task.action_scale


def rule(space: str) -> ActionRule:
    return ActionRule(CFG[space].task, KIN.safe_lower, KIN.safe_upper, KIN.fk, KIN.ik,
                      CFG[space].controller.max_tracking_error)


def test_a_cartesian_action_moves_the_end_effector_by_cartesian_scale_per_unit():
    r, cs = rule("cartesian"), CFG["cartesian"].task.cartesian_scale
    target, applied = r.apply([0.0, 1.0, -0.5], HOME, HOME, SCALE)
    moved = KIN.fk(target) - KIN.fk(HOME)
    np.testing.assert_allclose(moved, [0.0, cs, -0.5 * cs], atol=1e-3)
    np.testing.assert_allclose(applied, moved / cs, atol=1e-6)  # the step taken, in metres / cartesian_scale
    assert (np.abs(target - HOME) <= SCALE + 1e-12).all()
    big, applied = r.apply([1e30, np.nan, -np.inf], HOME, HOME, SCALE)  # clipped, NaN holds its axis
    assert np.isfinite(big).all() and (np.abs(big - HOME) <= SCALE + 1e-12).all() and np.isfinite(applied).all()


def test_the_box_shrinks_a_step_that_would_leave_it_and_holds_at_its_wall():
    r = rule("joint")
    # Start on the wall x = 0.8: the cartesian goal is kept inside, a joint step out is cut short.
    edge = KIN.ik(np.array([0.8, 0.0, 0.5]), HOME)
    wall = np.array(KIN.fk(edge))
    assert abs(wall[0] - 0.8) < 2e-3 and box_distance(wall, LOW, HIGH) < 2e-3
    for space in ("joint", "cartesian"):
        r = rule(space)
        base_outside = box_distance(KIN.fk(edge), LOW, HIGH)
        for action in ([1.0] * 7, [-1.0] * 7) if space == "joint" else ([1.0, 0, 0], [1.0, 1.0, 1.0]):
            target, _ = r.apply(action, edge, edge, SCALE)
            assert box_distance(KIN.fk(target), LOW, HIGH) <= base_outside + 1e-12


def test_a_joint_expert_acts_in_the_cartesian_space_by_the_move_its_step_makes():
    r = rule("cartesian")
    joint_action = np.array([0.0, 0.2, 0.0, 0.0, 0.0, 0.0, 0.0])
    cartesian_action = r.from_joint_action(joint_action, HOME, SCALE)
    target, _ = r.apply(cartesian_action, HOME, HOME, SCALE)  # the Cartesian action makes the expert's move
    np.testing.assert_allclose(KIN.fk(target), KIN.fk(HOME + joint_action * SCALE), atol=1e-3)


near_home = st.lists(st.floats(-0.6, 0.6), min_size=7, max_size=7).map(lambda d: (HOME + np.array(d)).tolist())
state = st.one_of(near_home, st.lists(anything, min_size=7, max_size=7))


@pytest.mark.parametrize("space", ["joint", "cartesian"])
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_safety_property_with_the_box_in_either_action_space(space, data):
    """Any state, any network output: every published target is inside the joint limits less the margin, within
    action_scale per joint of the previous target, and its end effector inside the box (or, from a pose
    outside it, no farther from it)."""
    dim = CFG[space].task.action_dim
    actions = data.draw(st.lists(st.lists(anything, min_size=dim, max_size=dim), min_size=1, max_size=5))
    positions = data.draw(st.lists(state, min_size=1, max_size=5))
    loop = ControlLoop(CFG[space], KIN.safe_lower, KIN.safe_upper, KIN.fk, lockstep=True, ik=KIN.ik)
    loop.set_planner(ScriptedPlanner(actions, dim=dim), 1)
    loop.set_goal([0.5, 0.0, 0.5])
    names = CFG[space].task.joint_names
    for q in positions:
        before, episode = loop.episode.last_target, loop.episode_id
        result = loop.tick(JointSample(names, list(map(float, q)), [0.0] * 7, time.monotonic()), time.monotonic())
        if result.target is None or result.mode == HOLD:
            continue
        target = np.asarray(result.target)
        reference = before if loop.episode_id == episode and before is not None else \
            np.clip(np.asarray(q, float), KIN.safe_lower, KIN.safe_upper)
        assert np.isfinite(target).all()
        assert (target >= KIN.safe_lower).all() and (target <= KIN.safe_upper).all()
        assert (np.abs(target - reference) <= SCALE * (1 + 1e-9)).all()
        assert box_distance(KIN.fk(target), LOW, HIGH) <= box_distance(KIN.fk(reference), LOW, HIGH) + 1e-9
        if result.transition is not None:
            assert np.isfinite(result.transition.action).all() and result.transition.action.shape == (dim,)
    loop.close()


def test_a_model_for_the_iiwa_is_refused_on_the_xarm6(tmp_path, capsys):
    from tdmpc_ros.control.models import ModelRejected, load_model
    from tdmpc_ros.learning.agent import Agent
    from tdmpc_ros.learning.checkpoint import load_checkpoint, save_checkpoint

    iiwa = load_config(None, {"agent": {"compile": False}})
    path = tmp_path / "iiwa.pt"
    save_checkpoint(path, Agent(iiwa), {"env_steps": 0})
    arm = load_checkpoint(path).meta["arm"]
    assert arm["joint_names"] == iiwa.task.joint_names and arm["ee_link"] == "lbr_iiwa_link_7"
    assert len(arm["urdf_sha256"]) == 64
    xarm6 = load_config(None, robot_overrides("xarm6"))
    refusal = r"iiwa.pt: model for 7 joints \[lbr_iiwa_joint_1 lbr_iiwa_joint_2 .*\] .*this arm has 6 \[joint1 joint2 " \
              r"joint3 joint4 joint5 joint6\]"
    with pytest.raises(ModelRejected, match=refusal):
        load_model(str(path), None, xarm6)
    from tdmpc_ros.cli.main import main

    assert main(["eval", "--checkpoint", str(path), "--robot", "xarm6", "--episodes", "1"]) == 2  # as a CLI error
    assert re.search(refusal, capsys.readouterr().err)


@pytest.mark.parametrize("space", ["joint", "cartesian"])
def test_the_xarm6_reaches_with_the_scripted_expert(space):
    from tdmpc_ros.sim.env import ArmEnv
    from tdmpc_ros.sim.expert import expert_episodes

    overrides = robot_overrides("xarm6")
    overrides["task"]["action_space"] = space
    env = ArmEnv(load_config(None, overrides))
    assert env.action_space.shape == ((3,) if space == "cartesian" else (6,))
    assert env.observation_space.shape == (21,)
    episodes = list(expert_episodes(env, 6, noise=0.0, seed=3))
    assert all(e.actions.shape[1] == env.action_space.shape[0] for e in episodes)
    assert sum(e.terminated for e in episodes) >= 5, [len(e.actions) for e in episodes]
    env.close()


def test_demos_for_the_xarm6_in_cartesian_actions_from_the_cli(tmp_path, capsys):
    import json

    from tdmpc_ros.cli.main import main
    from tdmpc_ros.data.bags import read_episodes

    out = tmp_path / "demos"
    assert main(["demos", "--robot", "xarm6", "--action-space", "cartesian", "--episodes", "2", "--out", str(out),
                 "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["episodes"] == 2
    overrides = robot_overrides("xarm6")
    overrides["task"]["action_space"] = "cartesian"
    episodes = read_episodes([out], load_config(None, overrides)).episodes
    assert len(episodes) == 2 and {e.actions.shape[1] for e in episodes} == {3}
    assert {e.observations.shape[1] for e in episodes} == {21}


def test_hold_orientation_keeps_the_tool_pointing_as_it_was():
    """20 cartesian steps sideways and down: position-only IK lets the wrist turn; task.hold_orientation keeps
    the end effector's orientation (a pusher stays pointing down) while it moves as far."""
    def turned_and_moved(hold: bool) -> tuple[float, float]:
        cfg = load_config(None, {"task": {"action_space": "cartesian", "hold_orientation": hold}})
        r = ActionRule(cfg.task, KIN.safe_lower, KIN.safe_upper, KIN.fk, KIN.ik, cfg.controller.max_tracking_error)
        q = HOME
        for _ in range(20):
            q, _ = r.apply([0.0, 1.0, -1.0], q, q, SCALE)
        start, end = KIN.pose(HOME), KIN.pose(q)
        angle = 2 * np.arccos(min(1.0, abs(float(np.dot(start[1], end[1])))))
        return angle, float(np.linalg.norm(end[0] - start[0]))

    free_turn, free_move = turned_and_moved(False)
    held_turn, held_move = turned_and_moved(True)
    assert held_turn < 0.02 < 0.1 < free_turn, (held_turn, free_turn)
    assert held_move > 0.9 * free_move > 0.2


def test_bench_action_walks_each_space_into_the_box(capsys):
    """The benchmark's walk meets the box (steps cut short) in every space, and every target stays inside."""
    import json

    from tdmpc_ros.cli.main import main

    assert main(["bench", "action", "--ticks", "200"]) == 0
    result = json.loads(capsys.readouterr().out.splitlines()[-1])
    for space in ("joint", "cartesian", "cartesian_held"):
        assert result[space]["steps_cut_short"] > 0.2 and result[space]["apply_us"]["p50"] > 0, (space, result)
