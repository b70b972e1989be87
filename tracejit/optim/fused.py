"""Running an optimizer's update rule: one compiled graph for a whole (device, dtype) group of
parameters, or the same rule as traced ops inside an outer trace.

An update rule is a Python function `math(flags, slots, per_param, scalars)` written in
tracejit ops. `slots` maps a name ('param', 'grad', 'exp_avg', ...) to one tensor per
parameter, `per_param` maps a name to one 0-d scalar per parameter (Adam's bias corrections),
`scalars` maps a hyperparameter's name to its value, and `flags` holds what is static (Python
bools that choose the form of the update). It returns the new value of each updated slot.

Eagerly, the rule is compiled once per layout (flags, number of parameters, slot names) with
every tensor and scalar as a flat positional argument: scalars are Python floats, which a
compiled function takes as weak 0-d inputs, so a new learning rate does not retrace; new shapes
are new cache entries of the same compiled function. The results are copied back into the
tensors' own storage (the version counters move, as with torch's in-place update).
"""
from __future__ import annotations

import threading
from collections import namedtuple
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Callable

import numpy as np

from ..ir import dtypes as dt
from ..runtime.compile import CompiledFunction, compile as tj_compile
from ..devices import is_host
from ..tracer import ops
from ..tracer.state import STATE, no_grad
from ..tracer.tensor import Tensor
from ..tracer.inplace import store

CacheInfo = namedtuple("CacheInfo", "hits misses entries")

_CACHE: dict[tuple, CompiledFunction] = {}
CHUNK_BYTES = 1 << 18           # parameter bytes per compiled call on the host (see _chunks)
_LOCK = threading.Lock()
_SKIP = threading.local()       # .found: a traced 0-d bool while GradScaler steps in a trace


@contextmanager
def skipped_if(found_inf: Tensor) -> Iterator[None]:
    """Inside a trace, every optimizer state write made in this block keeps the old value where
    `found_inf` (a traced 0-d bool) is true: GradScaler's skipped step without a branch."""
    outer = getattr(_SKIP, "found", None)
    _SKIP.found = found_inf
    try:
        yield
    finally:
        _SKIP.found = outer


def in_skipped_step() -> bool:
    """Whether the state writes made now are masked by GradScaler's `skipped_if` (the step may
    turn out to be skipped when it runs)."""
    return getattr(_SKIP, "found", None) is not None


def masked_copy(t: Tensor, new: Tensor) -> None:
    """t.copy_(new) inside a trace, or t unchanged where the enclosing `skipped_if` says the
    step is skipped (the old value is read before the write, so it is this step's input)."""
    found = getattr(_SKIP, "found", None)
    if found is not None:
        new = ops.where(found, t, ops.cast(new, t.dtype))
    t.copy_(new)


def count_step(step: Tensor) -> Any:
    """Count one more step in a parameter's float32 `step` state and return the new count: a
    Python float eagerly, a traced value inside a trace (where a step GradScaler skips does
    not count)."""
    if STATE.traces:
        t = step + 1
        masked_copy(step, t)
        return f64(t)
    d = step._data
    np.add(d, 1, out=d)
    step._version[0] += 1
    return float(d)


class Precision:
    """The dtypes of one parameter's update: `store` is the parameter's, `math` is what each
    op computes in (float32 for 16-bit floats, as torch's kernels do). Every torch op's result
    is rounded to `store`, as torch keeps it in the tensor between ops."""

    def __init__(self, dtype: dt.DType) -> None:
        self.store = dtype
        self.math = dt.f32 if dtype in (dt.f16, dt.bf16) else dtype

    def load(self, t: Tensor) -> Tensor:
        return ops.cast(t, self.math)

    def scalar(self, x: Any) -> Tensor:
        """A hyperparameter (computed in float64, as torch computes it in Python) as the
        scalar operand of a kernel."""
        return ops.cast(x, self.math)

    def round(self, t: Tensor) -> Tensor:
        return ops.cast(ops.cast(t, self.store), self.math)

    def out(self, t: Tensor) -> Tensor:
        return ops.cast(t, self.store)


def load_grad(P: Precision, p: Tensor, grad: Tensor, maximize: bool, wd: Any) -> tuple:
    """(the parameter, its gradient) in P's math dtype as torch's SGD/RMSprop/Adagrad/Adadelta
    read them: the gradient negated under maximize, plus wd * p when wd is not None."""
    pm, g = P.load(p), P.load(grad)
    if maximize:
        g = -g
    if wd is not None:
        g = P.round(g + P.scalar(wd) * pm)
    return pm, g


def f64(x: Any) -> Any:
    """A scalar in float64 (a Python float stays one)."""
    return ops.cast(x, dt.f64) if isinstance(x, Tensor) else float(x)


def write_back(t: Tensor, new: Any) -> None:
    """Store `new` (an array of t's shape) into t's own storage, as an in-place op does: a
    parameter or state tensor that is a view writes through to its base, and views follow."""
    store(t, new, "optimizer.step")


def _arg(arr: Any) -> Any:
    return arr if is_host(arr) else Tensor(arr)


def _compiled(name: str, math: Callable, layout: tuple) -> CompiledFunction:
    key = (name, math, layout)
    fn = _CACHE.get(key)
    if fn is not None:
        return fn
    flags, n, slot_names, pp_names, sc_names, written = layout

    def update(*flat):
        it = iter(flat)
        slots = {s: [next(it) for _ in range(n)] for s in slot_names}
        per_param = {s: [next(it) for _ in range(n)] for s in pp_names}
        scalars = {s: next(it) for s in sc_names}
        new = math(flags, slots, per_param, scalars)
        return tuple(new[w] for w in written)

    update.__name__ = update.__qualname__ = f"{name}_step"
    with _LOCK:
        return _CACHE.setdefault(key, tj_compile(update))


def _chunks(params: list[Tensor]) -> list[tuple[int, int]]:
    """Index ranges of consecutive parameters holding at most CHUNK_BYTES (a bigger parameter
    is a chunk of its own). On the host each compiled call allocates its results afresh, and
    the results of one call over a whole model's parameters neither fit in the caches nor get
    reused memory (page faults each step): 20 float32 parameters of 256x256 stepped in 9-27 ms
    as one call and in 2-2.5 ms as calls of at most 256 KiB (bench/optim.py). GPU memory comes
    from CuPy's pool, and there every call is a kernel launch: one call for the whole group."""
    if not is_host(params[0]._data):
        return [(0, len(params))]
    bounds, acc = [0], 0
    for i, p in enumerate(params):
        if acc and acc + p._data.nbytes > CHUNK_BYTES:
            bounds.append(i)
            acc = 0
        acc += p._data.nbytes
    bounds.append(len(params))
    return list(zip(bounds[:-1], bounds[1:]))


def run_update(name: str, math: Callable, flags: tuple, slots: dict[str, list[Tensor]],
               per_param: dict[str, list[Any]], scalars: dict[str, Any],
               written: tuple[str, ...], used: dict | None = None,
               param_flags: tuple | None = None) -> None:
    """Apply `math` (see the module doc) and store the slots named in `written` in place.
    `param_flags`, if given, holds one static flag per parameter; `math` finds it as the last
    entry of its flags."""
    if STATE.traces:
        # inside an outer trace: the same rule as traced ops; the in-place copies are the
        # trace's to turn into graph outputs written back after each call
        new = math(flags if param_flags is None else flags + (param_flags,), slots, per_param,
                   scalars)
        with no_grad():
            for w in written:
                for t, v in zip(slots[w], new[w]):
                    masked_copy(t, v)
        return
    for a, b in _chunks(slots["param"]):
        n = b - a
        fl = flags if param_flags is None else flags + (param_flags[a:b],)
        layout = (fl, n, tuple(slots), tuple(per_param), tuple(scalars), written)
        fn = _compiled(name, math, layout)
        if used is not None:
            used[(name, math, layout)] = fn
        # host arrays take the compiled call's fast path; device arrays go in a plain Tensor
        flat: list[Any] = [_arg(t._data) for s in slots.values() for t in s[a:b]]
        flat += [float(x) for s in per_param.values() for x in s[a:b]]
        flat += [float(x) for x in scalars.values()]
        res = fn(*flat)
        for w, outs in zip(written, res):
            for t, o in zip(slots[w][a:b], outs):
                write_back(t, o._data)


def cache_info(functions) -> CacheInfo:
    """Hits, misses and entries summed over compiled update functions."""
    infos = [f.cache_info() for f in functions]
    return CacheInfo(sum(i.hits for i in infos), sum(i.misses for i in infos),
                     sum(i.entries for i in infos))
