"""Large eager ops through compiled kernels.

An eager elementwise op (or a max/min reduction, or an exact-dtype sum) on large host arrays
runs as a one-op function compiled by the same LLVM pipeline as @tj.compile: one vectorized
loop over every core, with pooled output memory, where NumPy runs one thread and allocates
fresh pages. The tracer asks through `tracer.eager.set_kernel_provider`, which this module
fills at import (the runtime sits above the tracer: the tracer never imports it).

Cache key: the primitive, its params, and per operand its dtype and layout. Contiguous
operands of one shape are passed flat, so every shape of the same size shares a kernel; an
operand broadcast by NumPy (a stride of 0, e.g. a Python number splat over a tensor) is passed
compact with the broadcast done inside the kernel, instead of being copied out first.

Which ops go to a kernel, and from what size, is measured, not guessed: CROSSOVER records per
primitive and thread count the operand size from which the kernel beat NumPy (`python
bench/eager.py --only crossover1,crossover` measures it at 1 and at 2 threads). Below it, and
for ops whose kernel never won, NumPy runs. TRACEJIT_EAGER_KERNELS=0 turns the path off;
TRACEJIT_EAGER_KERNEL_MIN (or MIN_ELEMENTS) sets one crossover for every kernel op instead.

Float32 sums are left to NumPy: its pairwise summation is more accurate than one serial
accumulator per thread, and eager results must not get worse by being large."""
from __future__ import annotations

import os
import threading
from typing import Any, Callable

import numpy as np

from ..ir import dtypes as dt
from ..ir.primitives import bind, broadcast, reshape
from ..tracer import eager
from ..tracer.state import STATE
from .compile import compile as _compile
from .llvm_backend import n_threads

# one crossover for every op in KERNEL_OPS and the reductions, overriding CROSSOVER (tests set
# it to 0 to send every eligible op to a kernel); None: the measured table
_MIN_ENV = os.environ.get("TRACEJIT_EAGER_KERNEL_MIN")
MIN_ELEMENTS: int | None = int(_MIN_ENV) if _MIN_ENV else None
_EXACT_SUM = frozenset("bil")                      # sums of bools/ints: every order is exact
_CACHE: dict = {}
_CACHE_MAX = 1024
_LOCAL = threading.local()
stats = {"calls": 0, "compiles": 0}                # read by tests and the benchmark


# The elementwise ops a kernel can serve (tanh, sin, cos and the special functions are left
# to NumPy: its SIMD versions were faster at every size).
KERNEL_OPS = frozenset(("add", "sub", "mul", "div", "neg", "abs", "maximum", "minimum", "lt",
                        "le", "gt", "ge", "eq", "ne", "where", "exp", "cast", "reciprocal",
                        "sqrt", *("lgamma", "digamma", "erfinv", "ndtri", "erfcx", "i0", "i0e",
                                  "i1", "i1e")))
# ir/prims_gamma.py's functions and lgamma: NumPy runs their straight-line algorithms one
# whole-array step at a time (erfinv's erf element by element in Python); the kernel won from
# 64K float32 elements in process CPU time at 2 threads (1.1x for i0/i1e, 2x digamma, 6-13x
# erfinv, ndtri, erfcx, lgamma; 3-15x at 1M), measured 2026-12-02 on the loaded machine
_SPECIAL = {n: 1 << 16 for n in ("lgamma", "digamma", "erfinv", "ndtri", "erfcx", "i0", "i0e",
                                 "i1", "i1e")}

# Measured crossovers (float32 operands of shape (n/256, 256); bench/eager.py's crossover
# sections, each side the minimum of 7 interleaved rounds): per thread count, per primitive,
# the operand size in elements from which the kernel beat NumPy by 5% or more at every larger
# size up to 4M. An op missing here never did, and stays NumPy. Reference machine: 2 cores,
# znver4 with AVX-512, measured quiet on 2026-11-30 19:31 UTC (an earlier table taken while
# other tenants loaded the machine kept every arithmetic op on NumPy at 2 threads, and the
# 4M-float eager chain fell to 1.6x torch's time). What the figures say: with one thread the
# memory-bound arithmetic and comparisons never win (one core moves about the whole memory
# bandwidth NumPy needs); with two, they win from 1M (mul, div, sub, maximum, minimum) or 4M
# elements (add, neg, abs, comparisons). The kernels win much earlier where they compute more
# cheaply than NumPy: exp, sqrt and reciprocal (own vectorized code), max/min reductions along
# rows, where (1/20 of np.where's time), and a float32 -> float64 cast at 4M (NumPy's fresh
# 32 MiB output faults in every page).
CROSSOVER: dict[int, dict[str, int]] = {
    1: {"exp": 1 << 16, "sqrt": 1 << 16, "reciprocal": 1 << 16, "max": 1 << 17,
        "min": 1 << 17, "where": 1 << 14, "cast": 1 << 22, **_SPECIAL},
    2: {"exp": 1 << 19, "sqrt": 1 << 19, "reciprocal": 1 << 19, "max": 1 << 19,
        "min": 1 << 19, "where": 1 << 14, "cast": 1 << 22, "mul": 1 << 20, "div": 1 << 20,
        "sub": 1 << 20, "maximum": 1 << 20, "minimum": 1 << 20, "add": 1 << 22,
        "neg": 1 << 22, "abs": 1 << 22, "eq": 1 << 22, "ne": 1 << 22, "lt": 1 << 22,
        "le": 1 << 22, "gt": 1 << 22, "ge": 1 << 22, **_SPECIAL},
}


def crossover(name: str, threads: int | None = None) -> int | None:
    """The operand size from which primitive `name` runs as a kernel, or None (NumPy always).
    More threads than were measured use the largest count measured."""
    if name not in KERNEL_OPS and name not in ("sum", "max", "min"):
        return None
    if MIN_ELEMENTS is not None:
        return MIN_ELEMENTS
    threads = n_threads() if threads is None else threads
    table = CROSSOVER[min(max(threads, 1), max(CROSSOVER))]
    return table.get(name)


def _least() -> int:
    """The smallest crossover of any op: below it the provider is not even asked."""
    if MIN_ELEMENTS is not None:
        return MIN_ELEMENTS
    return min(CROSSOVER[min(max(n_threads(), 1), max(CROSSOVER))].values())


def _wanted(prim, data: list) -> bool:
    if prim.kind == "elementwise":
        return prim.name in KERNEL_OPS
    if prim.kind != "reduce" or prim.name not in ("sum", "max", "min"):
        return False
    return prim.name != "sum" or data[0].dtype.kind in _EXACT_SUM


def _compact(a: np.ndarray) -> tuple[np.ndarray, tuple[int, ...] | None]:
    """(the array without its broadcast axes, the shape to broadcast it back to) or (a, None)."""
    if a.ndim == 0 or 0 not in a.strides:
        return a, None
    idx = tuple(slice(0, 1) if s == 0 else slice(None) for s in a.strides)
    return a[idx], a.shape


def _make(prim, params: dict, layout: tuple) -> Callable:
    """A compiled one-op function of the compact operands (layout: per operand, the shape it
    is broadcast or reshaped to inside, or None)."""
    def one_op(*xs):
        xs = [x if shape is None else (broadcast(x, shape) if kind == "b" else reshape(x, shape))
              for x, (kind, shape) in zip(xs, layout)]
        return bind(prim, *xs, **params)
    one_op.__name__ = f"eager_{prim.name}"
    return _compile(one_op)


def provider(prim, data: list, params: dict, out_np: np.dtype) -> Any:
    """The op's result from a compiled kernel, or None to leave it to NumPy."""
    if STATE.traces or getattr(_LOCAL, "busy", False):
        return None
    least = crossover(prim.name)
    if least is None:
        return None
    big = False
    for d in data:
        if type(d) is not np.ndarray or d.dtype not in dt.NP_TO_DTYPE:
            return None
        if d.size >= least:
            big = True
    if not big or not _wanted(prim, data):
        return None
    try:
        pk = tuple(params.items())
        hash(pk)
    except TypeError:
        return None
    args, layout = [], []
    shape0 = data[0].shape
    flat = prim.kind == "elementwise" and all(
        d.shape == shape0 and d.flags.c_contiguous for d in data)
    for d in data:
        if flat:        # any shape of this size shares the kernel
            args.append(d.reshape(-1))
            layout.append(("r", None))
            continue
        c, bshape = _compact(d)
        args.append(c)
        layout.append(("b", bshape))
    key = (prim, pk, flat, tuple((a.dtype.num, a.ndim, l) for a, l in zip(args, layout)))
    fn = _CACHE.get(key)
    if fn is None:
        if len(_CACHE) >= _CACHE_MAX:
            _CACHE.clear()
        fn = _CACHE[key] = _make(prim, params, tuple(layout))
        stats["compiles"] += 1
    _LOCAL.busy = True
    try:
        out = fn(*args)._data
    finally:
        _LOCAL.busy = False
    stats["calls"] += 1
    if flat:
        out = out.reshape(shape0)
    return out if out.dtype == out_np else out.astype(out_np)


def enabled() -> bool:
    return eager.kernel_provider() is provider


def enable(on: bool = True) -> None:
    eager.set_kernel_provider(provider if on else None, _least())


enable(os.environ.get("TRACEJIT_EAGER_KERNELS", "1") != "0")
