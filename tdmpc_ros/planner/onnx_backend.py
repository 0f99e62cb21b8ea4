"""ONNX backend: the whole plan call exported as one graph, every random draw an input, run by ONNX Runtime.

The draws come from the same seeded `DrawSource` as the torch backend, so both give the same plan.
"""
from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import json
import logging
import time
import warnings
from pathlib import Path

import torch
from torch import nn

from tdmpc_ros.planner.mppi import Draws, PlanGraph, PlanSpec, zero_draws
from tdmpc_ros.planner.torch_backend import Planner

log = logging.getLogger("tdmpc_ros.planner")

INPUT_NAMES = ("obs", "mean", *Draws._fields)
OUTPUT_NAMES = ("action", "new_mean", "elite_idx", "elite_weights")
SPEC_KEY = "tdmpc_ros.plan_spec"  # ONNX metadata: the PlanSpec the graph was built for, as JSON


def export_plan(model: nn.Module, spec: PlanSpec, path: str | Path | None = None) -> bytes:
    """Export `plan_step` over `model` (torch.export-based exporter); returns the ONNX bytes, also written to path.

    The legacy TorchScript exporter cannot export the model's symexp (aten::expm1), hence dynamo.
    """
    graph = PlanGraph(model, spec).eval()
    args = (torch.zeros(model.cfg.obs_dim), torch.zeros(spec.horizon, spec.action_dim), *zero_draws(spec))
    with _quiet_exporter(), torch.no_grad():
        program = torch.onnx.export(graph, args, input_names=list(INPUT_NAMES), output_names=list(OUTPUT_NAMES),
                                    dynamo=True, verbose=False)
    proto = program.model_proto
    proto.metadata_props.add(key=SPEC_KEY, value=json.dumps(dataclasses.asdict(spec)))
    data = proto.SerializeToString()
    if path is not None:
        Path(path).write_bytes(data)
    return data


def spec_of(data: bytes) -> PlanSpec:
    """The PlanSpec stored in an exported plan graph."""
    import onnx

    props = {p.key: p.value for p in onnx.load_from_string(data).metadata_props}
    if SPEC_KEY not in props:
        raise ValueError(f"ONNX model has no {SPEC_KEY!r} metadata: not a tdmpc_ros plan graph")
    return PlanSpec(**json.loads(props[SPEC_KEY]))


@contextlib.contextmanager
def _quiet_exporter():
    """The exporter logs a warning per missing torchvision op and prints progress; none of it is actionable."""
    logger = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            yield
    finally:
        logger.setLevel(level)


def cuda_provider_problem() -> str | None:
    """Why ONNX Runtime's CUDA provider cannot run here, or None. Checked up front: a failed provider load
    would otherwise print an error-level log line before ONNX Runtime falls back to CPU."""
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return "this onnxruntime build has no CUDAExecutionProvider"
    ort.preload_dlls()  # CUDA/cuDNN from the nvidia pip packages, where present
    library = Path(ort.__file__).parent / "capi" / "libonnxruntime_providers_cuda.so"
    try:
        ctypes.CDLL(str(library))
    except OSError as exc:
        return str(exc)
    return None


def ort_session(data: bytes, device: str, threads: int):
    """An InferenceSession on the CUDA provider when asked for and usable, else on CPU with `threads` threads."""
    import onnxruntime as ort

    ort.set_default_logger_severity(3)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    providers = ["CPUExecutionProvider"]
    if device == "cuda":
        problem = cuda_provider_problem()
        if problem is None:
            providers.insert(0, "CUDAExecutionProvider")
        else:
            log.warning("planner: onnxruntime CUDA provider unavailable (%s); using CPU", problem)
    return ort.InferenceSession(data, options, providers=providers)


class OnnxPlanner(Planner):
    """The planner with `plan` running the exported graph; the torch model copy serves export and policy_action."""

    backend = "onnx"

    def _torch_device(self, name: str) -> torch.device:
        return torch.device("cpu")  # draws and the export live on CPU; ONNX Runtime picks its own device

    def _setup(self) -> None:
        if not self.cfg.mpc:  # plan() acts with the prior (torch): no plan graph to export
            return
        start = time.perf_counter()
        self._load(export_plan(self.model, self.spec))
        self.compile_s = time.perf_counter() - start
        self.compiled = True

    def _load(self, data: bytes) -> None:
        session = ort_session(data, self.cfg.device, self.cfg.threads)
        # The feed aliases the static torch buffers, which plan() updates in place.
        feed = dict(zip(INPUT_NAMES, (t.numpy() for t in (self._obs, self._warm, *self.source.draws))))
        session.run(None, feed)  # warm-up: first-run allocations happen now, not on the first tick
        self._session, self._feed = session, feed
        self.device = "cuda" if session.get_providers()[0] == "CUDAExecutionProvider" else "cpu"

    def _plan_call(self):
        return self._session.run(None, self._feed)

    def set_model(self, model: nn.Module) -> None:
        """Copy the weights and re-export (seconds); the old session serves until the new one is ready."""
        super().set_model(model)
        if self.cfg.mpc:
            self._load(export_plan(self.model, self.spec))


def load_plan_session(path: str | Path, device: str = "cpu", threads: int = 1):
    """(session, PlanSpec) for a plan graph written by `export_plan` / `tdmpc-ros export-onnx`."""
    data = Path(path).read_bytes()
    return ort_session(data, device, threads), spec_of(data)
