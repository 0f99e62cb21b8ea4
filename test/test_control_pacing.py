"""When the controller ticks, sends and starts episodes, without DDS: the real-time grid, lockstep pacing, the
next episode after one ends (with and without the arm's reset) and the tick thread's handoff, all on an
injected clock (no sleeps, no wall-clock bounds)."""
from __future__ import annotations

import numpy as np
import pytest

from tdmpc_ros.config import Config
from tdmpc_ros.control.episode import GIVE_UP, READY, WAIT, ResetHandshake
from tdmpc_ros.control.inputs import JointSample
from tdmpc_ros.control.loop import HOLD, PLANNING, ControlLoop
from tdmpc_ros.control.tick_thread import LockstepPacer, TickSchedule, TickThread
from test_control_loop import HOME, KIN, NAMES, ScriptedPlanner, make_loop, sample

pytestmark = pytest.mark.unit

CFG = Config()
PERIOD = 1.0 / CFG.task.control_rate_hz
BUDGET = CFG.controller.plan_budget * PERIOD
TIMEOUT = CFG.controller.state_timeout
GOAL = np.array([0.5, 0.0, 0.5])


def test_real_time_ticks_keep_the_grid_and_send_at_a_fixed_phase():
    schedule = TickSchedule(PERIOD, BUDGET, start=100.0)
    assert schedule.publish_at(100.0) == 100.0 + BUDGET
    assert schedule.next_due(100.0, now=100.0 + BUDGET) == pytest.approx(100.0 + PERIOD)  # on time: the next point
    # a tick that ended 3.5 periods after it was due skips the 3 grid points it missed, not ticking back to back
    assert schedule.next_due(100.0, now=100.0 + 3.5 * PERIOD) == pytest.approx(100.0 + 4 * PERIOD)
    assert schedule.skipped == 3


def state(received: float, stamp_s: float = 0.0) -> JointSample:
    """A joint state received at `received`, stamped `stamp_s` of the arm's time (0: unstamped)."""
    return JointSample(NAMES, list(HOME), [0.0] * len(NAMES), received, int(stamp_s * 1e9))


def test_lockstep_ticks_on_each_new_state_and_holds_the_world_for_the_learner():
    pacer = LockstepPacer(max_backlog=50, state_timeout=TIMEOUT)
    assert pacer.should_tick(True, state(1.0), now=1.0)
    pacer.commanded(1.01, state(1.0))
    assert not pacer.should_tick(False, state(1.0), now=1.1)  # the arm has not answered yet
    assert pacer.should_tick(True, state(1.05), now=1.1)  # its answer
    assert not pacer.learner_progress(51)  # the learner owes more than 50 env steps: the world waits
    assert pacer.waiting_for_learner and not pacer.should_tick(True, state(1.2), now=1.2)
    assert pacer.learner_progress(50)  # caught up: the held state is ticked on
    assert pacer.should_tick(True, state(1.2), now=9.0)
    assert pacer.state_clock(state(1.2), now=9.0) == 1.2  # nothing commanded since: as fresh as the world


def test_lockstep_does_not_take_a_state_stamped_before_the_command_for_its_answer():
    """The sim arm repeats its state until an episode's first command arrives: one sent just before it took the
    command comes after the command, stamped as the state the command was computed from, and is no answer."""
    pacer = LockstepPacer(max_backlog=0, state_timeout=TIMEOUT)
    assert pacer.should_tick(True, state(1.0, stamp_s=2.0), now=1.0)
    pacer.commanded(1.01, state(1.0, stamp_s=2.0))
    repeated = state(1.02, stamp_s=2.0)
    assert not pacer.should_tick(True, repeated, now=1.03) and not pacer.answered(repeated)
    assert pacer.state_clock(repeated, now=1.03) == 1.03
    assert pacer.should_tick(True, state(1.04, stamp_s=2.05), now=1.05)  # one period on: the answer
    # An arm whose clock went back (a new sim process, or a state stamped far in the future was commanded from) is
    # taken at once: in order from one publisher, an earlier stamp is no repeat from before the command
    pacer.commanded(1.06, state(1.04, stamp_s=2**31 - 1))
    assert pacer.should_tick(True, state(1.1, stamp_s=0.05), now=1.11)
    assert pacer.answered(state(1.1, stamp_s=0.05))


def test_lockstep_re_ticks_a_state_only_when_nothing_is_pending_or_the_arm_is_gone():
    pacer = LockstepPacer(max_backlog=0, state_timeout=TIMEOUT)
    assert pacer.should_tick(False, None, now=0.0)  # no state yet: the tick says so
    assert pacer.should_tick(False, state(1.0), now=5.0)  # waiting for a model: look again
    pacer.commanded(5.0, state(1.0))
    assert not pacer.should_tick(False, state(1.0), now=5.0 + TIMEOUT / 2)
    assert pacer.should_tick(False, state(1.0), now=5.0 + TIMEOUT)  # unanswered: tick, stale, hold
    assert pacer.state_clock(state(1.0), now=5.0 + TIMEOUT) == 5.0 + TIMEOUT
    assert not pacer.learner_progress(10**9) and not pacer.waiting_for_learner  # 0: never wait for the learner


@pytest.mark.parametrize("lockstep", [True, False], ids=["lockstep", "realtime"])
def test_the_next_episode_waits_for_the_answer_the_goal_and_a_state_after_the_reset(lockstep):
    reset = ResetHandshake(lockstep, timeout_s=5.0)
    assert reset.outcome(received=0.0, now=0.0).state == READY and not reset.offer_goal(GOAL)  # nothing asked
    reset.request(now=10.0)
    assert reset.offer_goal(GOAL)
    assert reset.outcome(received=10.1, now=10.1).state == WAIT  # no answer yet
    reset.answered(True, "reset 2", now=10.2)
    # In lockstep the arm publishes a state only after a command or a reset: one received after the request is
    # the reset's. In real time states stream all along: only one received after the answer is.
    assert reset.outcome(received=10.1, now=10.2).state == (READY if lockstep else WAIT)
    if not lockstep:
        outcome = reset.outcome(received=10.3, now=10.3)
        assert outcome.state == READY
        np.testing.assert_array_equal(outcome.goal, GOAL)
    assert not reset.pending
    reset.answered(True, "late", now=11.0)  # a late answer changes nothing
    assert not reset.pending


def test_a_refused_or_incomplete_reset_is_given_up_with_the_reason():
    reset = ResetHandshake(lockstep=True, timeout_s=5.0)
    reset.request(now=0.0)
    reset.answered(False, "", now=0.1)
    outcome = reset.outcome(received=0.2, now=0.2)
    assert outcome.state == GIVE_UP and outcome.reason == "the arm refused the reset (no reason given)"
    reset.request(now=1.0)
    reset.answered(True, "ok", now=1.1)
    assert reset.outcome(received=None, now=5.9).state == WAIT
    outcome = reset.outcome(received=None, now=6.1)
    assert outcome.state == GIVE_UP and outcome.reason == "no new goal within 5 s of the reset request"


def run_to_success(loop, now: float = 0.0):
    """Tick at the goal until the task ends the episode; returns the ending tick's result."""
    loop.set_goal(KIN.fk(HOME))  # already at the goal: success after success_hold_steps
    for _ in range(CFG.task.success_hold_steps + 1):
        result = loop.tick(sample(HOME, received=now), now)
        if result.ended:
            return result
    raise AssertionError("the episode never ended")


def test_without_an_arm_reset_the_next_episode_starts_at_once_on_the_same_goal():
    loop = make_loop(ScriptedPlanner([]))
    result = run_to_success(loop)
    assert result.transition.terminated and result.ended.startswith("episode 0: success after 3 steps")
    assert result.mode == PLANNING and result.target is not None  # the same tick acts in the next episode
    nxt = loop.tick(sample(result.target), 0.0).transition
    assert (nxt.episode_id, nxt.step) == (1, 0)
    np.testing.assert_array_equal(nxt.observation, result.transition.next_observation)  # no gap between them
    assert nxt.observation[-6:-3].tolist() == result.transition.observation[-6:-3].tolist()  # same goal


def test_an_arm_with_a_reset_gets_asked_and_the_next_episode_waits_for_its_outcome():
    requests = []
    loop = make_loop(ScriptedPlanner([]), reset_arm=lambda: requests.append(True) or True)
    result = run_to_success(loop, now=10.0)
    assert requests == [True] and result.target is None and result.mode == HOLD  # nothing sent while resetting
    goal = np.array([0.5, 0.1, 0.4])
    loop.set_goal(goal)  # the reset's goal: kept for the next episode, not started on yet
    assert loop.tick(sample(HOME, received=10.5), 10.5).target is None  # not answered yet
    loop.reset.answered(True, "reset 2", 11.0)
    assert loop.tick(sample(HOME, received=10.9), 11.0).target is None  # a state from before the answer
    assert loop.tick(sample(HOME, received=10.9), 11.5).target is None  # ...which, gone stale, holds nothing
    started = loop.tick(sample(HOME + 0.01, received=11.1), 11.1)
    assert started.mode == PLANNING and started.transition is None and loop.episode_id == 1
    np.testing.assert_allclose(loop.episode.goal, goal)
    np.testing.assert_allclose(started.target - np.clip(HOME + 0.01, KIN.safe_lower, KIN.safe_upper), 0.0)


def test_a_reset_the_arm_refuses_or_never_completes_goes_on_on_the_same_goal():
    loop = make_loop(ScriptedPlanner([]), reset_arm=lambda: True)
    run_to_success(loop)
    loop.reset.answered(False, "busy", 0.1)
    result = loop.tick(sample(HOME, received=0.2), 0.2)
    assert result.mode == PLANNING and "the arm refused the reset (busy): next episode on the same goal" in result.log
    loop = make_loop(ScriptedPlanner([]), reset_arm=lambda: True)
    run_to_success(loop)
    assert loop.tick(sample(HOME, received=4.0), 4.0).target is None
    late = loop.tick(sample(HOME, received=5.5), 5.5)
    assert late.mode == PLANNING and any("no answer or new goal within 5 s" in line for line in late.log)


class FakeClock:
    """time.monotonic and time.sleep for the tick thread: sleeping moves the clock, nothing waits."""

    def __init__(self, start: float = 100.0):
        self.now = start

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


class Outputs:
    """What the node does with a tick's results: records the clock at each send."""

    def __init__(self, clock: FakeClock):
        self.clock = clock
        self.sent, self.transitions, self.ended, self.warnings = [], [], [], []

    def command(self, target, sample):
        return np.array(target)

    def send(self, message) -> None:
        self.sent.append((self.clock(), message))

    def transition(self, transition, sample) -> None:
        self.transitions.append(transition)

    def report(self, result) -> None:
        self.warnings += result.log
        self.ended += [result.ended] if result.ended else []

    def warn(self, line: str) -> None:
        self.warnings.append(line)

    def failed(self, exc: Exception) -> bool:
        raise exc


def control(lockstep: bool, max_backlog: int = 0):
    clock = FakeClock()
    loop = ControlLoop(CFG, KIN.safe_lower, KIN.safe_upper, KIN.fk, lockstep=lockstep, clock=clock)
    outputs = Outputs(clock)
    thread = TickThread(loop, outputs, lockstep, max_backlog, clock=clock, sleep=clock.sleep)
    return thread, loop, outputs, clock


def joint_sample(clock: FakeClock, q=HOME) -> JointSample:
    return JointSample(list(NAMES), list(map(float, q)), [0.0] * len(NAMES), clock())


def test_real_time_changes_apply_between_ticks_and_each_command_goes_out_at_its_publish_instant():
    thread, loop, outputs, clock = control(lockstep=False)
    due = thread.schedule.start
    thread.put_sample(joint_sample(clock))
    thread.between_ticks(lambda: loop.set_goal(GOAL))
    thread.offer_model(ScriptedPlanner([np.full(7, 1.0)] * 5), None, 1)
    for _ in range(3):
        tick_due = due
        due = thread.realtime_step(due)
        thread.put_sample(joint_sample(clock, outputs.sent[-1][1]))
        assert outputs.sent[-1][0] == pytest.approx(tick_due + BUDGET)  # planning time never moves the send
        assert due == pytest.approx(tick_due + PERIOD)
    assert loop.model_version == 1 and loop.mode == PLANNING and len(outputs.transitions) == 2
    np.testing.assert_allclose(np.diff([m for _, m in outputs.sent], axis=0), CFG.task.action_scale)


def test_lockstep_ticks_once_per_state_and_waits_for_the_learner():
    thread, loop, outputs, clock = control(lockstep=True, max_backlog=50)
    thread.between_ticks(lambda: loop.set_goal(GOAL))
    thread.put_sample(joint_sample(clock))
    thread.lockstep_step()  # no model yet: nothing sent, and no episode begun
    assert loop.mode == HOLD and not outputs.sent and loop.episode_id == 0
    thread.offer_model(ScriptedPlanner([np.full(7, 0.5)] * 10), None, 1)
    thread.lockstep_step()  # the model arrived: the same state is ticked on again, nothing was commanded since
    assert len(outputs.sent) == 1
    thread.lockstep_step()  # no new state: the command is not answered yet
    assert len(outputs.sent) == 1
    clock.now += 0.01
    thread.put_sample(joint_sample(clock, outputs.sent[-1][1]))
    thread.learner_progress(51)
    thread.lockstep_step()  # the learner is behind: the world waits
    assert len(outputs.sent) == 1
    thread.learner_progress(10)
    thread.lockstep_step()
    assert len(outputs.sent) == 2 and len(outputs.transitions) == 1
