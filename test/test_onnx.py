"""ONNX backend: the exported plan graph agrees with torch on the same draws, falls back to ONNX Runtime's CPU
provider without error logs, and `tdmpc-ros export-onnx` writes a checked graph of a real checkpoint."""
from __future__ import annotations

import json
import logging
import re

import numpy as np
import pytest
import torch

from tdmpc_ros.cli.main import main
from tdmpc_ros.config import ModelConfig, PlannerConfig, load_config
from tdmpc_ros.learning.agent import Agent
from tdmpc_ros.learning.checkpoint import agent_from_checkpoint, load_checkpoint, save_checkpoint
from tdmpc_ros.model.world_model import WorldModel
from tdmpc_ros.planner import DrawSource, PlanSpec, make_planner, plan_step
from tdmpc_ros.planner.onnx_backend import INPUT_NAMES, cuda_provider_problem, load_plan_session

pytestmark = pytest.mark.unit

TINY = dict(obs_dim=4, action_dim=2, latent_dim=16, mlp_dim=32, enc_dim=32, num_q=3)
FAST = dict(horizon=2, iterations=2, num_samples=64, num_elites=8, num_pi_trajs=8, compile=False)


def perturb(model: torch.nn.Module, seed: int) -> None:
    """Random weights everywhere: a fresh model's zero reward/Q heads would tie every value (topk ambiguous).

    Kept small so values stay at a trained model's scale; huge random values (symexp of far bins) turn
    float32 rounding differences between the two runtimes into visible weight differences."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)


def test_onnx_and_torch_agree_on_the_same_draws():
    model = WorldModel(ModelConfig(**TINY))
    perturb(model, 0)
    torch_planner = make_planner(model, PlannerConfig(**FAST), discount=0.9, seed=3)
    onnx_planner = make_planner(model, PlannerConfig(**FAST, backend="onnx"), discount=0.9, seed=3)
    assert (onnx_planner.backend, onnx_planner.device) == ("onnx", "cpu")
    rng = np.random.default_rng(0)
    for step in range(4):  # warm-started calls included
        obs = rng.normal(size=4).astype(np.float32)
        eval_mode = step == 3
        a, b = torch_planner.plan(obs, eval_mode), onnx_planner.plan(obs, eval_mode)
        assert set(torch_planner.last_elites) == set(onnx_planner.last_elites)
        np.testing.assert_allclose(b, a, atol=1e-5)
        np.testing.assert_allclose(onnx_planner.last_mean, torch_planner.last_mean, atol=1e-5)
    onnx_planner.reset()
    assert not onnx_planner._warm.any()


def test_cuda_request_falls_back_to_cpu_without_error_logs(capfd, caplog):
    problem = cuda_provider_problem()
    if problem is None:
        pytest.skip("onnxruntime's CUDA provider is usable on this machine: no fallback to test")
    model = WorldModel(ModelConfig(**TINY))
    perturb(model, 1)
    cfg = PlannerConfig(horizon=1, iterations=1, num_samples=16, num_elites=4, num_pi_trajs=4, backend="onnx",
                        device="cuda", compile=False)
    with caplog.at_level(logging.WARNING, logger="tdmpc_ros.planner"):
        planner = make_planner(model, cfg, discount=0.9)
        action = planner.plan(np.zeros(4, np.float32))
    out, err = capfd.readouterr()
    assert planner.device == "cpu"
    assert action.shape == (2,) and np.abs(action).max() <= 1
    assert "CUDA provider unavailable" in caplog.text
    assert "[E:onnxruntime" not in out + err and "[ONNXRuntimeError]" not in out + err, out + err


def test_export_onnx_command_writes_a_checked_plan_graph(tmp_path, capsys):
    cfg = load_config(overrides={"planner": FAST})
    agent = Agent(cfg)
    perturb(agent.model, 2)
    checkpoint = tmp_path / "agent.pt"
    save_checkpoint(checkpoint, agent)
    out = tmp_path / "plan.onnx"
    assert main(["export-onnx", str(checkpoint), str(out)]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["check_same_elites"] and report["check_max_abs_diff"] < 1e-5

    session, spec = load_plan_session(out)
    assert spec == PlanSpec.from_config(cfg.planner, cfg.discount, 7, cfg.model.num_q)
    assert [i.name for i in session.get_inputs()] == list(INPUT_NAMES)
    model = agent_from_checkpoint(load_checkpoint(checkpoint)).model.eval()
    source = DrawSource(spec, seed=11)
    obs, mean = torch.linspace(-1, 1, 23), torch.zeros(spec.horizon, 7)
    for _ in range(2):
        draws = source.fill()
        got = session.run(None, dict(zip(INPUT_NAMES, (t.numpy() for t in (obs, mean, *draws)))))
        with torch.inference_mode():
            want = plan_step(model, spec, obs, mean, draws)
        np.testing.assert_allclose(got[0], want[0].numpy(), atol=1e-5)
        assert set(got[2].tolist()) == set(want[2].tolist())
        mean = torch.cat([torch.from_numpy(got[1])[1:], torch.zeros(1, 7)])


def test_export_onnx_names_a_bad_checkpoint(tmp_path, capsys):
    bad = tmp_path / "broken.pt"
    bad.write_bytes(b"not a checkpoint")
    assert main(["export-onnx", str(bad), str(tmp_path / "x.onnx")]) == 2
    assert re.match(r"tdmpc-ros export-onnx: error: .*broken\.pt", capsys.readouterr().err)
    assert not (tmp_path / "x.onnx").exists()
