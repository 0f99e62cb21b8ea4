"""A fleet over real DDS (#16): `tdmpc-ros launch arm arms:=2 lockstep:=true`, two sim arms with a controller each
feeding one learner. Both arms' transitions land in the learner's bags and replay with their episode ids apart
(each controller numbers its episodes from 0), each lockstep arm keeps a clock of its own, and the learner's
backlog, which both controllers pace by, is every arm's steps. The same split over two launches, as on two machines
(`learn:=false` and `role:=learner`), finds each other.
"""
from __future__ import annotations

import pytest

from test_end_to_end import write_config, write_demos
from tdmpc_ros.cli.harness import LaunchedGraph
from tdmpc_ros.cli.launch import Launcher
from tdmpc_ros.config import load_config
from tdmpc_ros.data.bags import read_episodes

pytestmark = [pytest.mark.ros, pytest.mark.slow]

ARMS = ("arm0", "arm1")
EPISODES = 2  # per arm: a few hundred steps in all (episodes end by success or at task.max_episode_steps)


def test_two_lockstep_arms_feed_one_learner_with_their_episodes_apart(tmp_path):
    write_config(tmp_path / "arm.yaml")
    write_demos(tmp_path / "demos")
    run = tmp_path / "run"
    arguments = {"config": str(tmp_path / "arm.yaml"), "demos": str(tmp_path / "demos"), "run_dir": str(run),
                 "lockstep": "true", "arms": ",".join(ARMS)}
    with LaunchedGraph(arguments, overrides={"agent.compile": False}, log_path=tmp_path / "launch.log",
                       observer_name="fleet_probe") as graph:
        learner = graph.observer.learner_values()
        graph.start()

        def held(arm: str) -> int:
            return int(learner.get(f"{arm}/replay_episodes", 0))

        assert graph.spin_until(lambda: all(held(arm) >= EPISODES for arm in ARMS), 400), graph.log_tail()
        stats = dict(learner)
        node = graph.observer.node
        clocks = {topic: node.count_publishers(topic) for topic in ("/clock", "/arm0/clock", "/arm1/clock")}
        codes = graph.shutdown(timeout=60)
    assert clocks == {"/clock": 0, "/arm0/clock": 1, "/arm1/clock": 1}  # no two arms' clocks on one topic
    assert set(codes) == {"arm0/arm", "arm0/controller", "arm1/arm", "arm1/controller", "learner"}
    assert all(code == 0 for code in codes.values()), codes
    # The learner's stats: every arm's steps counted in the one backlog both controllers pace by.
    assert int(stats["env_steps"]) == sum(int(stats[f"{arm}/env_steps"]) for arm in ARMS) > 0
    assert int(stats["transitions_lost"]) == 0

    # Its bags read back: each arm's in a folder and topic of its own, episodes whole and tagged with the arm.
    assert sorted(p.name for p in (run / "online").iterdir()) == list(ARMS)
    report = read_episodes([run / "online"], load_config(tmp_path / "arm.yaml"))
    assert not report.skipped, report.summary()
    by_arm = {arm: sorted((e for e in report.episodes if e.arm == arm), key=lambda e: e.episode_id) for arm in ARMS}
    assert {e.arm for e in report.episodes} == set(ARMS)
    for arm, episodes in by_arm.items():
        assert len(episodes) >= int(stats[f"{arm}/replay_episodes"]) >= EPISODES
        ids = [e.episode_id for e in episodes]
        assert ids == list(range(len(ids)))  # each arm's own numbering from 0, none lost, none merged
        # each arm's controller ran on its own arm's simulated clock (/clock remapped per group): stamps
        # rising from near zero, not wall time
        stamps = [int(s) for e in episodes for s in e.stamps_ns]
        assert stamps == sorted(stamps) and stamps[-1] < 10**12
    # the same ids on both arms, apart: (arm, id) names an episode
    shared = {e.episode_id for e in by_arm["arm0"]} & {e.episode_id for e in by_arm["arm1"]}
    assert shared >= set(range(EPISODES))


def test_arms_and_learner_launched_apart_find_each_other(tmp_path):
    """Two machines' launches, here two launchers on one domain: `arms:=2 learn:=false` (the robot PC) and
    `arms:=2 role:=learner` (the workstation). The controllers get the learner's models over DDS and the learner
    both arms' episodes."""
    write_config(tmp_path / "arm.yaml")
    write_demos(tmp_path / "demos")
    common = {"config": str(tmp_path / "arm.yaml"), "lockstep": "true", "arms": ",".join(ARMS)}
    learner_only = {**common, "role": "learner", "demos": str(tmp_path / "demos"), "run_dir": str(tmp_path / "run")}
    with LaunchedGraph(learner_only, overrides={"agent.compile": False}, log_path=tmp_path / "learner.log",
                       observer_name="fleet_probe") as graph:
        learner = graph.observer.learner_values()
        graph.start()  # the domain is exported while inside: the robot PC's launch below joins it
        with open(tmp_path / "arms.log", "w") as log:
            robot_pc = Launcher({**common, "learn": "false"}, out=log)
            robot_pc.start()
            try:
                assert list(robot_pc.procs) == ["arm0/arm", "arm0/controller", "arm1/arm", "arm1/controller"]
                assert graph.spin_until(lambda: all(int(learner.get(f"{arm}/replay_episodes", 0)) >= 1
                                                    for arm in ARMS) or robot_pc.exited_required(), 400), \
                    graph.log_tail()
                assert robot_pc.exited_required() is None, (tmp_path / "arms.log").read_text()[-3000:]
            finally:
                arm_codes = robot_pc.shutdown(timeout=60)
        assert set(graph.shutdown(timeout=60).values()) == {0}
    assert set(arm_codes.values()) == {0}, arm_codes
    lines = (tmp_path / "arms.log").read_text().splitlines()
    for arm in ARMS:  # each controller took the learner's model over DDS before its episodes
        assert any(line.startswith(f"[{arm}/controller]") and "verified and ready (model_weights" in line
                   for line in lines)
