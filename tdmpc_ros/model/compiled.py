"""torch.compile with an eager fallback, for the training graphs and the hot spots that inductor fuses well.

Inductor needs a working C++ compiler (CPU) or Triton (CUDA); a robot PC may have neither. Where compiling
fails the same function runs eagerly, which gives the same results up to float rounding.
"""
from __future__ import annotations

import functools
import logging
import warnings
from typing import Callable

import torch
from torch.utils.checkpoint import CheckpointPolicy, checkpoint, create_selective_checkpoint_contexts


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
    that cost most (a small-preset update was ~6 % slower that way). The selective checkpoint policy marks
    every op MUST_SAVE, which the partitioner honours.
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
