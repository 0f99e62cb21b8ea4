"""The delta-position action interface and the safety clips every commanded joint target passes, shared by
the controller (control/loop.py), the simulated env (sim/env.py) and the tests. Joint action space.
"""
from __future__ import annotations

import math

import numpy as np

from tdmpc_ros.config import ConfigError


def apply_action(action, last_target, q_measured, lower, upper, action_scale: float,
                 max_tracking_error: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Delta-position scaling with the safety clips; returns (target, applied normalised action).

    target = clip(last_target + clip(a, -1, 1) * action_scale, lower, upper), also within max_tracking_error
    of the measured position. Non-finite action entries count as 0 (hold). `lower`/`upper` are the joint
    limits less the margin. The applied action, (target - last_target) / action_scale, is what the learner
    trains on. For any action, each target lies within the limits and within action_scale of last_target,
    provided last_target itself is within the limits.
    """
    positive("action_scale", action_scale)
    if max_tracking_error is not None:
        positive("max_tracking_error", max_tracking_error)
    last_target = np.asarray(last_target, np.float64)
    a = np.nan_to_num(np.asarray(action, np.float64), nan=0.0, posinf=1.0, neginf=-1.0)
    target = last_target + np.clip(a, -1.0, 1.0) * action_scale
    if max_tracking_error is not None and q_measured is not None:
        q = np.asarray(q_measured, np.float64)
        # Keep the step bounded: the tracking clip may only pull the target toward last_target's side.
        target = np.clip(target, q - max_tracking_error, q + max_tracking_error)
        target = np.clip(target, last_target - action_scale, last_target + action_scale)
    target = np.clip(target, lower, upper)
    applied = np.clip((target - last_target) / action_scale, -1.0, 1.0)
    return target, applied.astype(np.float32)


def positive(name: str, value) -> float:
    """`value` as a float if it is finite and > 0, else ConfigError naming it: a NaN or negative scale would
    turn every target into NaN or drive the arm against the policy."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value > 0):
        raise ConfigError(f"{name}: {value!r} must be a finite number > 0")
    return float(value)
