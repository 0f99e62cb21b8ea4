"""World-model variants through the controller node over real DDS: it plans with a variant's checkpoint on either
backend (the architecture comes from the checkpoint's config, not the node's), and a model update to another
variant swaps the planner while it controls."""
from __future__ import annotations

import pytest

from ros_helpers import PerfectArm, next_items, spin_until, start_node, stop, untrained_checkpoint
from test_markers import FAST
from tdmpc_ros import topics
from tdmpc_ros.cli.bench_variants import VARIANTS
from tdmpc_ros.config import load_config, merge
from tdmpc_ros.kinematics import ArmKinematics
from tdmpc_ros.learning.checkpoint_file import file_sha256
from tdmpc_ros.msg import ModelUpdate
from tdmpc_ros.nodes import qos

pytestmark = pytest.mark.ros

NO_MARKERS = {**FAST, "controller.markers_hz": 0.0}


def variant_checkpoint(tmp_path, name: str) -> str:
    return untrained_checkpoint(tmp_path / f"{name}.pt",
                                load_config(None, merge(VARIANTS[name], {"agent": {"compile": False}})))


def planning_with(arm: PerfectArm, version: int, log) -> None:
    """Wait for a status of model `version` controlling, then for commands published after it (on a loaded machine
    some ticks may take the variant's policy prior instead of its plan: that is the variant controlling too)."""
    assert spin_until(arm.node, lambda: any(s.model_version == version and s.mode in ("planning", "policy_fallback")
                                            for s in arm.status), 120), log.read_text()[-3000:]
    next_items(arm.node, arm.commands, 5)


@pytest.mark.parametrize("name,backend", [("fsq", "onnx"), ("tdmpc1", "torch")])
def test_the_controller_plans_with_a_variant_and_swaps_to_another(tmp_path, rclpy_context, name, backend):
    log = tmp_path / "controller.log"
    proc = start_node("controller_node", {**NO_MARKERS, "planner.backend": backend,
                                          "controller.model_path": variant_checkpoint(tmp_path, name)}, log)
    try:
        cfg = load_config()
        arm = PerfectArm(rclpy_context, cfg, (0.5, 0.1, 0.5), 0.02)
        planning_with(arm, 1, log)
        assert arm.status[-1].backend == backend
        limits = ArmKinematics(cfg.task)
        limits.close()
        assert all(len(c) == cfg.task.action_dim and (c >= limits.safe_lower - 1e-9).all()
                   and (c <= limits.safe_upper + 1e-9).all() for c in arm.commands)
        other = variant_checkpoint(tmp_path, "tdmpc2")
        arm.node.create_publisher(ModelUpdate, topics.MODEL_UPDATES, qos.LATCHED).publish(
            ModelUpdate(version=2, path=other, sha256=file_sha256(other)))
        planning_with(arm, 2, log)
        assert "rejected" not in log.read_text()
    finally:
        assert stop(proc) == 0
