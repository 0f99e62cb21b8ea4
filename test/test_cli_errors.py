"""Expected errors in the CLI: one line naming the thing, exit 2 (argparse's code), no traceback; --debug shows it.

The cases run `main()` in-process (a subprocess costs ~2 s of imports each); the --debug case runs the real
entry point as a process.
"""
from __future__ import annotations

import subprocess
import sys

import pytest

from ros_helpers import REPO
from tdmpc_ros.cli.main import main

pytestmark = pytest.mark.unit


def tdmpc_ros(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tdmpc_ros.cli.main", *args], capture_output=True, text=True,
                          cwd=REPO, timeout=300)


@pytest.fixture
def bad_config(tmp_path):
    path = tmp_path / "arm.yaml"
    path.write_text("/**:\n  ros__parameters:\n    task: {action_scale: .nan}\n")
    return path


@pytest.mark.parametrize("command", [
    lambda cfg, tmp: ["eval", "--config", str(cfg), "--checkpoint", "models/reach_small.pt", "--episodes", "1"],
    lambda cfg, tmp: ["train", "--config", str(cfg), "--demos", str(tmp), "--updates", "1", "--out", str(tmp / "m.pt")],
    lambda cfg, tmp: ["eval", "--checkpoint", str(tmp / "missing.pt"), "--episodes", "1"],
    lambda cfg, tmp: ["train", "--demos", str(tmp), "--updates", "0", "--out", str(tmp / "m.pt")],
], ids=["bad config value (eval)", "bad config value (train)", "missing checkpoint", "argument out of range"])
def test_expected_errors_are_one_line_and_exit_2(command, bad_config, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    returncode = main(command(bad_config, tmp_path))
    stderr = capsys.readouterr().err
    errors = [line for line in stderr.splitlines() if line.strip()]
    assert returncode == 2, stderr
    assert "Traceback" not in stderr and len(errors) == 1, stderr
    assert errors[0].startswith("tdmpc-ros ") and ": error: " in errors[0]
    named = {"eval": "task.action_scale", "train": "task.action_scale"}
    if str(bad_config) in command(bad_config, tmp_path):
        assert named[command(bad_config, tmp_path)[0]] in errors[0] and str(bad_config) in errors[0]


def test_debug_shows_the_traceback(bad_config):
    result = tdmpc_ros("--debug", "eval", "--config", str(bad_config), "--checkpoint", "models/reach_small.pt")
    assert result.returncode != 0 and "Traceback" in result.stderr and "task.action_scale" in result.stderr


def test_resuming_under_another_agent_config_names_the_field(tmp_path, capsys, monkeypatch):
    """--resume with a config whose agent has a decoder, on a checkpoint without one: refused, not ignored."""
    from tdmpc_ros.config import load_config
    from tdmpc_ros.learning.agent import Agent
    from tdmpc_ros.learning.checkpoint import save_checkpoint

    monkeypatch.chdir(REPO)
    save_checkpoint(tmp_path / "m.pt", Agent(load_config("config/arm.yaml")))
    decoder = tmp_path / "decoder.yaml"
    decoder.write_text("/**:\n  ros__parameters:\n    agent: {decoder_coef: 1.0}\n")
    assert main(["train", "--config", str(decoder), "--demos", str(tmp_path), "--updates", "1",
                 "--out", str(tmp_path / "m.pt"), "--resume"]) == 2
    assert "cannot resume" in (err := capsys.readouterr().err) and "agent.decoder_coef" in err, err


@pytest.mark.parametrize("flag", [["--png", "x.png"], ["--csv", "x.csv"], ["--eval-every", "500"],
                                  ["--threads", "2"], ["--robot", "xarm6"]])
def test_bench_learn_refuses_in_process_flags_with_arms(flag, capsys):
    """A fleet run would ignore them: refused, naming them, before anything is launched."""
    assert main(["bench", "learn", "--arms", "2", *flag]) == 2
    assert flag[0] in capsys.readouterr().err
