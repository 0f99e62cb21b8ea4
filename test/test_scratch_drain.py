import signal, time
import pytest
from ros_helpers import stop
from test_learner_node import demo_dir  # noqa
from test_learner_intake import Feeder, start_learner, transition

@pytest.mark.ros
def test_drain_timing(tmp_path, demo_dir, rclpy_context):
    proc = start_learner(tmp_path, demo_dir, **{"agent.compile": False})
    feeder = Feeder(rclpy_context)
    try:
        assert feeder.wait(feeder.connected, 60)
        feeder.publish(0, transition(0, 0, last=True))
        assert feeder.wait(feeder.accounted, 30)
        proc.send_signal(signal.SIGSTOP)
        for i in range(1, 31):
            for step in range(10):
                feeder.publish(0, transition(i, step, last=step == 9))
        feeder.wait(lambda: False, 1.0)
        proc.send_signal(signal.SIGCONT)
        t0 = time.monotonic()
        seen = []
        feeder.wait(lambda: (seen.append((round(time.monotonic() - t0, 2), feeder.progress[-1].stored_transitions)) or feeder.accounted()), 20)
        out = []
        last = None
        for t, n in seen:
            if n != last: out.append((t, n)); last = n
        print(out)
    finally:
        stop(proc)
