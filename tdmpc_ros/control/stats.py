"""Latency and period statistics over a sliding window (for diagnostics and benchmarks)."""
from __future__ import annotations

import threading
from collections import deque

import numpy as np


class LatencyWindow:
    """The last `size` durations in seconds; percentiles in milliseconds. One thread may add while another
    reads the summary (the control thread and the node's status timer)."""

    def __init__(self, size: int = 400):
        self.values: deque[float] = deque(maxlen=size)
        self._lock = threading.Lock()

    def add(self, seconds: float) -> None:
        with self._lock:
            self.values.append(seconds)

    def summary_ms(self) -> dict[str, float]:
        with self._lock:
            values = list(self.values)
        if not values:
            return {"p50_ms": 0.0, "p99_ms": 0.0, "max_ms": 0.0, "mean_ms": 0.0}
        v = np.asarray(values) * 1e3
        return {"p50_ms": float(np.percentile(v, 50)), "p99_ms": float(np.percentile(v, 99)),
                "max_ms": float(v.max()), "mean_ms": float(v.mean())}
