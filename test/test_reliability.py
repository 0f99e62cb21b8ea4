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
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PointStamped
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray

from ros_helpers import spin_until, start_node, stop
from tdmpc_ros import topics
from tdmpc_ros.config import Config, load_config
from tdmpc_ros.data.bags import read_episodes, write_transition_bag
from tdmpc_ros.learning.agent import Agent
from tdmpc_ros.learning.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from tdmpc_ros.msg import ModelUpdate, PlannerStatus, Transition
from tdmpc_ros.nodes import qos
from tdmpc_ros.sim.expert import ScriptedExpert
from tdmpc_ros.sim.reach_env import ReachEnv, collect_episode

CFG = Config()
RATE = CFG.task.control_rate_hz
SCALE = CFG.task.action_scale
TIMEOUT = CFG.controller.state_timeout
COMMANDS = topics.COMMAND_TOPICS["float64_multi_array"]
FAST_PLANNER = {"planner.compile": False, "planner.num_samples": 64, "planner.num_pi_trajs": 8,
                "planner.num_elites": 8, "planner.iterations": 2}
FAST_LEARNER = {"agent.batch_size": 32, "learner.pretrain_updates": 40, "learner.publish_every": 20,
                "learner.log_every_s": 1.0, "learner.keep_checkpoints": 1000}
ACTIVE = ("planning", "policy_fallback")  # controlling (a plan, or the policy prior on a missed deadline)
STATUS_PERIOD = 1.0  # the controller publishes PlannerStatus once a second


class Observer:
    """The test's own rclpy node: records commands, joint states, status, transitions and model updates."""

    def __init__(self, context):
        import rclpy

        self.node = rclpy.create_node("reliability_observer", context=context)
        self.commands: list[tuple[float, np.ndarray]] = []
        self.states: list[tuple[float, np.ndarray]] = []
        self.status: list[tuple[float, PlannerStatus]] = []
        self.transitions: list[tuple[float, Transition]] = []
        self.updates: list[ModelUpdate] = []
        self.goals: list[PointStamped] = []
        self.learner_diag: dict[str, str] = {}
        now = time.monotonic
        self.node.create_subscription(Float64MultiArray, COMMANDS,
                                      lambda m: self.commands.append((now(), np.array(m.data))), qos.STATE)
        self.node.create_subscription(JointState, topics.JOINT_STATES,
                                      lambda m: self.states.append((now(), np.array(m.position))), qos.STATE)
        self.node.create_subscription(PlannerStatus, topics.PLANNER_STATUS,
                                      lambda m: self.status.append((now(), m)), 10)
        self.node.create_subscription(Transition, topics.TRANSITIONS,
                                      lambda m: self.transitions.append((now(), m)), qos.TRANSITIONS)
        self.node.create_subscription(ModelUpdate, topics.MODEL_UPDATES, self.updates.append, qos.LATCHED)
        self.node.create_subscription(PointStamped, topics.GOAL, self.goals.append, qos.LATCHED)
        self.node.create_subscription(DiagnosticArray, topics.DIAGNOSTICS, self.on_diag, 10)
        self.jog_pub = self.node.create_publisher(Float64MultiArray, COMMANDS, qos.STATE)

    def on_diag(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.name.endswith("tdmpc_learner"):
                self.learner_diag = {kv.key: kv.value for kv in status.values}

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

    Counted in message order (moving commands x period), not by arrival time, so a test process lagging
    behind its inbox can not skew it.
    """
    last_state = obs.states[-1][0]
    before = [c for t, c in obs.commands if t <= last_state][-1:]
    cmds = before + [c for t, c in obs.commands if t > last_state]
    changes = [i for i in range(1, len(cmds)) if not np.array_equal(cmds[i], cmds[i - 1])]
    last_change = changes[-1] if changes else 0
    return len(changes) / RATE, len(cmds) - 1 - last_change


def write_checkpoint(path, seed: int = 1):
    return save_checkpoint(path, Agent(load_config(overrides={"agent": {"seed": seed}})),
                           {"updates": 0, "env_steps": 0})


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
    write_checkpoint(tmp_path / "v1.pt")
    controller_params = {"controller.model_path": str(tmp_path / "v1.pt"), **FAST_PLANNER}
    arm = start_node("arm_node", {}, tmp_path / "arm0.log")
    controller = start_node("controller_node", controller_params, tmp_path / "controller0.log")
    procs += [arm, controller]
    obs = Observer(rclpy_context)
    assert obs.until(obs.planning, 90), (tmp_path / "controller0.log").read_text()[-3000:]

    # -- arm SIGKILL, then a new arm process --------------------------------------------------------------
    arm.send_signal(signal.SIGKILL)
    arm.wait()
    assert obs.until(lambda: "stale" in (obs.last_status().fault or ""), TIMEOUT + 2 * STATUS_PERIOD + 1)
    obs.spin(0.5)
    arm_kill_hold, held = hold_after_last_state(obs)
    assert held >= 0.5 * RATE  # holds, publishing the same target at the rate
    assert arm_kill_hold <= TIMEOUT + 3 / RATE
    arm = start_node("arm_node", {}, tmp_path / "arm1.log")
    procs.append(arm)
    restarted = time.monotonic()
    assert obs.until(lambda: obs.planning(since=restarted), 60), "control did not resume after the arm returned"
    arm_resume = next(t for t, s in obs.status if t > restarted and s.mode in ACTIVE) - restarted

    # -- arm SIGSTOP for 4 x state_timeout, then SIGCONT --------------------------------------------------
    obs.spin(1.0)
    arm.send_signal(signal.SIGSTOP)
    assert obs.until(lambda: "stale" in (obs.last_status().fault or ""), TIMEOUT + 2 * STATUS_PERIOD + 1)
    arm_pause_hold, held = hold_after_last_state(obs)
    assert arm_pause_hold <= TIMEOUT + 3 / RATE and held >= 5  # the timeout, rounded up to whole ticks
    arm.send_signal(signal.SIGCONT)
    continued = time.monotonic()
    assert obs.until(lambda: obs.planning(since=continued), 10), [(s.mode, s.fault) for _, s in obs.status[-5:]]
    pause_resume = next(t for t, s in obs.status if t > continued and s.mode in ACTIVE) - continued

    # -- controller SIGKILL: the arm holds its last target -----------------------------------------------
    # Killed early in an arm episode: the sim's episode clock runs on once commanded, and at its step limit
    # (5 s) the sim resets the arm to home, as an episode end does.
    goals = len(obs.goals)
    assert obs.until(lambda: len(obs.goals) > goals, 10)
    obs.spin(0.5)
    controller.send_signal(signal.SIGKILL)
    controller.wait()
    last_target = obs.commands[-1][1]
    obs.spin(1.0)
    recent = np.array([q for t, q in obs.states if t > time.monotonic() - 0.5])
    drift = float(np.abs(recent - recent[-1]).max())
    tracking = float(np.abs(recent[-1] - last_target).max())
    assert len(recent) > 10 and drift < 1e-3 and tracking < 0.02  # holding still, at the last target

    # Jog the arm well away from the dead controller's target, so a stale target would show.
    jog = last_target + np.where(np.arange(len(last_target)) % 2 == 0, 0.2, -0.2)
    for _ in range(20):
        obs.jog_pub.publish(Float64MultiArray(data=jog.tolist()))
        obs.spin(0.05)
    obs.spin(0.5)
    jogged = obs.states[-1][1]
    assert np.abs(jogged - last_target).max() > 3 * SCALE
    obs.commands.clear()
    controller = start_node("controller_node", controller_params, tmp_path / "controller1.log")
    procs.append(controller)
    assert obs.until(lambda: len(obs.commands) >= 1, 90), (tmp_path / "controller1.log").read_text()[-3000:]
    first_t, first = obs.commands[0]
    measured = [q for t, q in obs.states if t < first_t][-1]
    first_step = float(np.abs(first - measured).max())
    assert first_step <= SCALE + 1e-3, (first, measured)
    print(f"\narm SIGKILL: controller moved on for {arm_kill_hold:.2f} s after the last state (state_timeout {TIMEOUT}); "
          f"planning again {arm_resume:.2f} s after the new arm process started\n"
          f"arm SIGSTOP: moved on for {arm_pause_hold:.2f} s after the last state; planning {pause_resume:.2f} s "
          f"after SIGCONT\ncontroller SIGKILL: arm drift {drift:.2e} rad over 0.5 s, {tracking:.4f} rad from the "
          f"last target; restarted controller's first command {first_step:.4f} rad from the measured q "
          f"(action_scale {SCALE}, stale target was {np.abs(jogged - last_target).max():.3f} rad away)")
    text = (tmp_path / "controller0.log").read_text()
    assert "holding last target: joint state stale" in text and "resuming control" in text
