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

The crossover (MIN_ELEMENTS) was measured on the reference machine (2 cores, AVX-512) with
`python bench/eager.py --only crossover`; below it NumPy is faster. TRACEJIT_EAGER_KERNELS=0
turns the path off; TRACEJIT_EAGER_KERNEL_MIN sets the crossover.

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

MIN_ELEMENTS = int(os.environ.get("TRACEJIT_EAGER_KERNEL_MIN", 1 << 18))
_EXACT_SUM = frozenset("bil")                      # sums of bools/ints: every order is exact
_CACHE: dict = {}
_CACHE_MAX = 1024
_LOCAL = threading.local()
stats = {"calls": 0, "compiles": 0}                # read by tests and the benchmark


# Elementwise ops whose kernel beat NumPy on 4M float32 (bench/eager.py --only crossover): the
# memory-bound arithmetic, comparisons and selects, and exp (vectorized polynomial). tanh,
# sin, cos and the special functions are left to NumPy: there its SIMD versions were faster.
KERNEL_OPS = frozenset(("add", "sub", "mul", "div", "neg", "abs", "maximum", "minimum", "lt",
                        "le", "gt", "ge", "eq", "ne", "where", "exp", "cast", "reciprocal",
                        "sqrt"))


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
    big = False
    for d in data:
        if type(d) is not np.ndarray or d.dtype not in dt.NP_TO_DTYPE:
            return None
        if d.size >= MIN_ELEMENTS:
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
    eager.set_kernel_provider(provider if on else None, MIN_ELEMENTS)


enable(os.environ.get("TRACEJIT_EAGER_KERNELS", "1") != "0")
