"""Hot eager composites compiled: the runtime's half of tracer/fused.py.

A fused composite's plan (its forward graph with residuals, its backward graph, the graph of
its data-dependent index checks) is interpreted on arrays until it has been called
`fused.COMPILE_AFTER` times; then the tracer asks the compiler registered here, which builds
each graph with the default CPU backend (LLVM) into
executables (the kernel cache, memory and disk, applies as for @tj.compile). The tracer never
imports the runtime: this module fills the slot at import (as eager_kernels.py does).

Measured with `python bench/eager.py --only fused` (1 thread, the 2-core reference machine
under heavy load from other processes, medians of one run), forward + backward per call:
sigmoid/softmax/layer_norm on [4, 8]: interpreted 0.10-0.17 ms, compiled 0.04-0.05 ms (torch
eager 0.04-0.06); layer_norm [8, 64, 128] 0.62 vs 0.16 ms (torch 0.18); gelu [8, 64, 512]
99 vs 9.2 ms (torch 9.0); cross_entropy [512, 65] 0.76 vs 0.34 ms (torch 0.27). A compiled
plan was faster at every size measured, so there is no size crossover: the interpreter is
what runs while a plan is cold. Compiling a plan costs 0.1-1 s cold under that load (~50-150
ms on a quiet machine; the disk cache makes a later process's compile mostly loading), repaid
only by a signature that repeats (a training loop): the third call compiles by default
(TRACEJIT_FUSED_COMPILE_AFTER; 0 never compiles). In the nn, amp and model tests 217 plans
were made and 78 compiled. CUDA plans stay interpreted: each step is
one CuPy kernel, none waits for the host."""
from __future__ import annotations

from typing import Callable

import numpy as np

from ..ir.core import Graph
from ..ir.verify import verify
from ..tracer import fused
from .backend import get_backend
from .small_call import small_runner


def compile_graph(graph: Graph) -> Callable:
    """run(list of arrays) -> list of arrays for one of a plan's graphs (its forward, its
    backward, its index checks), compiled by the CPU backend."""
    backend = get_backend()      # the default (LLVM), or TRACEJIT_BACKEND's
    exe = backend.compile(verify(graph))
    # (small_call: the lean call for small arrays, ~3 us of Python per call against ~9 us)
    return small_runner(exe, _arrays_only(exe.run))


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


fused.set_compiler(compile_graph)
