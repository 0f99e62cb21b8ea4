"""Latency and period statistics over a sliding window (for diagnostics and benchmarks)."""
from __future__ import annotations

from collections import deque

import numpy as np


class LatencyWindow:
    """The last `size` durations in seconds; percentiles in milliseconds."""

    def __init__(self, size: int = 400):
        self.values: deque[float] = deque(maxlen=size)

    def add(self, seconds: float) -> None:
        self.values.append(seconds)

    def summary_ms(self) -> dict[str, float]:
        if not self.values:
            return {"p50_ms": 0.0, "p99_ms": 0.0, "max_ms": 0.0, "mean_ms": 0.0}
        v = np.asarray(self.values) * 1e3
        return {"p50_ms": float(np.percentile(v, 50)), "p99_ms": float(np.percentile(v, 99)),
                "max_ms": float(v.max()), "mean_ms": float(v.mean())}
