"""The shipped reach model: verifies, fits config/arm.yaml, reaches goals with the torch planner, and its ONNX
plan graph gives the same episodes."""
from __future__ import annotations

from pathlib import Path

import pytest

from tdmpc_ros.cli.eval import evaluate_checkpoint
from tdmpc_ros.cli.main import build_parser
from tdmpc_ros.config import default_config_path, load_config
from tdmpc_ros.learning.checkpoint import check_model_config, load_checkpoint

pytestmark = pytest.mark.unit

MODELS = Path(__file__).resolve().parent.parent / "models"
CHECKPOINT = MODELS / "reach_small.pt"
ONNX = MODELS / "reach_small.onnx"


def run_eval(*extra: str) -> dict:
    return evaluate_checkpoint(build_parser().parse_args(["eval", "--checkpoint", str(CHECKPOINT), "--seed", "7",
                                                          *extra]))


def test_shipped_files_verify_and_fit_the_config():
    ckpt = load_checkpoint(CHECKPOINT)  # checks the .sha256 sidecar
    check_model_config(ckpt, load_config(default_config_path()).model)
    total = sum(p.stat().st_size for p in (CHECKPOINT, ONNX, MODELS / "reach_small.pt.sha256"))
    assert total < 10 * 1024 * 1024


@pytest.fixture(scope="module")
def torch_eval():
    return run_eval("--episodes", "10")


def test_torch_planner_reaches_most_goals(torch_eval):
    result, task = torch_eval, load_config(default_config_path()).task
    assert result["success_rate"] >= 0.8, result
    radius = task.success_radius
    assert len(result["final_distances"]) == 10
    assert all(d <= radius for d, s in zip(result["final_distances"], result["successes"]) if s), result
    assert result["mean_length"] < task.max_episode_steps


def test_shipped_onnx_graph_matches_torch(torch_eval):
    result = run_eval("--episodes", "2", "--backend", "onnx", "--onnx", str(ONNX))
    assert result["backend"] == "onnx"
    assert result["successes"] == torch_eval["successes"][:2]
    first_two = run_eval("--episodes", "2")  # same seed: the same goals, start poses and draws
    assert result["mean_return"] == pytest.approx(first_two["mean_return"], abs=1e-3)
