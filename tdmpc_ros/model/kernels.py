"""CPU speed for training, kept apart from the paper's maths: every function here computes exactly what the
plain PyTorch op it stands in for computes (Mish, LayerNorm + Mish, dropout), only faster on a CPU.

- `mish`, `ensemble_norm_mish`: closed-form one-pass kernels whose forward also yields what the backward needs,
  compiled by inductor (eager where it cannot compile);
- `dropout`: draws only the dropped positions (a custom op, so compiled graphs keep it);
- `CompiledOrEager`, `keeping_activations`: torch.compile with an eager fallback, and a backward that saves
  activations instead of recomputing them;
- `keep_freed_memory_mapped`: glibc's allocator told not to return the update's memory between updates.

`model/layers.py` and `learning/agent.py` call these by name; docs/kernels.md has the measured figures.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import math
import warnings
from typing import Callable

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import CheckpointPolicy, checkpoint, create_selective_checkpoint_contexts


# -- Compiling ---------------------------------------------------------------------------------------------
def _save_every_activation(ctx, op, *args, **kwargs) -> CheckpointPolicy:
    return CheckpointPolicy.MUST_SAVE


class _DropInPlaceNotice(logging.Filter):
    """The notice inductor logs for every policy-carrying region (it asks for no in-place ops, which
    `keeping_activations` regions have: each op's output is saved, none re-run)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "context_fn is passed to torch.utils.checkpoint" not in record.getMessage()


logging.getLogger("torch._higher_order_ops.wrap").addFilter(_DropInPlaceNotice())


def keeping_activations(fn: Callable) -> Callable:
    """`fn` with every activation its backward needs saved as eager autograd saves it, none recomputed.

    For a compiled forward + backward, inductor's partitioner otherwise recomputes chains of pointwise ops in
    the backward: free where memory bandwidth bounds (GPUs), but on a CPU it repeats the exp and divisions
    that cost most. The selective checkpoint policy marks every op MUST_SAVE, which the partitioner honours.
    """
    context = functools.partial(create_selective_checkpoint_contexts, _save_every_activation)

    @functools.wraps(fn)
    def run(*args):
        return checkpoint(fn, *args, use_reentrant=False, context_fn=context)

    return run


class CompiledOrEager:
    """Calls `fn` through torch.compile(fn, **options), made on the first call (importing the compiler takes
    seconds, which a process that never trains should not pay); if compiling fails, warns once and calls `fn`
    eagerly from then on (compiling happens before anything runs, so a failed call has no side effects).

    Called inside another compiled region, it runs `fn` as plain ops, for the enclosing graph to fuse.
    `keep_activations`: compile `keeping_activations(fn)` (for functions whose backward runs compiled too).
    """

    def __init__(self, fn: Callable, keep_activations: bool = False, **options):
        self.fn = fn
        self._to_compile = keeping_activations(fn) if keep_activations else fn
        self._options = options
        self._compiled: Callable | None = None
        self._failed = False

    def __call__(self, *args):
        if torch.compiler.is_compiling():
            return self.fn(*args)
        if not self._failed:
            if self._compiled is None:
                self._compiled = torch.compile(self._to_compile, **self._options)
            try:
                return self._compiled(*args)
            except torch._dynamo.exc.TorchDynamoException as exc:
                warnings.warn(f"{self.fn.__qualname__}: torch.compile failed ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0]}); running eagerly", RuntimeWarning, stacklevel=2)
                self._failed = True
        return self.fn(*args)


def keep_freed_memory_mapped() -> bool:
    """Stop glibc returning freed heap pages to the kernel between updates; True if it applied.

    Each update frees and re-allocates the same few hundred activation tensors of up to a few MB; by
    default glibc trims that memory back to the kernel and the next update page-faults it in again.
    Process-wide: larger thresholds keep it mapped.
    """
    libc_name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(libc_name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return False  # not glibc
    m_trim_threshold, m_mmap_threshold = -1, -3
    return bool(mallopt(m_mmap_threshold, 32 << 20)) and bool(mallopt(m_trim_threshold, 1 << 30))


# -- Mish ------------------------------------------------------------------------------------------------
def _tanh_softplus(x: torch.Tensor) -> torch.Tensor:
    """tanh(softplus(x)) = n / (n + 2), n = e^x (e^x + 2); the clamp keeps e^x finite (the ratio is 1 by then)."""
    e = x.clamp(max=20.0).exp_()
    n = (e + 2.0).mul_(e)
    return n.div_(n + 2.0)


def mish_fast(x: torch.Tensor) -> torch.Tensor:
    """Mish as x tanh(softplus(x)) in closed form: exact up to float rounding, fewer and cheaper ops than F.mish."""
    return x * _tanh_softplus(x)


def _mish_and_slope(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mish and its derivative, t + x sigmoid(x) (1 - t^2) = t + 4 x e (e + 1) / d^2 with d = n + 2 (the
    closed form of `_tanh_softplus`), from one read of x."""
    e = x.clamp(max=20.0).exp()
    n = (e + 2.0) * e
    d = n + 2.0
    t = n / d
    return x * t, t + 4.0 * x * e * (e + 1.0) / (d * d)


# A flat input: one graph serves every size.
_compiled_mish_and_slope = CompiledOrEager(_mish_and_slope, dynamic=True)


def _fused_mish_and_slope(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`_mish_and_slope` as one compiled pass on CPU float32; eager elsewhere."""
    if x.device.type == "cpu" and x.dtype == torch.float32:
        y, slope = _compiled_mish_and_slope(x.reshape(-1))
        return y.view_as(x), slope.view_as(x)
    return _mish_and_slope(x)


class _MishFunction(torch.autograd.Function):
    """Mish for training: the forward also produces the derivative, so the backward is one multiply."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        y, slope = _fused_mish_and_slope(x)
        ctx.save_for_backward(slope)
        return y

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (slope,) = ctx.saved_tensors
        return grad * slope

def mish(x: torch.Tensor) -> torch.Tensor:
    """F.mish: with gradients one compiled pass that also keeps the slope for the backward, else closed form."""
    if torch.is_grad_enabled() and x.requires_grad:
        return _MishFunction.apply(x)
    return mish_fast(x)


# -- The Q ensemble's LayerNorm + Mish -------------------------------------------------------------------
LN_EPS = 1e-5  # F.layer_norm's default


def _ensemble_norm_mish(h: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor):
    """LayerNorm over the last dim with a per-head affine (gamma, beta [Q, 1, D]), then Mish; returns the
    output and what the backward needs: (y, normalised h, 1 / std, Mish slope)."""
    centred = h - h.mean(-1, keepdim=True)
    rstd = torch.rsqrt(centred.square().mean(-1, keepdim=True) + LN_EPS)
    normed = centred * rstd
    y, slope = _mish_and_slope(torch.addcmul(beta, normed, gamma))
    return y, normed, rstd, slope


def _ensemble_norm_mish_backward(grad, normed, rstd, slope, gamma):
    """Gradients for h (LayerNorm's backward over the last dim), gamma and beta (summed over rows)."""
    d_affine = grad * slope
    d_normed = d_affine * gamma
    d_h = rstd * (d_normed - d_normed.mean(-1, keepdim=True)
                  - normed * (d_normed * normed).mean(-1, keepdim=True))
    return d_h, (d_affine * normed).sum(1, keepdim=True), d_affine.sum(1, keepdim=True)


_compiled_ensemble_norm_mish = CompiledOrEager(_ensemble_norm_mish, dynamic=True)
_compiled_ensemble_norm_mish_backward = CompiledOrEager(_ensemble_norm_mish_backward, dynamic=True)


class _EnsembleNormMish(torch.autograd.Function):
    """The Q ensemble's per-head LayerNorm and Mish for training: forward and backward one compiled pass each
    (eager, the affine's gradient is a sum over rows that runs slowly)."""

    @staticmethod
    def forward(ctx, h: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
        y, normed, rstd, slope = _compiled_ensemble_norm_mish(h, gamma, beta)
        ctx.save_for_backward(normed, rstd, slope, gamma)
        return y

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return _compiled_ensemble_norm_mish_backward(grad, *ctx.saved_tensors)

def ensemble_norm_mish(h: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """mish(layer_norm(h) * gamma + beta) per head (h [Q, N, D], gamma and beta [Q, 1, D])."""
    if torch.is_grad_enabled() and (h.requires_grad or gamma.requires_grad):
        return _EnsembleNormMish.apply(h, gamma, beta)
    return mish_fast(torch.addcmul(beta, F.layer_norm(h, h.shape[-1:]), gamma))


# -- Dropout ---------------------------------------------------------------------------------------------
@torch.library.custom_op("tdmpc_ros::sparse_dropout_mask", mutates_args=())
def sparse_dropout_mask(like: torch.Tensor, p: float) -> torch.Tensor:
    """A CPU dropout mask shaped like `like`: 0 where dropped, 1 / (1 - p) elsewhere, drawing only the
    dropped positions.

    Gaps between dropped entries of an i.i.d. Bernoulli(p) mask are geometric, so sampling ~n p gaps gives
    exactly F.dropout's distribution while skipping n random draws (the CPU's RNG is slow). A custom op, so
    compiled graphs call it as it is (inductor would otherwise draw all n numbers).
    """
    n = like.numel()
    chunk = int(n * p + 8 * math.sqrt(n * p) + 16)
    log_keep = math.log1p(-p)
    parts, last = [], -1
    while last < n:  # one chunk nearly always reaches the end
        gaps = torch.floor(torch.log1p(-torch.rand(chunk)) / log_keep).long() + 1
        parts.append(last + torch.cumsum(gaps, 0))
        last = int(parts[-1][-1])
    dropped = torch.cat(parts)
    mask = torch.full((n,), 1.0 / (1.0 - p), dtype=like.dtype).index_fill_(0, dropped[dropped < n], 0.0)
    return mask.view_as(like)


@sparse_dropout_mask.register_fake
def _(like: torch.Tensor, p: float) -> torch.Tensor:
    return torch.empty_like(like)


def dropout(x: torch.Tensor, p: float) -> torch.Tensor:
    """Training-mode dropout: `sparse_dropout_mask` for small p on CPU, F.dropout otherwise."""
    if p <= 0.0:
        return x
    if x.device.type != "cpu" or p > 0.1:
        return F.dropout(x, p, training=True)
    return x * sparse_dropout_mask(x.detach(), p)
