"""`tdmpc-ros train` as a subprocess on real demo bags (loss falls, --resume, SIGINT), and the metrics logger."""
from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tdmpc_ros.learning.metrics import MetricsLogger, plot_learning_curve, read_metrics

pytestmark = pytest.mark.slow

CLI = [sys.executable, "-m", "tdmpc_ros.cli.main"]


def test_metrics_csv_widens_for_new_keys_and_plots(tmp_path):
    logger = MetricsLogger(tmp_path / "run")
    logger.log(10, {"loss": 2.0, "mode": "pretraining"})
    logger.log(20, {"loss": 1.5, "success_rate": 0.25})
    logger.close()
    resumed = MetricsLogger(tmp_path / "run", tensorboard=False)  # a resumed run appends to the same file
    resumed.log(30, {"loss": 1.0, "success_rate": 0.5})
    data = read_metrics(tmp_path / "run" / "metrics.csv")
    assert data["step"] == [10, 20, 30] and data["loss"] == [2.0, 1.5, 1.0]
    assert math.isnan(data["success_rate"][0]) and data["success_rate"][1:] == [0.25, 0.5]
    assert list((tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"))
    png = plot_learning_curve(tmp_path / "run" / "metrics.csv", tmp_path / "curve.png", ys=["loss", "success_rate"])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    with pytest.raises(ValueError, match="metrics.csv: no column"):
        plot_learning_curve(tmp_path / "run" / "metrics.csv", tmp_path / "x.png", ys=["nope"])


@pytest.fixture(scope="module")
def demos(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("train") / "demos"
    subprocess.run(CLI + ["demos", "--episodes", "6", "--out", str(out)], check=True, capture_output=True)
    return out


def train(demos: Path, tmp: Path, *extra: str) -> list[str]:
    return CLI + ["train", "--demos", str(demos), "--out", str(tmp / "model.pt"), "--run-dir", str(tmp / "run"),
                  "--batch-size", "64", "--device", "cpu", "--threads", "1", "--log-every", "10", *extra]


def checkpoint_updates(path: Path) -> int:
    from tdmpc_ros.learning.checkpoint import load_checkpoint

    return int(load_checkpoint(path).meta["updates"])


def test_train_loss_falls_then_resume_continues(demos, tmp_path):
    done = subprocess.run(train(demos, tmp_path, "--updates", "150"), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "demos: loaded 6 episodes" in done.stdout
    assert checkpoint_updates(tmp_path / "model.pt") == 150
    data = read_metrics(tmp_path / "run" / "metrics.csv")
    assert data["step"] == list(range(10, 151, 10))
    loss = np.array(data["total_loss"])
    assert loss[-5:].mean() < 0.5 * loss[:3].mean(), loss
    assert (tmp_path / "run" / "learning_curve.png").stat().st_size > 10_000
    # The run's resolved config is saved as a parameter file that loads back to the same config.
    from tdmpc_ros.config import load_config
    from tdmpc_ros.learning.checkpoint import load_checkpoint

    assert load_config(tmp_path / "run" / "config.yaml") == load_checkpoint(tmp_path / "model.pt").config

    again = subprocess.run(train(demos, tmp_path, "--updates", "180", "--resume"), capture_output=True, text=True,
                           timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resumed" in again.stdout and "at update 150" in again.stdout
    assert checkpoint_updates(tmp_path / "model.pt") == 180
    data = read_metrics(tmp_path / "run" / "metrics.csv")
    assert data["step"] == list(range(10, 181, 10))
    assert np.mean(data["total_loss"][-3:]) < 0.5 * loss[:3].mean()  # optimiser state resumed, no restart spike
    refused = subprocess.run(train(demos, tmp_path, "--updates", "10"), capture_output=True, text=True)
    assert refused.returncode == 2 and "pass --resume" in refused.stderr


def test_sigint_saves_a_checkpoint_and_exits_cleanly(demos, tmp_path):
    proc = subprocess.Popen(train(demos, tmp_path, "--updates", "100000"), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    csv = tmp_path / "run" / "metrics.csv"
    deadline = time.monotonic() + 300  # the first update compiles: about a minute with a cold cache
    while time.monotonic() < deadline and proc.poll() is None:
        if csv.exists() and len(csv.read_text().splitlines()) >= 3:  # 20 updates done: training is under way
            break
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err[-3000:]
    assert "interrupted: saved" in out
    updates = checkpoint_updates(tmp_path / "model.pt")
    assert 20 <= updates < 100000
    resumed = subprocess.run(train(demos, tmp_path, "--updates", str(updates + 10), "--resume"),
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert checkpoint_updates(tmp_path / "model.pt") == updates + 10
