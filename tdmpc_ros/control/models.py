"""Turning a checkpoint file into weights the controller can use, off the control thread."""
from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np

from tdmpc_ros.config import Config, ModelConfig


class ModelRejected(Exception):
    """A checkpoint that must not be loaded: the message names the file and the reason."""


def load_model(path: str, sha256: str | None, cfg: Config):
    """Verify and load a checkpoint file's world model; (model, discount). Raises ModelRejected.

    load_checkpoint validates the file, its config and its weights (all finite); the sizes this arm needs are
    checked before any network is built.
    """
    from tdmpc_ros.learning.checkpoint import load_checkpoint

    return _model_from(lambda: load_checkpoint(path, expected_sha256=sha256 or None,
                                               max_bytes=cfg.controller.max_checkpoint_bytes), path, cfg)


def load_model_bytes(data: bytes | bytearray, name: str, sha256: str, cfg: Config):
    """load_model on a checkpoint file's bytes received by other means (model_weights); `name` goes in errors."""
    from tdmpc_ros.learning.checkpoint import checkpoint_from_bytes

    return _model_from(lambda: checkpoint_from_bytes(data, name, expected_sha256=sha256,
                                                     max_bytes=cfg.controller.max_checkpoint_bytes), name, cfg)


def _model_from(read: Callable[[], object], name: str, cfg: Config):
    from tdmpc_ros.learning.checkpoint import agent_from_checkpoint, check_arm
    from tdmpc_ros.learning.checkpoint_file import CheckpointError

    try:
        ckpt = read()
        check_arm(ckpt, cfg.task)
        model_cfg = ckpt.config.model
        if (model_cfg.obs_dim, model_cfg.action_dim) != (cfg.task.obs_dim, cfg.task.action_dim):
            raise ModelRejected(f"{name}: checkpoint is for obs_dim {model_cfg.obs_dim} / action_dim "
                                f"{model_cfg.action_dim}, this arm needs {cfg.task.obs_dim} / {cfg.task.action_dim}")
        model = agent_from_checkpoint(ckpt, device=cfg.planner.device).model
    except CheckpointError as exc:
        raise ModelRejected(str(exc)) from exc
    return model, ckpt.config.discount


def build_planner(model, discount: float, cfg: Config, seed: int = 0):
    """The configured planner over `model`, compiled (or exported) and warmed up before first use."""
    from tdmpc_ros.planner import make_planner

    planner = make_planner(model, cfg.planner, discount=discount, seed=seed)
    planner.plan(np.zeros(cfg.task.obs_dim, np.float32))
    planner.reset()
    return planner


class ModelLoader:
    """Loads one checkpoint at a time on its own thread; the newest request wins, stale ones are skipped. A
    request names a file (request) or hands over the file's bytes (request_bytes: a model from model_weights).

    `on_ready(planner, model, version, path)` (path "model_weights vN" for bytes) gets a new planner when none
    exists yet, the architecture changed or the backend is ONNX (built here, so compiling and exporting never
    touch the control thread), else just the model, whose weights the controller copies into its torch planner
    between ticks.
    """

    def __init__(self, cfg: Config, current_model_cfg: Callable[[], ModelConfig | None],
                 on_ready: Callable[[object, object, int, str], None], on_error: Callable[[str], None]):
        self.cfg = cfg
        self.current_model_cfg = current_model_cfg
        self.on_ready = on_ready
        self.on_error = on_error
        self._request: tuple[str, str, int, bytes | bytearray | None] | None = None
        self._wake = threading.Condition()
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="model-loader", daemon=True)
        self._thread.start()

    def request(self, path: str, sha256: str, version: int) -> None:
        self._put((path, sha256, version, None))

    def request_bytes(self, data: bytes | bytearray, sha256: str, version: int) -> None:
        """Load a checkpoint file's bytes (verified again against `sha256` here, with everything else)."""
        self._put((f"model_weights v{version}", sha256, version, data))

    def _put(self, request: tuple[str, str, int, bytes | bytearray | None]) -> None:
        with self._wake:
            self._request = request  # a newer request replaces one not started yet (and frees its bytes)
            self._wake.notify()

    def _run(self) -> None:
        while True:
            with self._wake:
                while self._request is None and not self._stop:
                    self._wake.wait()
                if self._stop:
                    return
                path, sha256, version, data = self._request
                self._request = None
            try:
                if data is None:
                    model, discount = load_model(path, sha256, self.cfg)
                else:
                    model, discount = load_model_bytes(data, path, sha256, self.cfg)
                # Torch copies weights in place in microseconds; ONNX re-exports, so it gets a new planner here.
                if self.cfg.planner.backend == "torch" and self.current_model_cfg() == model.cfg:
                    self.on_ready(None, model, version, path)
                else:
                    self.on_ready(build_planner(model, discount, self.cfg), None, version, path)
            except ModelRejected as exc:
                self.on_error(f"rejected model v{version}: {exc}")
            except Exception as exc:  # a model that breaks the planner must never take control down
                self.on_error(f"rejected model v{version} ({path}): {type(exc).__name__}: {exc}")
            data = None  # a model's bytes are not kept while waiting for the next request

    def close(self) -> None:
        with self._wake:
            self._stop = True
            self._wake.notify()
        self._thread.join(timeout=5.0)
