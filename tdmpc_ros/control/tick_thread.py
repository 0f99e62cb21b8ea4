"""The controller's tick on a thread of its own, fed through a latest-sample handoff, and when it ticks.

As ros2_control's controller manager with its realtime buffer: the node's joint-state callback only stores the
newest sample here and returns, so no tick ever holds up the executor (nor a sleep until the publish instant);
this thread reads the newest sample when it ticks. Everything else the node receives (goals, enable, live
parameters, the arm's reset answer, learner progress, a loaded model) is handed over as a change that this
thread applies between ticks, in the order it came, so the ControlLoop is only ever touched here. What the
thread sends goes through `outputs` (the node: message conversion and publishing).

Real time (`TickSchedule`): tick k is due at start + k * period, and its command goes out a fixed share of the
period later (`controller.plan_budget`), so the command period never inherits planning-time jitter. A tick that
ends after the next one was due (a stall) skips the grid points it missed rather than ticking back to back.
The thread runs SCHED_FIFO at `controller.thread_priority` where the process may (planning and model loading
stay at normal priority).

Lockstep (`LockstepPacer`): the world advances one control period per command, so the controller ticks on each
joint state it has not ticked on yet that is stamped otherwise than the state of its last command (once the task's
sensor messages stamped alike have come too, or the state is `controller.state_timeout` old: the tick then
holds on the stale sensor), and holds the world (ticks on
nothing) while the learner owes updates for more than `controller.lockstep_max_backlog` env steps, so
learning keeps its update-to-data ratio. A state it already ticked on is ticked on again while nothing was
commanded since it came (waiting for a model, a goal or a reset: nothing is pending, so nothing is closed
twice), and once a command has gone unanswered for
`controller.state_timeout` (the state is then stale: the tick holds and sends the held target again). The
thread wakes on every handoff and every LOCKSTEP_KICK_S.
"""
from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

from tdmpc_ros.control.inputs import JointSample, SensorSample
from tdmpc_ros.control.loop import ControlLoop, TickResult
from tdmpc_ros.control.priority import realtime_priority
from tdmpc_ros.control.actions import positive

LOCKSTEP_KICK_S = 0.1  # lockstep: look again this often when nothing arrives (a model, a goal, an arm's answer)


class TickSchedule:
    """The real-time tick grid on the caller's clock (time.monotonic() in the controller)."""

    def __init__(self, period: float, budget: float, start: float):
        self.period = positive("tick period", period)
        self.budget = budget
        self.start = start
        self.skipped = 0  # grid points passed over after stalls

    def publish_at(self, due: float) -> float:
        """When the command of the tick due at `due` goes out (also the deadline of its plan)."""
        return due + self.budget

    def next_due(self, due: float, now: float) -> float:
        """The tick after the one due at `due`, finished at `now`: the next grid point not yet passed."""
        following = due + self.period
        if now > following:
            missed = math.ceil((now - following) / self.period)
            self.skipped += missed
            following += missed * self.period
        return following


class LockstepPacer:
    """Whether a lockstep controller ticks now, and how fresh the state it ticks on counts as."""

    def __init__(self, max_backlog: int, state_timeout: float):
        self.max_backlog = max_backlog
        self.state_timeout = state_timeout
        self.backlog = 0
        self.last_command = -math.inf  # when the last command went out
        self.commanded_stamp = -1  # the stamp (ns) of the state it was computed from

    @property
    def waiting_for_learner(self) -> bool:
        return self.max_backlog > 0 and self.backlog > self.max_backlog

    def learner_progress(self, backlog_steps: int) -> bool:
        """The learner's owed env steps; True if that lets a held world go on."""
        was_waiting = self.waiting_for_learner
        self.backlog = backlog_steps
        return was_waiting and not self.waiting_for_learner

    def should_tick(self, new_state: bool, sample: JointSample | None, now: float) -> bool:
        """`new_state`: a joint state not ticked on yet; `sample`: the newest state (None: none)."""
        if self.waiting_for_learner:
            return False
        if sample is None or (new_state and self.after_command(sample)) or self.answered(sample):
            return True
        return now - self.last_command >= self.state_timeout

    def after_command(self, sample: JointSample) -> bool:
        """Not the arm's state of the last command's time (or unstamped). The sim arm repeats its state until an
        episode's first command, stamped alike: a repeat sent just before it took the command arrives after it,
        and ticking on it would close the step with the pose the step started from. A state stamped earlier than
        the commanded one cannot be such a repeat (one publisher's messages arrive in order): the arm's clock went
        back (a restarted sim, or the commanded state's stamp was bogus, far in the future), so it is taken at
        once rather than holding lockstep for the state timeout."""
        return sample.stamp_ns == 0 or sample.stamp_ns != self.commanded_stamp

    def answered(self, sample: JointSample) -> bool:
        """Nothing was commanded since `sample` came. In a tie the command counts as later: ticking twice on the
        state it was sent from would close that step with a state from before it."""
        return self.last_command < sample.received and self.after_command(sample)

    def state_clock(self, sample: JointSample | None, now: float) -> float:
        """The time to judge the state's age by: a state with no command since is as fresh as the world is
        (it may have been held for the learner); otherwise the clock, so an unanswered command turns it stale."""
        return sample.received if sample is not None and self.answered(sample) else now

    def commanded(self, now: float, sample: JointSample) -> None:
        self.last_command = now
        self.commanded_stamp = sample.stamp_ns


class TickThread:
    """Runs `loop` on its own thread. `outputs` has command(target, sample) -> message, send(message),
    transition(transition, sample), report(result), warn(line) and failed(exception) -> go on (bool)."""

    def __init__(self, loop: ControlLoop, outputs, lockstep: bool, max_backlog: int, priority: int = 0,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep):
        self.loop, self.outputs = loop, outputs
        self.lockstep = lockstep
        self.priority = priority
        self.clock, self.sleep = clock, sleep
        self.pacer = LockstepPacer(max_backlog, loop.cfg.controller.state_timeout)
        self.schedule = TickSchedule(loop.period, loop.budget, clock())
        self._wake = threading.Condition()
        self._sample: JointSample | None = None
        self._sensed: dict[str, SensorSample] = {}  # the newest message of each task sensor
        # Lockstep: the sensor messages the last new state ticked on used. The arm sends one of each with every
        # state, and a reset's state has the stamp of the step before it: a state is complete once every sensor
        # has handed over a message (a new object) since its predecessor's.
        self._used_sensed: dict[str, SensorSample] = {}
        self._seq = self._ticked_seq = 0  # samples handed over / the one last ticked on
        self._changes: list[Callable[[], None]] = []
        self._offered_model = None
        self._pending_model = None  # (planner, model, version) until the loop takes it
        self._events = self._seen_events = 0
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="control", daemon=True)

    # -- handoff (any thread) -----------------------------------------------------------------------------
    def put_sample(self, sample: JointSample) -> None:
        with self._wake:
            self._sample = sample
            self._seq += 1
            self._notify()

    def put_sensed(self, name: str, sample: SensorSample) -> None:
        with self._wake:
            self._sensed[name] = sample
            self._notify()

    def between_ticks(self, change: Callable[[], None]) -> None:
        with self._wake:
            self._changes.append(change)
            self._notify()

    def offer_model(self, planner, model, version: int) -> None:
        """A verified model from the loader thread; the newest offer wins."""
        with self._wake:
            self._offered_model = (planner, model, version)
            self._notify()

    def learner_progress(self, backlog_steps: int) -> None:
        self.between_ticks(lambda: self.pacer.learner_progress(backlog_steps))

    def _notify(self) -> None:
        self._events += 1
        self._wake.notify()

    # -- the thread ---------------------------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        with self._wake:
            self._stop = True
            self._wake.notify()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        if not self.lockstep and self.priority > 0 and (why := realtime_priority(self.priority)) is not None:
            self.outputs.warn(f"{why}: ticking at normal priority, expect more period jitter")
        due = self.schedule.start
        while not self._stop:
            try:
                if self.lockstep:
                    with self._wake:
                        self._wake.wait_for(lambda: self._stop or self._events != self._seen_events, LOCKSTEP_KICK_S)
                    if not self._stop:
                        self.lockstep_step()
                else:
                    due = self.realtime_step(due)
            except Exception as exc:
                if not self.outputs.failed(exc):
                    return
                due = self.schedule.next_due(due, self.clock())  # no burst of retries: the next tick on the grid

    def realtime_step(self, due: float) -> float:
        """Wait for the tick due at `due`, tick, send at its publish instant; returns when the next is due."""
        self._sleep_until(due)
        sample, _, sensed = self._take()
        self._tick(sample, self.clock(), self.schedule.publish_at(due), sensed)
        return self.schedule.next_due(due, self.clock())

    def lockstep_step(self) -> None:
        """One wake of the lockstep thread: tick if the pacer says so, on the newest sample."""
        sample, seq, sensed = self._take()
        now = self.clock()
        new_state = seq != self._ticked_seq
        if new_state and self.sensors_behind(sample, sensed) and now - sample.received < self.pacer.state_timeout:
            return  # the task's sensor messages of this state are still on their way
        if not self.pacer.should_tick(new_state, sample, now):
            return
        self._ticked_seq = seq
        if new_state:
            self._used_sensed = sensed
        sent_at = self._tick(sample, self.pacer.state_clock(sample, now), None, sensed)
        if sent_at is not None:
            self.pacer.commanded(sent_at, sample)

    def sensors_behind(self, sample: JointSample, sensed: dict[str, SensorSample]) -> bool:
        """Lockstep: a sensor of the task has not sent its message of this joint state yet."""
        return any(s.name not in sensed or sensed[s.name].stamp_ns < sample.stamp_ns
                   or sensed[s.name] is self._used_sensed.get(s.name)
                   for s in self.loop.episode.task.sensors)

    def _take(self) -> tuple[JointSample | None, int, dict[str, SensorSample]]:
        """The newest sample, its number and the newest sensor messages, after applying the changes handed over
        since the last tick."""
        with self._wake:
            changes, self._changes = self._changes, []
            sample, seq, sensed = self._sample, self._seq, dict(self._sensed)
            self._seen_events = self._events
            if self._offered_model is not None:
                self._pending_model, self._offered_model = self._offered_model, None
        for change in changes:
            change()
        return sample, seq, sensed

    def _tick(self, sample: JointSample | None, now: float, publish_at: float | None,
              sensed: dict[str, SensorSample]) -> float | None:
        """Tick and send what it gives (at `publish_at`, else at once); returns when the command went out."""
        pending = self._pending_model
        if pending is not None and (pending[2] <= self.loop.model_version or self.loop.install(*pending)):
            self._pending_model = None  # installed, or older than the running model (loads can finish out of order)
        result: TickResult = self.loop.tick(sample, now, deadline=publish_at, sensed=sensed)
        message = self.outputs.command(result.target, sample) if result.target is not None else None
        if publish_at is not None:
            self._sleep_until(publish_at)
        sent_at = None
        if message is not None:
            sent_at = self.clock()
            self.outputs.send(message)
        if result.transition is not None:
            self.outputs.transition(result.transition, sample)
        self.outputs.report(result)
        return sent_at

    def _sleep_until(self, instant: float) -> None:
        delay = instant - self.clock()
        if delay > 0:
            self.sleep(delay)
