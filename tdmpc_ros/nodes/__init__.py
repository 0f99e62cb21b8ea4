"""rclpy adapters: parameters to config, topics to core calls. Nothing here holds algorithm code."""
from __future__ import annotations

import time
import traceback

from tdmpc_ros.control.inputs import shown

LOG_THROTTLE_S = 2.0


class Rejections:
    """Counts rejected input messages and says when to log one: at most once per LOG_THROTTLE_S for each
    (topic, kind of problem), so a flood of one kind neither floods the log nor hides another kind.

    A problem's kind is its text before the first ':' (as FaultLatch's); kinds are fixed phrases in the
    nodes' code, never message content, so the table stays small whatever arrives.
    """

    def __init__(self, period_s: float = LOG_THROTTLE_S):
        self.period_s = period_s
        self.counts: dict[tuple[str, str], int] = {}
        self._logged: dict[tuple[str, str], tuple[float, int]] = {}  # (monotonic time, count) at the last line

    def add(self, topic: str, problem: str) -> str | None:
        """Count one rejected message; returns the suffix for its log line when one is due, else None."""
        key = (topic, problem.split(":")[0])
        count = self.counts[key] = self.counts.get(key, 0) + 1
        now = time.monotonic()
        last_time, last_count = self._logged.get(key, (-float("inf"), 0))
        if now - last_time < self.period_s:
            return None
        self._logged[key] = (now, count)
        unlogged = count - last_count - 1
        return f" ({unlogged} more like it since the last line)" if unlogged else ""


def guarded(node, callback, service: bool = False):
    """`callback` with a last-resort guard: an exception escaping it is logged (the traceback the first time,
    then a throttled line with the count) and the node goes on spinning. Inputs are validated first; this
    only keeps a missed case from killing the node. A service's callback then returns the default response
    (success false). While the context shuts down the exception passes on: run_node's clean stop.
    """
    failures = 0

    def run(*args):
        nonlocal failures
        try:
            return callback(*args)
        except Exception as exc:
            if not node.context.ok():
                raise
            failures += 1
            log_failure(node, callback.__name__, failures, exc)
            return args[-1] if service else None

    return run


def log_failure(node, name: str, failures: int, exc: Exception) -> None:
    """Log the `failures`-th exception `name` raised (being handled): its traceback the first time, then a
    throttled line with the count."""
    if failures == 1:
        node.get_logger().error(f"{name} raised; the node carries on:\n{traceback.format_exc()}")
    else:
        node.get_logger().error(f"{name} raised again ({failures} times): {type(exc).__name__}: {shown(str(exc))}",
                                throttle_duration_sec=LOG_THROTTLE_S)


def run_node(node_class, args=None):
    """Every node's main(): init a context, spin the node, clean up on Ctrl-C/SIGTERM or context shutdown;
    returns the node (destroyed), or None if it was never built.

    A SIGINT can shut the context down while the node is still being built or a callback is publishing;
    the RCLError that follows is a clean stop, not a crash. Any error while the context is still up is. Once
    the node spins, a SIGINT (a second one too) raises nothing in Python: the spin ends and destroy_node runs to
    its end. Bad input (a parameter the schema refuses, a damaged start-up file) ends the process with one line
    and exit 2.
    """
    import signal
    import sys

    import rclpy
    from rclpy.executors import ExternalShutdownException

    from tdmpc_ros.errors import InputError

    node = None
    building = True

    def on_sigint(signum, frame) -> None:
        # rclpy's handler (installed by init, chaining to this one) has shut the context down, so the spin
        # ends and destroy_node runs; a KeyboardInterrupt landing in it would cut that short (a bag left
        # without its index, a final checkpoint not written). Only while the node is being built does one
        # stop work that nothing else would.
        if building:
            raise KeyboardInterrupt

    signal.signal(signal.SIGINT, on_sigint)
    try:
        with rclpy.init(args=args):
            try:
                node = node_class()
                building = False
                rclpy.spin(node)
            except Exception:
                if rclpy.ok():
                    raise
            finally:
                if node is not None:
                    node.destroy_node()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except InputError as exc:
        print(f"[{node_class.__name__}] error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    return node
