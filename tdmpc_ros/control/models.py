"""Turning a checkpoint file into a ready planner, off the control thread."""
from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np

from tdmpc_ros.config import Config


class ModelRejected(Exception):
    """A checkpoint that must not be loaded: the message names the file and the reason."""


def load_planner(path: str, sha256: str | None, cfg: Config, seed: int = 0):
    """Verify and load a checkpoint and build the configured planner (compiled/exported and warmed up)."""
    from tdmpc_ros.learning.checkpoint import CheckpointError, agent_from_checkpoint, load_checkpoint
    from tdmpc_ros.planner import make_planner

    try:
        ckpt = load_checkpoint(path, expected_sha256=sha256 or None)
    except CheckpointError as exc:
        raise ModelRejected(str(exc)) from exc
    model_cfg = ckpt.config.model
    if (model_cfg.obs_dim, model_cfg.action_dim) != (cfg.task.obs_dim, cfg.task.action_dim):
        raise ModelRejected(f"{path}: checkpoint is for obs_dim {model_cfg.obs_dim} / action_dim "
                            f"{model_cfg.action_dim}, this arm needs {cfg.task.obs_dim} / {cfg.task.action_dim}")
    agent = agent_from_checkpoint(ckpt, device=cfg.planner.device)
    planner = make_planner(agent.model, cfg.planner, discount=ckpt.config.discount, seed=seed)
    planner.plan(np.zeros(cfg.task.obs_dim, np.float32))  # warm-up (compile, ORT session) before it is used
    planner.reset()
    return planner


class ModelLoader:
    """Loads one checkpoint at a time on its own thread; the newest request wins, stale ones are skipped."""

    def __init__(self, cfg: Config, on_ready: Callable[[object, int, str], None],
                 on_error: Callable[[str], None]):
        self.cfg = cfg
        self.on_ready = on_ready
        self.on_error = on_error
        self._request: tuple[str, str, int] | None = None
        self._wake = threading.Condition()
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="model-loader", daemon=True)
        self._thread.start()

    def request(self, path: str, sha256: str, version: int) -> None:
        with self._wake:
            self._request = (path, sha256, version)
            self._wake.notify()

    def _run(self) -> None:
        while True:
            with self._wake:
                while self._request is None and not self._stop:
                    self._wake.wait()
                if self._stop:
                    return
                path, sha256, version = self._request
                self._request = None
            try:
                self.on_ready(load_planner(path, sha256, self.cfg), version, path)
            except ModelRejected as exc:
                self.on_error(f"rejected model v{version}: {exc}")
            except Exception as exc:  # a model that breaks the planner must never take control down
                self.on_error(f"rejected model v{version} ({path}): {type(exc).__name__}: {exc}")

    def close(self) -> None:
        with self._wake:
            self._stop = True
            self._wake.notify()
        self._thread.join(timeout=5.0)
