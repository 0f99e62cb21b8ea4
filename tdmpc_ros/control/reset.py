"""Starting the next episode once one has ended: the controller decides, the arm resets when asked.

The controller's episode logic (control/episode.py) is the one authority on episodes; the sim arm has no
episode clock or success test of its own. The controller rather than the arm, because only the controller
judges the task as the learner sees it (measured joints through forward kinematics), because it works the same
on a real arm, which knows nothing of episodes, and because a JointState has no field an arm could stamp an
episode id into. At an episode's end the controller calls the arm's reset service (the sim arm's `~/reset`,
std_srvs/Trigger: a new home pose and a new goal); with an arm that has none it goes on at once with the next
episode on the same goal.

Between the request and the next episode the controller commands nothing. It starts the episode once it holds
the reset's outcome: the answer, a goal received since the request and a joint state measured after the reset.
Which states those are: in lockstep the arm publishes one only after a command or a reset, so any state
received after the request; in real time states stream all along, so one received after the answer. A refused
request, or an outcome not complete within RESET_TIMEOUT_S, ends the wait: the next episode runs on the newest
goal there is.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

RESET_TIMEOUT_S = 5.0
WAIT, READY, GIVE_UP = "wait", "ready", "give up"


@dataclass
class ResetOutcome:
    state: str
    """WAIT (command nothing yet), READY (the reset is complete) or GIVE_UP (go on without it)."""
    goal: np.ndarray | None = None
    """The goal received since the request, if any."""
    reason: str = ""
    """Why the controller gives up waiting."""


class ResetHandshake:
    """One reset request at a time; times are the caller's clock (time.monotonic() in the controller)."""

    def __init__(self, lockstep: bool, timeout_s: float = RESET_TIMEOUT_S):
        self.lockstep = lockstep
        self.timeout_s = timeout_s
        self.pending = False
        self._requested_at = 0.0
        self._answered_at: float | None = None
        self._refusal = ""
        self._goal: np.ndarray | None = None

    def request(self, now: float) -> None:
        self.pending = True
        self._requested_at, self._answered_at = now, None
        self._refusal, self._goal = "", None

    def answered(self, success: bool, message: str, now: float) -> None:
        """The arm's answer (a late answer to an abandoned request changes nothing)."""
        if not self.pending:
            return
        if success:
            self._answered_at = now
        else:
            self._refusal = f"the arm refused the reset ({message or 'no reason given'})"

    def offer_goal(self, goal: np.ndarray) -> bool:
        """A goal that arrived while waiting: the reset's, kept for the next episode. False if not waiting."""
        if self.pending:
            self._goal = goal
        return self.pending

    def outcome(self, received: float | None, now: float) -> ResetOutcome:
        """Whether the next episode can start, given when the newest joint state was received (None: none)."""
        if not self.pending:
            return ResetOutcome(READY)
        since = self._requested_at if self.lockstep else self._answered_at
        if self._answered_at is not None and self._goal is not None and received is not None \
                and since is not None and received > since:
            self.pending = False
            return ResetOutcome(READY, self._goal)
        if self._refusal or now - self._requested_at > self.timeout_s:
            self.pending = False
            missing = [what for what, there in (("answer", self._answered_at is not None),
                                                ("new goal", self._goal is not None)) if not there]
            reason = self._refusal or (f"no {' or '.join(missing) or 'joint state after the reset'} within "
                                       f"{self.timeout_s:g} s of the reset request")
            return ResetOutcome(GIVE_UP, self._goal, reason)
        return ResetOutcome(WAIT)
