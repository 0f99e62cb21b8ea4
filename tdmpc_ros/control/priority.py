"""Thread scheduling for the control path: SCHED_FIFO for the thread that times the commands, normal for the
heavy work it hands off (planning, model loading), as ros2_control runs its update loop.

Linux applies sched_setscheduler(0, ...) to the calling thread only; threads it starts later inherit it, so
worker threads reset themselves with `normal_priority` (a ThreadPoolExecutor initializer).
"""
from __future__ import annotations

import os


def realtime_priority(priority: int) -> str | None:
    """Run the calling thread SCHED_FIFO at `priority` (1-99). Returns None on success, else why not
    (no CAP_SYS_NICE or rtprio limit, or not Linux)."""
    if not 1 <= priority <= 99:
        raise ValueError(f"real-time priority must be in 1..99, got {priority}")
    policy = getattr(os, "SCHED_FIFO", None)
    if policy is None:
        return "SCHED_FIFO is not available on this platform"
    try:
        os.sched_setscheduler(0, policy, os.sched_param(priority))
    except OSError as err:
        return f"cannot set SCHED_FIFO {priority} ({err.strerror}; needs CAP_SYS_NICE or an rtprio limit)"
    return None


def normal_priority() -> None:
    """Run the calling thread SCHED_OTHER (a worker started by a real-time thread must not inherit FIFO)."""
    if hasattr(os, "SCHED_OTHER"):
        try:
            os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
        except OSError:
            pass  # already normal: only a privileged thread could have raised it
