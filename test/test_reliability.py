"""Fault injection over real DDS: nodes in their own processes, SIGKILLed and SIGSTOPped, watched from outside.

Each test states the outcome it expects and prints what it measured (pytest -s shows it; docs/reliability.md
records the figures).
"""
from __future__ import annotations

import os
import re
import signal
import time

import numpy as np
import pytest
from geometry_msgs.msg import PointStamped
from rosbags.rosbag2 import Reader
from std_msgs.msg import Float64MultiArray

from ros_helpers import CHEAP_PLANNER as FAST_PLANNER, spin_until, start_node, stop, untrained_checkpoint
from tdmpc_ros import topics
from tdmpc_ros.cli.harness import GraphObserver
from tdmpc_ros.config import Config
from tdmpc_ros.data.bags import read_episodes
from tdmpc_ros.data.typestore import TRANSITION, typestore
from tdmpc_ros.learning.checkpoint import load_checkpoint
from tdmpc_ros.learning.checkpoint_file import CheckpointError, file_sha256
from tdmpc_ros.msg import ModelUpdate, PlannerStatus, Transition
from tdmpc_ros.nodes import qos
from test_learner_node import demo_dir  # noqa: F401  (fixture: a few scripted-expert demo bags)

pytestmark = [pytest.mark.ros, pytest.mark.slow]

CFG = Config()
RATE = CFG.task.control_rate_hz
SCALE = CFG.task.action_scale
TIMEOUT = CFG.controller.state_timeout
COMMANDS = topics.COMMAND_TOPICS["float64_multi_array"]
FAST_LEARNER = {"agent.batch_size": 32, "learner.pretrain_updates": 40, "learner.publish_every": 20,
                "learner.log_every_s": 1.0, "learner.keep_checkpoints": 1000}
ACTIVE = ("planning", "policy_fallback")  # controlling (a plan, or the policy prior on a missed deadline)
STATUS_PERIOD = 1.0  # the controller publishes PlannerStatus once a second


def published(sample) -> float:
    """When a message was published, on time.monotonic()'s clock (its DDS source stamp is wall-clock ns)."""
    return time.monotonic() - (time.time_ns() - sample.published_ns) * 1e-9


class Observer:
    """The test's own rclpy node: records commands, joint states, status, transitions and model updates."""

    def __init__(self, context):
        import rclpy

        self.node = rclpy.create_node("reliability_observer", context=context)
        self.graph = graph = GraphObserver(self.node)
        self.commands: list[tuple[float, np.ndarray]] = []
        self.states: list[tuple[float, np.ndarray]] = []
        self.status: list[tuple[float, PlannerStatus]] = []
        self.transitions: list[tuple[float, Transition]] = []
        self.updates: list[ModelUpdate] = []
        self.goals: list[PointStamped] = []
        # Commands, states and status are ordered by when they were published, so this process lagging behind
        # its inbox (and draining one topic before the other) cannot reorder them.
        graph.record("commands", keep=False,
                     on_message=lambda s: self.commands.append((published(s), np.array(s.msg.data))))
        graph.record("joint_states", keep=False,
                     on_message=lambda s: self.states.append((published(s), np.array(s.msg.position))))
        graph.record("statuses", keep=False, on_message=lambda s: self.status.append((published(s), s.msg)))
        graph.record("transitions", keep=False, on_message=lambda s: self.transitions.append((time.monotonic(), s.msg)))
        graph.record("model_updates", keep=False, on_message=lambda s: self.updates.append(s.msg))
        graph.record("goals", keep=False, on_message=lambda s: self.goals.append(s.msg))
        self.learner_diag = graph.learner_values()
        self.jog_pub = self.node.create_publisher(Float64MultiArray, COMMANDS, qos.STATE)

    def spin(self, seconds: float) -> None:
        spin_until(self.node, lambda: False, seconds)

    def until(self, predicate, timeout: float) -> bool:
        return spin_until(self.node, predicate, timeout)

    def last_status(self) -> PlannerStatus | None:
        return self.status[-1][1] if self.status else None

    def planning(self, since: float = 0.0) -> bool:
        """Healthy status after `since`, and commands that move after it."""
        fresh = [s for t, s in self.status if t > since]
        moving = [c for t, c in self.commands if t > since]
        return bool(fresh) and fresh[-1].mode in ACTIVE and not fresh[-1].fault and len(moving) >= 3 \
            and not np.array_equal(moving[-1], moving[-3])


def hold_after_last_state(obs: Observer) -> tuple[float, int]:
    """(seconds the controller kept moving after the arm's last joint state, held commands after that).

    Counted in publish order (moving commands x period), not by arrival time, so a test process lagging
    behind its inbox can not skew it.
    """
    last_state = obs.states[-1][0]
    before = [c for t, c in obs.commands if t <= last_state][-1:]
    cmds = before + [c for t, c in obs.commands if t > last_state]
    changes = [i for i in range(1, len(cmds)) if not np.array_equal(cmds[i], cmds[i - 1])]
    last_change = changes[-1] if changes else 0
    return len(changes) / RATE, len(cmds) - 1 - last_change


def hold_after_arm_stops(obs: Observer, stopped: float, min_held: int) -> tuple[float, int]:
    """`hold_after_last_state` once the controller has reported a stale state in a status published after
    `stopped` (a stale spell of a starved arm before it does not count) and held `min_held` commands."""
    assert obs.until(lambda: any("stale" in s.fault for t, s in obs.status if t > stopped),
                     TIMEOUT + 2 * STATUS_PERIOD + 1), [(s.mode, s.fault) for _, s in obs.status[-3:]]
    obs.until(lambda: hold_after_last_state(obs)[1] >= min_held, 5.0)
    return hold_after_last_state(obs)


def settled_states(obs: Observer, since: float, timeout: float = 10.0) -> np.ndarray:
    """The arm's last 0.5 s of joint states once it has been still (< 1e-3 rad) that long, after `since`."""
    def last_half_second() -> np.ndarray:
        return np.array([q for t, q in obs.states if t > max(since, obs.states[-1][0] - 0.5)])

    def still() -> bool:
        recent = last_half_second()
        return len(recent) > 10 and float(np.abs(recent - recent[-1]).max()) < 1e-3

    assert obs.until(still, timeout), f"arm still moving: {np.ptp(last_half_second(), axis=0)} rad over 0.5 s"
    return last_half_second()


@pytest.fixture
def procs():
    """Started node processes; every one still running at the end must exit cleanly on SIGINT."""
    started: list = []
    yield started
    for p in started:
        if p.poll() is None:
            p.send_signal(signal.SIGCONT)  # a test that failed while a node was paused
    codes = [stop(p) for p in started if p.poll() is None]
    assert all(code == 0 for code in codes), codes


def test_arm_and_controller_deaths_and_pauses(tmp_path, rclpy_context, procs):
    """Arm SIGKILL / SIGSTOP: the controller holds within state_timeout, reports it, resumes by itself.
    Controller SIGKILL: the arm holds its last target; a restarted controller starts from the measured q."""
    untrained_checkpoint(tmp_path / "v1.pt")
    controller_params = {"controller.model_path": str(tmp_path / "v1.pt"), **FAST_PLANNER}
    arm = start_node("arm_node", {}, tmp_path / "arm0.log")
    controller = start_node("controller_node", controller_params, tmp_path / "controller0.log")
    procs += [arm, controller]
    obs = Observer(rclpy_context)
    assert obs.until(obs.planning, 90), (tmp_path / "controller0.log").read_text()[-3000:]

    # -- arm SIGKILL, then a new arm process --------------------------------------------------------------
    killed = time.monotonic()
    arm.send_signal(signal.SIGKILL)
    arm.wait()
    arm_kill_hold, held = hold_after_arm_stops(obs, killed, min_held=int(0.5 * RATE))
    assert held >= 0.5 * RATE  # holds, publishing the same target at the rate
    assert arm_kill_hold <= TIMEOUT + 3 / RATE
    arm = start_node("arm_node", {}, tmp_path / "arm1.log")
    procs.append(arm)
    restarted = time.monotonic()
    assert obs.until(lambda: obs.planning(since=restarted), 60), "control did not resume after the arm returned"
    arm_resume = next(t for t, s in obs.status if t > restarted and s.mode in ACTIVE) - restarted
    # this observer discovers the new arm on its own (can take seconds): the pause below is timed by its states
    assert obs.until(lambda: obs.states and obs.states[-1][0] > restarted, 30)

    # -- arm SIGSTOP for 4 x state_timeout, then SIGCONT --------------------------------------------------
    obs.spin(1.0)
    stopped = time.monotonic()
    arm.send_signal(signal.SIGSTOP)
    arm_pause_hold, held = hold_after_arm_stops(obs, stopped, min_held=5)
    assert arm_pause_hold <= TIMEOUT + 3 / RATE and held >= 5  # the timeout, rounded up to whole ticks
    arm.send_signal(signal.SIGCONT)
    continued = time.monotonic()
    assert obs.until(lambda: obs.planning(since=continued), 10), [(s.mode, s.fault) for _, s in obs.status[-5:]]
    pause_resume = next(t for t, s in obs.status if t > continued and s.mode in ACTIVE) - continued

    # -- controller SIGKILL: the arm holds its last target -----------------------------------------------
    # Killed early in an episode: right after a new goal (the controller ended the last one and reset the arm).
    goals = len(obs.goals)
    assert obs.until(lambda: len(obs.goals) > goals, 10)
    obs.spin(0.5)
    controller.send_signal(signal.SIGKILL)
    controller.wait()
    # The arm settles on its last target (PD, ~0.1 s time constant; longer in wall time when a loaded machine
    # runs the physics behind real time), then stays there. The last target is read once it has settled:
    # a command published just before the kill can reach the observer after the kill returns.
    recent = settled_states(obs, since=time.monotonic())
    last_target = obs.commands[-1][1]
    drift = float(np.abs(recent - recent[-1]).max())
    tracking = float(np.abs(recent[-1] - last_target).max())
    assert tracking < 0.02  # holding still, at the last target

    # Jog the arm well away from the dead controller's target, so a stale target would show; let it settle
    # there, so the restarted controller's first command can be compared with where the arm is.
    jog = last_target + np.where(np.arange(len(last_target)) % 2 == 0, 0.2, -0.2)
    for _ in range(20):
        obs.jog_pub.publish(Float64MultiArray(data=jog.tolist()))
        obs.spin(0.05)
    jogged = settled_states(obs, since=time.monotonic())[-1]
    assert np.abs(jogged - last_target).max() > 3 * SCALE
    relaunched = time.monotonic()
    restarted: list = []  # the restarted controller's commands (harness.Sample: with sequence numbers)
    obs.graph.record("commands", keep=False,
                     on_message=lambda s: restarted.append(s) if published(s) > relaunched else None)
    controller = start_node("controller_node", {**controller_params, "controller.model_path": "",
                                                "learner.weights_transport": "file"}, tmp_path / "controller1.log")
    procs.append(controller)
    # Without a model it holds the measured joints. A hold received shows its commands reach this observer (DDS
    # discovery can take seconds, and a command sent before it is never delivered): only then the model (as a
    # file announced on model_updates), so that its first planned command is seen for sure.
    assert obs.until(lambda: restarted, 90), (tmp_path / "controller1.log").read_text()[-3000:]
    hold = np.array(restarted[0].msg.data)
    update_pub = obs.node.create_publisher(ModelUpdate, topics.MODEL_UPDATES, qos.LATCHED)
    update_pub.publish(ModelUpdate(version=1, path=str(tmp_path / "v1.pt"), sha256=file_sha256(tmp_path / "v1.pt")))

    def first_planned() -> int | None:
        return next((i for i, s in enumerate(restarted) if not np.array_equal(s.msg.data, hold)), None)

    assert obs.until(lambda: first_planned() is not None, 90), (tmp_path / "controller1.log").read_text()[-3000:]
    planned = first_planned()
    sequences = [s.sequence for s in restarted[:planned + 1]]
    assert sequences == list(range(sequences[0], sequences[0] + planned + 1)), f"commands missed: {sequences}"
    hold_offset = float(np.abs(hold - jogged).max())
    assert hold_offset < 2e-3, f"held {hold.round(4).tolist()}, not the measured {jogged.round(4).tolist()}"
    first_t, first = published(restarted[planned]), np.array(restarted[planned].msg.data)
    # States and commands come on two topics, each in order but not with each other: wait for a state published
    # after the command, so that every state before it is in. The controller steps from one of the states
    # published since it started, so its first planned command lies within action_scale of one of those.
    assert obs.until(lambda: obs.states[-1][0] > first_t, 10)
    measured = [q for t, q in obs.states if relaunched <= t < first_t]
    first_step = min(float(np.abs(first - q).max()) for q in measured)
    assert first_step <= SCALE + 1e-3, (
        f"first planned command {first.round(4).tolist()}, {first_step:.4f} rad from the nearest of "
        f"{len(measured)} states since the restart; the last: {[q.round(4).tolist() for q in measured[-3:]]}; "
        f"after the jog: {jogged.round(4).tolist()}\n" + (tmp_path / "controller1.log").read_text()[-2000:])
    print(f"\narm SIGKILL: controller moved on for {arm_kill_hold:.2f} s after the last state "
          f"(state_timeout {TIMEOUT}); "
          f"planning again {arm_resume:.2f} s after the new arm process started\n"
          f"arm SIGSTOP: moved on for {arm_pause_hold:.2f} s after the last state; planning {pause_resume:.2f} s "
          f"after SIGCONT\ncontroller SIGKILL: arm drift {drift:.2e} rad over 0.5 s, {tracking:.4f} rad from the "
          f"last target; restarted controller held {hold_offset:.1e} rad from the measured q until its model came, "
          f"then its first planned command {first_step:.4f} rad from it (action_scale {SCALE}, stale target "
          f"{np.abs(jogged - last_target).max():.3f} rad away)")
    text = (tmp_path / "controller0.log").read_text()
    assert "holding last target: joint state stale" in text and "resuming control" in text


def stored_keys(online_dir) -> set[tuple[int, int]]:
    """(episode_id, step) of every transition readable from the learner's online bags."""
    return {(e.episode_id, step) for e in read_episodes([online_dir], CFG).episodes for step in range(len(e))}


def bag_keys(bag) -> set[tuple[int, int]]:
    """(episode_id, step) of every message in a cleanly closed transition bag, episodes whole or not."""
    with Reader(bag) as reader:
        return {key(typestore().deserialize_cdr(raw, TRANSITION)) for _, _, raw in reader.messages()}


def key(msg: Transition) -> tuple[int, int]:
    return int(msg.episode_id), int(msg.step)


def stamp(msg) -> float:
    return msg.header.stamp.sec + 1e-9 * msg.header.stamp.nanosec


def verify_announcements(updates: list[ModelUpdate]) -> set[int]:
    """Every announced model verifies against its sidecar and the announced sha256; returns the versions."""
    for update in updates:
        try:
            ckpt = load_checkpoint(update.path)
        except CheckpointError as exc:
            pytest.fail(f"model v{update.version} announced but fails verification: {exc}")
        assert ckpt.sha256 == update.sha256, update
    return {u.version for u in updates}


def kill_mid_checkpoint(proc, folder, timeout: float) -> bool:
    """SIGKILL `proc` while it writes a checkpoint: stop it at random moments until a checkpoint temp file is
    there (True), so it dies in mid-write; at `timeout` it is killed wherever it is (False)."""
    rng = np.random.default_rng(0)
    deadline = time.monotonic() + timeout
    caught = False
    while time.monotonic() < deadline and not caught:
        time.sleep(rng.uniform(0.0, 0.03))
        proc.send_signal(signal.SIGSTOP)
        while open(f"/proc/{proc.pid}/stat").read().split(") ")[1][0] != "T":
            time.sleep(0.001)  # the stop takes effect asynchronously
        caught = any(name.endswith(".tmp") for name in os.listdir(folder))
        if not caught:
            proc.send_signal(signal.SIGCONT)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return caught


def test_learner_death_mid_checkpoint_and_pause(tmp_path, demo_dir, rclpy_context, procs):
    """Learner SIGKILL while writing a checkpoint: control goes on with the old model, only verified models are
    ever announced or used, the restart resumes, and the online bags hold all but the unflushed tail.
    Learner SIGSTOP: control goes on; after SIGCONT nothing published during the pause is lost."""
    run_dir = tmp_path / "run"
    learner_params = {**FAST_LEARNER, "learner.publish_every": 5, "learner.run_dir": str(run_dir),
                      "learner.demos": [str(demo_dir)]}
    learner = start_node("learner_node", learner_params, tmp_path / "learner0.log")
    procs += [learner, start_node("arm_node", {}, tmp_path / "arm.log"),
              start_node("controller_node", FAST_PLANNER, tmp_path / "controller.log")]
    obs = Observer(rclpy_context)
    assert obs.until(lambda: obs.planning() and obs.last_status().model_version >= 1, 300), \
        (tmp_path / "learner0.log").read_text()[-3000:]
    # Online episodes reach the replay.
    assert obs.until(lambda: int(obs.learner_diag.get("online_steps", 0)) >= 2 * CFG.task.max_episode_steps, 60)

    # -- SIGKILL as a checkpoint is being written ----------------------------------------------------------
    caught = kill_mid_checkpoint(learner, run_dir / "checkpoints", timeout=30.0)
    assert caught, "never stopped the learner during a checkpoint write"
    killed, killed_at = time.time(), time.monotonic()
    version_at_kill = obs.last_status().model_version
    # Control goes on: an active status after the kill, and none with a fault or an older model (a status may
    # fall in the hold while the arm resets between episodes).
    assert obs.until(lambda: any(s.mode in ACTIVE for t, s in obs.status if t > killed_at), 10)
    after_kill = [s for t, s in obs.status if t > killed_at]
    assert all(not s.fault and s.model_version >= version_at_kill for s in after_kill), \
        [(s.mode, s.fault, s.model_version) for s in after_kill]
    published = [m for _, m in obs.transitions if stamp(m) < killed]
    stored = stored_keys(run_dir / "online")
    lost = [key(m) for m in published if key(m) not in stored]
    assert lost == [key(m) for m in published[len(published) - len(lost):]]  # only a tail, nothing in between
    assert len(lost) <= RATE * 1.0 + 5, lost  # flushed every second: at most ~1 s of steps plus one in flight

    verify_announcements(obs.updates)
    # Damage the newest checkpoint on disk (as a torn disk write would): the restart must skip it.
    newest = max((run_dir / "checkpoints").glob("ckpt_*.pt"))
    data = bytearray(newest.read_bytes())
    data[len(data) // 2] ^= 0x10
    newest.write_bytes(bytes(data))
    learner = start_node("learner_node", learner_params, tmp_path / "learner1.log")
    procs.append(learner)
    restarted_versions = len(obs.updates)
    assert obs.until(lambda: any(u.version > version_at_kill + 1 for u in obs.updates[restarted_versions:]), 120), \
        (tmp_path / "learner1.log").read_text()[-3000:]
    text = (tmp_path / "learner1.log").read_text()
    assert f"skipping checkpoint: {newest}" in text and re.search(r"resumed from checkpoint v\d+", text)

    # -- SIGSTOP for 3 s, well past every timeout ----------------------------------------------------------
    obs.spin(2.0)
    learner.send_signal(signal.SIGSTOP)
    stopped = time.time()
    obs.spin(3.0)
    learner.send_signal(signal.SIGCONT)
    continued = time.time()
    assert obs.last_status().mode in ACTIVE and not obs.last_status().fault
    obs.spin(3.0)
    assert stop(learner) == 0
    during_pause = [key(m) for _, m in obs.transitions if stopped <= stamp(m) <= continued]
    missing = set(during_pause) - bag_keys(run_dir / "online" / "online_0001")
    assert len(during_pause) >= 2 * RATE and not missing, sorted(missing)

    verify_announcements(obs.updates[restarted_versions:])
    # What the learner published, from its logs: the observer's latched, depth-1 model_updates reader can miss an
    # announcement superseded before it was acknowledged (a busy machine), while the controller took the
    # version's weights on their own deep topic.
    announced = {int(v) for log in ("learner0.log", "learner1.log")
                 for v in re.findall(r"published model v(\d+)", (tmp_path / log).read_text())}
    assert {u.version for u in obs.updates} <= announced
    used = {s.model_version for _, s in obs.status if s.model_version}
    assert used <= announced, (used, sorted(announced))
    print(f"\nlearner SIGKILL {'during' if caught else 'between'} checkpoint writes: {len(published)} transitions "
          f"published before the kill, {len(lost)} lost (unflushed tail); controller stayed on model "
          f"v{version_at_kill}; restart skipped the damaged {newest.name} and resumed; SIGSTOP 3 s: "
          f"{len(during_pause)} transitions published during the pause, {len(missing)} lost; controller used "
          f"versions {sorted(used)}")
