"""The planner object: warm start, seeded draws, and `plan_step` run eagerly, compiled (CPU) or as a CUDA graph."""
from __future__ import annotations

import contextlib
import copy
import logging
import time

import numpy as np
import torch
from torch import nn

from tdmpc_ros.config import PlannerConfig
from tdmpc_ros.planner.mppi import DrawSource, PlanGraph, PlanSpec, mppi_iteration

log = logging.getLogger("tdmpc_ros.planner")


class Planner:
    """MPPI over a private copy of a world model. Not re-entrant: one `plan` at a time, but `policy_action`
    may run beside it (the controller's deadline fallback) since it shares no buffers with `plan`.

    `cfg.threads` > 0 sets torch's process-wide intra-op thread count (right for a planner's own process);
    0 leaves it alone (a planner inside a training process).
    """

    backend = "torch"

    def __init__(self, model: nn.Module, cfg: PlannerConfig, discount: float, seed: int = 0,
                 action_dim: int | None = None):
        self.cfg = cfg
        if cfg.device not in ("cpu", "cuda"):
            raise ValueError(f"planner.device must be cpu or cuda, got {cfg.device!r}")
        self._tdev = self._torch_device(cfg.device)
        self.device = self._tdev.type  # where planning runs: "cpu" or "cuda"
        if cfg.threads > 0:
            torch.set_num_threads(cfg.threads)
        action_dim = action_dim or model.cfg.action_dim
        if action_dim != model.cfg.action_dim:
            raise ValueError(f"planner: action_dim {action_dim} != the model's action_dim {model.cfg.action_dim}")
        self.obs_dim = model.cfg.obs_dim
        self.spec = PlanSpec.from_config(cfg, discount, action_dim, model.cfg.num_q)
        # A private, frozen copy: training elsewhere never races planning, and set_model copies weights in
        # place so compiled code and captured CUDA graphs stay valid.
        self.model = copy.deepcopy(model).to(self._tdev).eval().requires_grad_(False)
        self.source = DrawSource(self.spec, seed, self._tdev)
        self._policy_generator = torch.Generator(self._tdev).manual_seed(seed + 1)
        # On CUDA the fallback runs on its own stream, so it does not queue behind a plan still running.
        self._policy_stream = torch.cuda.Stream(self._tdev) if self._tdev.type == "cuda" else None
        self._obs = torch.zeros(self.obs_dim, device=self._tdev)
        self._warm = torch.zeros(self.spec.horizon, action_dim, device=self._tdev)
        # The last call's refitted mean [H, A], elite indices [E] and weights [E] (for diagnostics and tests).
        self.last_mean: np.ndarray | None = None
        self.last_elites: np.ndarray | None = None
        self.last_weights: np.ndarray | None = None
        self._episode = 0
        self.compile_s = 0.0
        self.compiled = False
        self._setup()

    # -- backend hooks ------------------------------------------------------------------------------------
    def _torch_device(self, name: str) -> torch.device:
        """Where the model copy, buffers and draws live."""
        if name == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("planner.device is 'cuda' but torch sees no CUDA device")
        return torch.device(name)

    def _setup(self) -> None:
        graph = PlanGraph(self.model, self.spec)
        self._run = graph
        if not (self.cfg.compile and self.cfg.mpc):  # without mpc, plan() never runs the graph
            return
        start = time.perf_counter()
        try:
            self._run = self._cuda_graph(graph) if self.device == "cuda" else self._compiled(graph)
            self.compiled = True
        except Exception as exc:  # compilers fail in many ways; eager is always correct
            log.warning("planner: %s failed (%s: %s); running eager", self._compile_kind(), type(exc).__name__, exc)
            self._run = graph
        self.compile_s = time.perf_counter() - start

    def _compile_kind(self) -> str:
        return "CUDA graph capture" if self.device == "cuda" else "torch.compile"

    def _compiled(self, graph: PlanGraph):
        """Compile one MPPI iteration, reused by every iteration: the same speed as compiling the whole
        unrolled call, at a fraction of the compile time. Encoding, the prior rollout and the final choice
        stay eager (small)."""
        iteration = torch.compile(mppi_iteration, fullgraph=True, dynamic=False)
        compiled = PlanGraph(self.model, self.spec, iteration)
        with torch.inference_mode():
            compiled(self._obs, self._warm, *self.source.draws)  # compile now, not on the first tick
        return compiled

    def _cuda_graph(self, graph: PlanGraph):
        """Capture the whole plan call over static input buffers (obs, warm start, draws)."""
        inputs = (self._obs, self._warm, *self.source.draws)
        stream = torch.cuda.Stream(self._tdev)
        stream.wait_stream(torch.cuda.current_stream(self._tdev))
        with torch.cuda.stream(stream), torch.inference_mode():
            for _ in range(3):  # warm up allocator and kernels off the capture
                graph(*inputs)
        torch.cuda.current_stream(self._tdev).wait_stream(stream)
        cuda_graph = torch.cuda.CUDAGraph()
        # thread_local: an older planner may still be running on another thread while this one captures.
        with torch.inference_mode(), torch.cuda.graph(cuda_graph, capture_error_mode="thread_local"):
            outputs = graph(*inputs)

        def replay(*args):
            cuda_graph.replay()
            return outputs

        return replay

    def _plan_call(self):
        """Run one plan on the current static buffers -> (action, new mean, elite idx, weights) tensors."""
        with torch.inference_mode():
            return self._run(self._obs, self._warm, *self.source.draws)

    # -- public API -----------------------------------------------------------------------------------------
    def plan(self, obs: np.ndarray, eval_mode: bool = False) -> np.ndarray:
        """MPPI action in [-1, 1], float32 [A]; eval mode returns the elites' weighted mean (no sampling).
        With planner.mpc false, the policy prior's action instead."""
        if not self.cfg.mpc:
            return self.policy_action(obs, eval_mode)
        episode = self._episode
        self._obs.copy_(self._as_obs(obs))
        self.source.fill()
        action, mean, elites, weights = self._plan_call()
        if episode == self._episode:  # a reset() during this call wins: no warm start from the old episode
            # Warm start of the next call: this plan shifted one step, the last step from zero.
            self._warm[:-1].copy_(torch.as_tensor(mean[1:], device=self._tdev))
            self._warm[-1].zero_()
        self.last_mean = _numpy(mean)
        self.last_elites = _numpy(elites)
        self.last_weights = _numpy(weights)
        chosen = mean[0] if eval_mode else action  # Deviation 2 (model/world_model.py): eval acts on the mean
        return np.clip(_numpy(chosen), -1.0, 1.0).astype(np.float32)

    def policy_action(self, obs: np.ndarray, eval_mode: bool = False) -> np.ndarray:
        """The policy prior's action (encode + pi): the cheap fallback when planning misses its deadline."""
        stream = torch.cuda.stream(self._policy_stream) if self._policy_stream else contextlib.nullcontext()
        with stream, torch.inference_mode():
            z = self.model.encode(self._as_obs(obs).unsqueeze(0))
            eps = torch.randn(z.shape[0], self.spec.action_dim, device=self._tdev,
                              generator=self._policy_generator)
            action, info = self.model.pi(z, eps=eps)
        return _numpy((info["mean"] if eval_mode else action)[0]).astype(np.float32)

    def reset(self) -> None:
        """A new episode: no warm start (also when called while a plan is running on another thread)."""
        self._episode += 1
        self._warm.zero_()

    def set_model(self, model: nn.Module) -> None:
        """Plan with `model`'s weights from the next call (copied in place; same architecture required)."""
        try:
            self.model.load_state_dict(model.state_dict())
        except RuntimeError as exc:
            raise ValueError(f"planner.set_model: the new model does not match the planner's architecture: {exc}")

    def _as_obs(self, obs: np.ndarray) -> torch.Tensor:
        obs = np.asarray(obs, dtype=np.float32)
        if obs.shape != (self.obs_dim,):
            raise ValueError(f"planner: observation has shape {obs.shape}, the model expects ({self.obs_dim},)")
        return torch.from_numpy(obs).to(self._tdev)


def _numpy(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
