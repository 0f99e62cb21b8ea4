"""When the controller ticks and when its command goes out: the real-time grid and lockstep pacing.

Real time (`TickSchedule`): tick k is due at start + k * period, and its command goes out a fixed share of the
period later (`controller.plan_budget`), so the command period never inherits planning-time jitter. A tick that
ends after the next one was due (a stall) skips the grid points it missed rather than ticking back to back.

Lockstep (`LockstepPacer`): the world advances one control period per command, so the controller ticks on each
joint state it has not ticked on yet, and holds the world (ticks on nothing) while the learner owes updates for
more than `controller.lockstep_max_backlog` env steps, so learning keeps its update-to-data ratio. A state it
already ticked on is ticked on again while nothing was commanded since it came (waiting for a model, a goal or
a reset: nothing is pending, so nothing is closed twice), and once a command has gone unanswered for
`controller.state_timeout` (the state is then stale: the tick holds and sends the held target again).
"""
from __future__ import annotations

import math

from tdmpc_ros.task import positive


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

    @property
    def waiting_for_learner(self) -> bool:
        return self.max_backlog > 0 and self.backlog > self.max_backlog

    def learner_progress(self, backlog_steps: int) -> bool:
        """The learner's owed env steps; True if that lets a held world go on."""
        was_waiting = self.waiting_for_learner
        self.backlog = backlog_steps
        return was_waiting and not self.waiting_for_learner

    def should_tick(self, new_state: bool, received: float | None, now: float) -> bool:
        """`new_state`: a joint state not ticked on yet; `received`: when the newest state came (None: none)."""
        if self.waiting_for_learner:
            return False
        if new_state or received is None or self.answered(received):
            return True
        return now - self.last_command >= self.state_timeout

    def answered(self, received: float) -> bool:
        """Nothing was commanded since the state received at `received`. In a tie the command counts as later:
        ticking twice on the state it was sent from would close that step with a state from before it."""
        return self.last_command < received

    def state_clock(self, received: float | None, now: float) -> float:
        """The time to judge the state's age by: a state with no command since is as fresh as the world is
        (it may have been held for the learner); otherwise the clock, so an unanswered command turns it stale."""
        return received if received is not None and self.answered(received) else now

    def commanded(self, now: float) -> None:
        self.last_command = now
