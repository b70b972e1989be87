"""Hot eager composites compiled: the runtime's half of tracer/fused.py.

A fused composite's plan (its forward graph with residuals, its backward graph) is interpreted
on arrays until it has been called `fused.COMPILE_AFTER` times; then the tracer asks the
compiler registered here, which builds both graphs with the default CPU backend (LLVM) into
executables (the kernel cache, memory and disk, applies as for @tj.compile). The tracer never
imports the runtime: this module fills the slot at import (as eager_kernels.py does).

Measured on the reference machine (2 cores, 1 thread, loaded; /tmp-free script in
bench/eager.py's `--only fused` section), per call of forward + backward:
  softmax/layer_norm/sigmoid/gelu on [4, 8]: interpreted ~30-60 us, compiled ~5 us;
  on [512, 128]: interpreted ~0.3-1 ms, compiled ~0.05-0.3 ms.
Compiling costs ~50-150 ms per plan cold (a few ms from the disk cache), so a plan is only
compiled once it repeats (a training loop); the third call is the default
(TRACEJIT_FUSED_COMPILE_AFTER; 0 never compiles). CUDA plans stay interpreted: each step is
one CuPy kernel, none waits for the host."""
from __future__ import annotations

from typing import Callable

import numpy as np

from ..ir.core import Graph
from ..ir.verify import verify
from ..tracer import fused
from .backend import get_backend


def compile_plan(fwd: Graph, bwd: Graph) -> tuple[Callable, Callable]:
    """(run forward, run backward) of a plan's graphs, compiled by the CPU backend."""
    backend = get_backend()      # the default (LLVM), or TRACEJIT_BACKEND's
    return _arrays_only(backend.compile(verify(fwd)).run), \
        _arrays_only(backend.compile(verify(bwd)).run)


def _arrays_only(run: Callable) -> Callable:
    """run, given ndarrays only: native code reads each argument's array header, and a NumPy
    scalar (what some NumPy operations return for 0-d results) has none."""
    def run_arrays(args: list) -> list:
        for a in args:
            if type(a) is not np.ndarray:
                args = [a if type(a) is np.ndarray else np.asarray(a) for a in args]
                break
        return run(args)
    return run_arrays


fused.set_compiler(compile_plan)
