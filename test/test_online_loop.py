"""run_online and `tdmpc-ros bench learn` end to end on tiny settings: real PyBullet, real training, real planner."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import yaml

from tdmpc_ros.cli.main import main
from tdmpc_ros.config import load_config
from tdmpc_ros.learning.checkpoint import load_checkpoint
from tdmpc_ros.learning.online_loop import ROLLING_WINDOW, run_online


TINY = {
    "model": {"preset": "small"},
    "planner": {"num_samples": 32, "iterations": 2, "num_elites": 4, "num_pi_trajs": 4, "compile": False},
    "agent": {"batch_size": 16, "device": "cpu", "utd_ratio": 1.0},
    "task": {"max_episode_steps": 30},
    "learner": {"pretrain_updates": 10, "publish_every": 50, "keep_checkpoints": 2},
}


@pytest.mark.slow
def test_run_online_trains_on_every_step_and_checkpoints(tmp_path):
    cfg = load_config(None, TINY)
    result = run_online(cfg, env_steps=120, seed=3, run_dir=tmp_path, demo_episodes=2, eval_every=60,
                        eval_episodes=1, log=lambda text: None)
    records = result.episodes
    lengths = [r.length for r in records]
    assert all(1 <= n <= 30 for n in lengths)
    assert [r.env_steps for r in records] == list(np.cumsum(lengths))
    assert records[-1].env_steps >= 120 and records[-2].env_steps < 120
    # utd 1: after each episode exactly one update per online step has been done, on top of pretraining.
    assert [r.updates for r in records] == [10 + r.env_steps for r in records]
    assert result.updates == 10 + records[-1].env_steps
    assert result.replay_online_steps == records[-1].env_steps
    successes = [r.success for r in records]
    for i, r in enumerate(records):
        assert r.success_rate == pytest.approx(np.mean(successes[max(0, i + 1 - ROLLING_WINDOW): i + 1]))
        assert r.success or r.length == 30  # failures run to the step limit
    assert [e.env_steps >= 60 * (k + 1) for k, e in enumerate(result.evals)] == [True] * len(result.evals)
    assert len(result.evals) >= 1 and all(0 <= e.success_rate <= 1 and e.mean_length <= 30 for e in result.evals)
    assert result.demo_success_rate == 1.0
    ckpt = load_checkpoint(result.checkpoint)  # the final checkpoint verifies against its sidecar
    assert ckpt.meta["updates"] == result.updates and ckpt.meta["env_steps"] == records[-1].env_steps
    assert len(list((tmp_path / "checkpoints").glob("ckpt_*.pt"))) == 2  # rotation kept the newest two
    assert result.time_s["plan"] > 0 and result.time_s["update"] > 0


@pytest.mark.slow
def test_bench_learn_writes_json_csv_and_png(tmp_path, capsys):
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({"/**": {"ros__parameters": TINY}}))
    png = tmp_path / "curve.png"
    code = main(["bench", "learn", "--seeds", "2", "--first-seed", "3", "--env-steps", "40", "--demos", "1",
                 "--config", str(config), "--png", str(png), "--run-dir", str(tmp_path / "runs"), "--json"])
    assert code == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [s["seed"] for s in report["seeds"]] == [3, 4]
    assert "rolling success rate" in report["success_metric"]
    for seed in report["seeds"]:
        assert seed["curve"][-1][0] >= 40 and all(0 <= rate <= 1 for _, rate in seed["curve"])
        assert seed["updates"] == 10 + seed["curve"][-1][0]
        assert load_checkpoint(seed["checkpoint"]).meta["updates"] == seed["updates"]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with open(report["csv"], newline="") as f:
        rows = list(csv.DictReader(f))
    assert {row["seed"] for row in rows} == {"3", "4"}
    assert sum(int(row["length"]) for row in rows if row["seed"] == "3") == report["seeds"][0]["curve"][-1][0]


@pytest.mark.unit
def test_bench_learn_compare_labels_runs_by_what_differs(tmp_path, capsys):
    """An ablation's plot: the runs' curves together, the first named by the settings in which the runs differ,
    each other by where it departs from the first."""
    def run(demos: int, ratio: float) -> str:
        seed = {"seed": 0, "curve": [[500, 0.0], [1000, 0.5 * ratio]], "env_steps_to_50": None, "env_steps_to_80": None,
                "env_steps_to_90": None, "final_success_rate": 0.5 * ratio}
        report = {"task": "push", "seeds": [seed], "demos": demos, "demo_ratio": ratio, "reward": "dense",
                  "env_steps": 1000, "config": {"task": {"robot": "kuka_iiwa", "action_space": "joint"}}}
        path = tmp_path / f"d{demos}_r{ratio}.json"
        path.write_text(json.dumps(report))
        return str(path)

    runs = [run(20, 0.5), run(20, 0.0), run(0, 0.5)]
    png = tmp_path / "ablation.png"
    assert main(["bench", "learn", "--compare", *runs, "--png", str(png)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert [r["label"] for r in result["runs"]] == ["20 demos, demo_ratio 0.5", "demo_ratio 0", "0 demos"]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    bad = tmp_path / "other.json"
    bad.write_text(json.dumps({"task": "push", "seeds": []}))
    assert main(["bench", "learn", "--compare", runs[0], str(bad)]) == 2
    assert "other.json is not a bench learn JSON" in capsys.readouterr().err


def learn_report(tmp_path, name: str, seeds: list[int], **config) -> str:
    """A bench learn JSON of push with `seeds` (each reaching 90 % at 1000 * (seed + 1) env steps) and the task
    fields `config`; its path."""
    report = {"task": "push", "reward": "dense", "demos": 20, "demo_ratio": 0.5, "env_steps": 5000, "csv": name,
              "load_avg_1m": 1.0, "config": {"task": {"robot": "kuka_iiwa", "action_space": "joint", **config}},
              "seeds": [{"seed": n, "curve": [[500, 0.0], [1000 * (n + 1), 0.9]], "env_steps_to_50": None,
                         "env_steps_to_80": None, "env_steps_to_90": 1000 * (n + 1), "final_success_rate": 0.9,
                         "wall_s": 10.0 * (n + 1)} for n in seeds]}
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(report))
    return str(path)


@pytest.mark.unit
def test_bench_learn_combine_joins_seeds_of_one_protocol(tmp_path, capsys):
    """Seeds run in separate processes (--first-seed) become one report: seeds in order, figures over all."""
    parts = [learn_report(tmp_path, "b", [2]), learn_report(tmp_path, "a", [0, 1])]
    png = tmp_path / "joined.png"
    assert main(["bench", "learn", "--combine", *parts, "--png", str(png)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [s["seed"] for s in report["seeds"]] == [0, 1, 2]
    assert (report["all_reached_90"], report["max_env_steps_to_90"], report["max_wall_s"]) == (True, 3000, 30.0)
    assert report["combined_from"] == parts and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["bench", "learn", "--combine", parts[1], learn_report(tmp_path, "c", [1, 3])]) == 2
    assert "seed(s) [1] given twice" in capsys.readouterr().err
    other = learn_report(tmp_path, "d", [5], approach_offset=0.08)
    assert main(["bench", "learn", "--combine", parts[1], other]) == 2
    assert "d.json differs from" in capsys.readouterr().err.replace(str(tmp_path) + "/", "")


@pytest.mark.unit
def test_bench_learn_compare_names_config_fields_that_differ(tmp_path, capsys):
    """Runs that differ in a config field no named setting covers are labelled by it; a run whose JSON lacks the
    field (made before it existed) counts as its default."""
    runs = [learn_report(tmp_path, "old", [0]), learn_report(tmp_path, "new", [0], approach_offset=0.08)]
    assert main(["bench", "learn", "--compare", *runs, "--png", str(tmp_path / "c.png")]) == 0
    labels = [r["label"] for r in json.loads(capsys.readouterr().out)["runs"]]
    assert labels == ["task.approach_offset 0.0", "task.approach_offset 0.08"]
