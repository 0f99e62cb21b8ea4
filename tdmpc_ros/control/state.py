"""Joint-state validation for the controller: what counts as usable, and reporting a fault once per episode."""
from __future__ import annotations

import math
import reprlib
from dataclasses import dataclass

import numpy as np


def shown(value, max_chars: int = 60) -> str:
    """repr of received input for a log line, cut short (at most 10 list entries, strings `max_chars` long):
    a hostile message must not turn into a megabyte of log. Reads only the part it shows."""
    short = reprlib.Repr()
    short.maxlist, short.maxstring = 10, max_chars
    return short.repr(value)


@dataclass
class JointSample:
    """One /joint_states message as received, before validation."""

    names: list[str]
    position: list[float]
    velocity: list[float]
    received: float
    """Monotonic receive time (s): staleness is judged by arrival, not by the sender's clock."""
    stamp_ns: int = 0
    """Header stamp (ns): in lockstep the simulated time of the state, which stamps what the tick sends."""


def read_joints(sample: JointSample | None, joint_names: list[str], now: float,
                timeout: float) -> tuple[np.ndarray, np.ndarray] | str:
    """(q, qd) in `joint_names` order, or the reason the sample is unusable."""
    if sample is None:
        return "no joint state received yet"
    age = now - sample.received
    if age > timeout:
        return f"joint state stale: {age:.3f} s old (state_timeout {timeout:.3f} s)"
    if len(sample.names) != len(set(sample.names)):
        return f"joint state has duplicate joint names: {shown(sample.names)}"
    missing = [n for n in joint_names if n not in sample.names]
    if missing:
        return f"joint state lacks joints: {missing} (got {shown(sample.names)})"
    if len(sample.position) != len(sample.names):
        return f"joint state size mismatch: {len(sample.position)} positions for {len(sample.names)} names"
    if sample.velocity and len(sample.velocity) != len(sample.names):
        return f"joint state size mismatch: {len(sample.velocity)} velocities for {len(sample.names)} names"
    index = [sample.names.index(n) for n in joint_names]
    q = np.array([sample.position[i] for i in index], np.float64)
    qd = np.array([sample.velocity[i] for i in index], np.float64) if sample.velocity else np.zeros(len(index))
    if not (np.isfinite(q).all() and np.isfinite(qd).all()):
        bad = [joint_names[i] for i in range(len(index)) if not (math.isfinite(q[i]) and math.isfinite(qd[i]))]
        return f"joint state holds NaN/inf: joints {bad}"
    return q, qd


class FaultLatch:
    """Reports a fault once when it starts (or changes kind), and once when it clears."""

    def __init__(self):
        self.active: str | None = None
        self.count = 0

    def update(self, fault: str | None) -> str | None:
        """Returns a log line when the fault state changes, else None. A fault's kind is the text before ':'."""
        kind = fault.split(":")[0] if fault else None
        active_kind = self.active.split(":")[0] if self.active else None
        if kind == active_kind:
            self.active = fault
            return None
        self.active = fault
        if fault:
            self.count += 1
            return f"holding last target: {fault}"
        return "joint state good again: resuming control"
