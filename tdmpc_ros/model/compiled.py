"""torch.compile with an eager fallback, for the training hot spots that inductor fuses well.

Inductor needs a working C++ compiler (CPU) or Triton (CUDA); a robot PC may have neither. Where compiling
fails the same function runs eagerly, which gives the same results up to float rounding.
"""
from __future__ import annotations

import warnings
from typing import Callable

import torch


class CompiledOrEager:
    """Calls `fn` through torch.compile(fn, **options), made on the first call (importing the compiler takes
    seconds, which a process that never trains should not pay); if compiling fails, warns once and calls `fn`
    eagerly from then on (compiling happens before anything runs, so a failed call has no side effects)."""

    def __init__(self, fn: Callable, **options):
        self.fn = fn
        self._options = options
        self._compiled: Callable | None = None
        self._failed = False

    def __call__(self, *args):
        if not self._failed:
            if self._compiled is None:
                self._compiled = torch.compile(self.fn, **self._options)
            try:
                return self._compiled(*args)
            except torch._dynamo.exc.TorchDynamoException as exc:
                warnings.warn(f"{self.fn.__qualname__}: torch.compile failed ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0]}); running eagerly", RuntimeWarning, stacklevel=2)
                self._failed = True
        return self.fn(*args)
