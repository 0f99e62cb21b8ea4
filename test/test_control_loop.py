"""The controller's tick without ROS: joint-state faults, deadline fallback, transitions, and the safety property."""
from __future__ import annotations

import os
import threading
import time

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from tdmpc_ros.config import Config, ConfigError, load_config
from tdmpc_ros.control.loop import DISABLED, HOLD, PLANNING, POLICY_FALLBACK, ControlLoop
from tdmpc_ros.control.priority import realtime_priority
from tdmpc_ros.control.inputs import JointSample
from tdmpc_ros.kinematics import ArmKinematics
from tdmpc_ros.control.actions import apply_action

pytestmark = pytest.mark.unit

CFG = Config()
NAMES = CFG.task.joint_names
KIN = ArmKinematics(CFG.task)
SCALE = CFG.task.action_scale


class ScriptedPlanner:
    """Stands in for the network's output: whatever actions the test feeds, NaN and inf included."""

    def __init__(self, actions, delay_s: float = 0.0, dim: int = len(NAMES)):
        self.actions = list(actions)
        self.delay_s, self.dim = delay_s, dim
        self.resets = 0

    def _next(self):
        return np.asarray(self.actions.pop(0) if self.actions else np.zeros(self.dim), np.float64)

    def plan(self, obs, eval_mode=False):
        time.sleep(self.delay_s)
        return self._next()

    def policy_action(self, obs, eval_mode=False):
        return np.full(self.dim, 0.5)

    def reset(self):
        self.resets += 1


def make_loop(planner=None, reset_arm=lambda: False, **controller):
    cfg = Config()
    for key, value in controller.items():
        setattr(cfg.controller, key, value)
    loop = ControlLoop(cfg, KIN.safe_lower, KIN.safe_upper, KIN.fk, reset_arm=reset_arm)
    if planner is not None:
        loop.set_planner(planner, 1)
    loop.set_goal([0.5, 0.0, 0.5])
    return loop


def sample(q, qd=None, names=NAMES, received=None):
    qd = np.zeros(len(q)) if qd is None else qd
    return JointSample(list(names), list(map(float, q)), list(map(float, qd)),
                       time.monotonic() if received is None else received)


HOME = np.array(CFG.sim.home)


def test_plans_and_emits_transitions_with_applied_actions():
    loop = make_loop(ScriptedPlanner([np.full(7, 3.0), np.full(7, -0.5)]))
    first = loop.tick(sample(HOME), time.monotonic())
    assert first.mode == PLANNING and first.transition is None
    np.testing.assert_allclose(first.target, np.clip(HOME, KIN.safe_lower, KIN.safe_upper) + SCALE)
    second = loop.tick(sample(first.target), time.monotonic())
    t = second.transition
    assert t is not None and t.step == 0 and t.episode_id == loop.episode_id
    np.testing.assert_allclose(t.action, 1.0)  # 3.0 was clipped: the learner sees what was applied
    assert t.reward == pytest.approx(-np.linalg.norm(np.array([0.5, 0, 0.5]) - KIN.fk(first.target)), abs=1e-6)


@pytest.mark.parametrize("bad, reason", [
    (lambda: sample(HOME, received=time.monotonic() - 5.0), "stale"),
    (lambda: sample(HOME[:6], names=NAMES[:6]), "lacks joints"),
    (lambda: sample(np.where(np.arange(7) == 2, np.nan, HOME)), "NaN"),
    (lambda: sample(np.append(HOME, 0.0), names=NAMES + [NAMES[0]]), "duplicate"),
    (lambda: sample(HOME + 10.0), "outside the joint limits"),
    (lambda: sample(HOME, qd=np.full(7, 1e9)), "velocity"),
])
def test_bad_state_holds_reports_once_and_recovers(bad, reason):
    loop = make_loop(ScriptedPlanner([]))
    good = loop.tick(sample(HOME), time.monotonic())
    logs = []
    for _ in range(5):
        held = loop.tick(bad(), time.monotonic())
        assert held.mode == HOLD
        np.testing.assert_array_equal(held.target, good.target)
        logs += held.log
    assert len(logs) == 1 and reason in logs[0]
    episode = loop.episode_id
    resumed = loop.tick(sample(good.target), time.monotonic())
    assert resumed.mode == PLANNING and "resuming" in resumed.log[0]
    assert loop.episode_id == episode + 1  # the interrupted episode is closed, not stitched


class BlockedPlanner(ScriptedPlanner):
    """A plan that finishes only when the test releases it: deadlines are then decided by event order."""

    def __init__(self, actions):
        super().__init__(actions)
        self.release = threading.Event()
        self.finished = threading.Event()

    def plan(self, obs, eval_mode=False):
        self.release.wait()
        self.finished.set()
        return self._next()


def test_deadline_fallback_uses_policy_prior_and_counts_misses():
    planner = BlockedPlanner([np.full(7, 1.0)])
    loop = make_loop(planner, plan_budget=0.1)
    result = loop.tick(sample(HOME), time.monotonic())
    assert not planner.finished.is_set()  # the tick returned while the plan was still running
    assert result.mode == POLICY_FALLBACK and loop.deadline_misses == 1
    np.testing.assert_allclose(result.target - np.clip(HOME, KIN.safe_lower, KIN.safe_upper), 0.5 * SCALE)
    assert loop.tick(sample(HOME), time.monotonic()).mode == POLICY_FALLBACK  # planner still busy
    assert loop.deadline_misses == 2
    planner.release.set()
    loop.close()


def test_an_absolute_deadline_bounds_the_wait_for_the_plan():
    planner = BlockedPlanner([np.full(7, 1.0), np.full(7, -1.0)])
    loop = make_loop(planner)
    start = time.monotonic()
    result = loop.tick(sample(HOME), start, deadline=start)  # due at once: the plan cannot be ready
    assert result.mode == POLICY_FALLBACK and loop.deadline_misses == 1 and not planner.finished.is_set()
    planner.release.set()
    assert planner.finished.wait(10.0)
    # The late plan is discarded; a deadline that leaves room gets the next one.
    nxt = loop.tick(sample(result.target), time.monotonic(), deadline=time.monotonic() + 10.0)
    assert nxt.mode == PLANNING and loop.deadline_misses == 1
    np.testing.assert_allclose(nxt.target - result.target, -SCALE)  # the second plan's action, not the first's
    loop.close()


def test_planning_runs_at_normal_priority_under_a_real_time_ticking_thread():
    class PolicyRecorder(ScriptedPlanner):
        def plan(self, obs, eval_mode=False):
            self.policy = os.sched_getscheduler(0)  # the calling thread's policy on Linux
            return super().plan(obs, eval_mode)

    planner = PolicyRecorder([])
    seen = {}

    def ticking_thread():
        seen["fifo"] = realtime_priority(10)
        if seen["fifo"] is None:
            seen["tick_policy"] = os.sched_getscheduler(0)
            loop = make_loop(planner)  # its worker thread is started from this real-time thread
            seen["mode"] = loop.tick(sample(HOME), time.monotonic(), deadline=time.monotonic() + 5.0).mode
            loop.close()

    thread = threading.Thread(target=ticking_thread)
    thread.start()
    thread.join()
    if seen["fifo"] is not None:
        pytest.skip(seen["fifo"])
    assert seen["tick_policy"] == os.SCHED_FIFO and seen["mode"] == PLANNING
    assert planner.policy == os.SCHED_OTHER
    with pytest.raises(ValueError, match="1..99"):
        realtime_priority(0)


def test_hold_keeps_the_last_sent_target_across_a_new_episode():
    loop = make_loop(ScriptedPlanner([np.full(7, 1.0)]))
    sent = loop.tick(sample(HOME), time.monotonic()).target
    loop.set_goal([0.4, 0.2, 0.5])  # a new episode re-bases the next step on the measured positions...
    held = loop.tick(sample(np.where(np.arange(7) == 0, np.nan, HOME)), time.monotonic())
    np.testing.assert_array_equal(held.target, sent)  # ...but a fault still holds what was last sent


def test_no_episode_starts_before_there_is_a_model():
    loop = make_loop()
    for _ in range(CFG.task.max_episode_steps + 5):
        result = loop.tick(sample(HOME), time.monotonic())
        assert result.mode == HOLD and result.transition is None and result.ended is None
    np.testing.assert_allclose(result.target, np.clip(HOME, KIN.safe_lower, KIN.safe_upper))  # holding, real time
    loop.set_planner(ScriptedPlanner([]), 1)
    loop.tick(sample(HOME), time.monotonic())
    t = loop.tick(sample(HOME), time.monotonic()).transition
    assert (t.episode_id, t.step) == (0, 0)  # the first episode is the first one controlled


def test_restart_disable_and_faults_end_the_episode_and_the_next_starts_from_the_measured_joints():
    loop = make_loop(ScriptedPlanner([np.full(7, 1.0)] * 10))
    first = loop.tick(sample(HOME), time.monotonic())
    loop.tick(sample(first.target), time.monotonic())
    loop.restart()
    again = loop.tick(sample(first.target + 0.01), time.monotonic())
    assert loop.episode_id == 1 and again.transition is None
    np.testing.assert_allclose(again.target, np.clip(first.target + 0.01 + SCALE, KIN.safe_lower, KIN.safe_upper))
    loop.set_enabled(False)
    assert loop.tick(sample(HOME), time.monotonic()).mode == DISABLED
    loop.set_enabled(True)
    assert loop.tick(sample(HOME), time.monotonic()).transition is None and loop.episode_id == 2


def test_live_settings_are_checked_and_take_effect_at_the_next_tick():
    loop = make_loop(ScriptedPlanner([np.full(7, 1.0)] * 3))
    first = loop.tick(sample(HOME), time.monotonic()).target
    loop.set_action_scale(0.01)
    second = loop.tick(sample(first), time.monotonic()).target
    np.testing.assert_allclose(second - first, 0.01)
    for bad in (0.0, -0.05, np.nan, np.inf, True, "0.1"):
        with pytest.raises(ConfigError, match="task.action_scale"):
            loop.set_action_scale(bad)
    with pytest.raises(ConfigError, match="exploration_noise"):
        loop.set_exploration_noise(-1.0)
    with pytest.raises(ConfigError, match="eval_mode"):
        loop.set_eval_mode("yes")
    assert loop.action_scale == 0.01
    loop.set_exploration_noise(0.5)
    loop.set_eval_mode(True)  # eval mode: no exploration noise
    np.testing.assert_allclose(loop.tick(sample(second), time.monotonic()).target - second, 0.01)


finite = st.floats(-1e6, 1e6)
anything = st.one_of(finite, st.just(np.nan), st.just(np.inf), st.just(-np.inf), st.floats(-1e300, 1e300))


any_inputs = given(actions=st.lists(st.lists(anything, min_size=7, max_size=7), min_size=1, max_size=6),
                   positions=st.lists(st.lists(anything, min_size=7, max_size=7), min_size=1, max_size=6),
                   noise=st.sampled_from([0.0, 0.3]))


@settings(max_examples=300, deadline=None)  # test_safety_thorough.py draws 5000 in the slow tier
@any_inputs
def test_safety_property_any_input_keeps_targets_in_limits_and_steps(actions, positions, noise):
    check_targets_in_limits_and_steps(actions, positions, noise)


def check_targets_in_limits_and_steps(actions, positions, noise) -> None:
    loop = make_loop(ScriptedPlanner(actions), exploration_noise=noise)
    sent = None
    for q in positions:
        before, episode = loop.episode.last_target, loop.episode_id
        result = loop.tick(sample(np.asarray(q)), time.monotonic())
        if loop.episode_id != episode:
            before = None  # a new episode starts from the measured positions, by design
        if result.target is None:
            continue
        target = np.asarray(result.target)
        assert np.isfinite(target).all()
        assert (target >= KIN.safe_lower - 1e-12).all() and (target <= KIN.safe_upper + 1e-12).all()
        reference = before if before is not None else np.clip(np.asarray(q, float), KIN.safe_lower, KIN.safe_upper)
        if result.mode != HOLD:
            assert (np.abs(target - reference) <= SCALE + 1e-9).all()
        elif sent is not None:
            np.testing.assert_array_equal(target, sent)  # a hold repeats the last target sent
        sent = target


@settings(max_examples=300, deadline=None)
@given(scale=st.floats(1e-6, np.pi), tracking=st.floats(1e-6, np.pi), margin=st.floats(0.0, 0.5),
       noise=st.floats(0.0, 10.0), rate=st.floats(0.5, 1000.0),
       actions=st.lists(st.lists(anything, min_size=7, max_size=7), min_size=1, max_size=4),
       positions=st.lists(st.lists(anything, min_size=7, max_size=7), min_size=1, max_size=4))
def test_safety_property_holds_for_every_config_load_config_accepts(scale, tracking, margin, noise, rate, actions,
                                                                    positions):
    """The same property over the configs themselves: any accepted action scale, tracking bound, margin,
    exploration noise and rate."""
    try:
        cfg = load_config(overrides={"task": {"action_scale": scale, "joint_margin": margin, "control_rate_hz": rate},
                                     "controller": {"max_tracking_error": tracking, "exploration_noise": noise}})
    except ConfigError as exc:
        assert "velocity limit" in str(exc)  # a step faster than a joint may move: refused, as it should be
        assume(False)
    lower, upper = KIN.lower + margin, KIN.upper - margin
    loop = ControlLoop(cfg, lower, upper, KIN.fk, lockstep=True)
    loop.set_planner(ScriptedPlanner(actions), 1)
    loop.set_goal([0.5, 0.0, 0.5])
    for q in positions:
        before, episode = loop.episode.last_target, loop.episode_id
        result = loop.tick(sample(np.asarray(q)), time.monotonic())
        if result.target is None or result.mode == HOLD:
            continue
        target = np.asarray(result.target)
        reference = before if loop.episode_id == episode and before is not None else \
            np.clip(np.asarray(q, float), lower, upper)
        assert np.isfinite(target).all() and (target >= lower).all() and (target <= upper).all()
        assert (np.abs(target - reference) <= scale * (1 + 1e-9)).all()
        assert np.isfinite(result.transition.action).all() if result.transition else True


@pytest.mark.parametrize("section, name, value", [
    ("task", "action_scale", np.nan), ("task", "action_scale", -0.05), ("controller", "max_tracking_error", -0.2),
    ("task", "control_rate_hz", 0.0), ("controller", "plan_budget", np.inf)])
def test_the_loop_refuses_a_config_changed_after_loading(section, name, value):
    """A path around load_config (code that edits a Config) still cannot reach the targets."""
    cfg = Config()
    setattr(getattr(cfg, section), name, value)
    with pytest.raises(ConfigError, match=f"{section}.{name}"):
        ControlLoop(cfg, KIN.safe_lower, KIN.safe_upper, KIN.fk)
    with pytest.raises(ConfigError, match="safe joint limits"):
        ControlLoop(Config(), KIN.safe_upper, KIN.safe_lower, KIN.fk)


def test_apply_action_refuses_a_non_positive_scale():
    for scale in (np.nan, 0.0, -0.05):
        with pytest.raises(ConfigError, match="action_scale"):
            apply_action(np.ones(7), HOME, HOME, KIN.safe_lower, KIN.safe_upper, scale)


def test_a_margin_wider_than_a_joint_range_is_refused_naming_the_joints():
    from tdmpc_ros.config import TaskConfig

    with pytest.raises(ConfigError, match=r"task.joint_margin 2.5 rad leaves no range for joints \[.lbr_iiwa_joint_2"):
        ArmKinematics(TaskConfig(joint_margin=2.5))
