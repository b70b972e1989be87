"""Counting into bins, torch's spelling: `bincount`, `histc`, `histogram`.

All three are a scatter-add of ones (or weights) into zeros, so they compile where their
output size is known when traced. `histc` and `histogram` always know it (bins), and take
their range from the data (aminmax) when none is given. `bincount`'s length is
max(input) + 1 (at least minlength): eagerly it reads the data; inside tj.compile it needs
minlength, is then minlength long, and its values are checked against [0, minlength) when
the compiled call runs (an error, never a silently short answer), as `nonzero`/`unique`
refuse a data-dependent size there. histogram bins an element by comparing it with the
interior edges (x == the last edge falls in the last bin), which is what torch's local search
and binary search give; histc uses torch's linear position (x - min) * bins / (max - min).
"""
from __future__ import annotations

import numbers
from typing import NamedTuple

import numpy as np

from ..ir import dtypes as dt
from . import checks, gathering, ops
from .math_ops import floor
from .selection import amax, amin
from .state import STATE
from .tensor_base import TensorBase as Tensor


def _zeros(n: int, dtype: dt.DType, like: Tensor) -> Tensor:
    return ops.as_tensor(np.zeros(n, dtype.np), like=like, const=True)


def _count(pos: Tensor, vals: Tensor, n: int) -> Tensor:
    """zeros(n) with vals added at pos (both 1-d, pos in [0, n))."""
    out = _zeros(n, vals.dtype, vals)
    if pos.numel() == 0 or n == 0:
        return out if not vals.dtype.is_float else ops.add(out, ops.mul(ops.sum(vals), 0))
    return gathering.scatter_add(out, 0, pos, vals)


# -- bincount ------------------------------------------------------------------------------------
def bincount(input, weights=None, minlength: int = 0) -> Tensor:  # noqa: A002
    """How often each value 0..max occurs in a 1-d non-negative integer tensor (the sum of
    their weights with `weights`: int64 without, the weights' float dtype, float64 for
    integer weights)."""
    x = ops.as_tensor(input)
    if x.ndim != 1 or not x.dtype.is_int or x.dtype is dt.bool_:
        raise ops._err("bincount", f"only supports 1-d non-negative integral inputs, got "
                       f"{ops._fmt(x)}", RuntimeError)
    if isinstance(minlength, bool) or not isinstance(minlength, numbers.Integral) or \
            minlength < 0:
        raise ops._err("bincount", f"minlength should be a non-negative int, got "
                       f"{minlength!r}", RuntimeError)
    w = None
    if weights is not None:
        w = ops.as_tensor(weights, like=x if x._traced else None)
        if w.ndim != 1 or w.shape[0] != x.shape[0]:
            raise ops._err("bincount", f"weights {ops._fmt(w)} should be 1-d and have the same "
                           f"length as input {ops._fmt(x)}", RuntimeError)
        if not w.dtype.is_float:
            w = ops.cast(w, dt.f64)
    if STATE.traces:
        if not minlength:
            raise ops._err("bincount", "the result's length depends on the data (max + 1): "
                           "inside tj.compile pass minlength= (the values must then be "
                           "below it), or call it eagerly", RuntimeError)
        checks.check_index(x, 0, minlength, f"bincount: inside tj.compile the values must lie "
                           f"in [0, minlength={minlength}) (negative values are errors too)",
                           cls=RuntimeError)
        n = minlength
    else:
        vals = x._host("bincount")
        if vals.size and vals.min() < 0:
            raise ops._err("bincount", f"only supports 1-d non-negative integral inputs, got "
                           f"the value {int(vals.min())}", RuntimeError)
        n = max(int(vals.max()) + 1 if vals.size else 0, minlength)
    pos = ops.cast(x, dt.i64)
    if STATE.traces and x.numel():     # (checked above: clipping keeps the check's own error)
        pos = ops.clip(pos, 0, n - 1)
    if w is None:
        ones = ops.as_tensor(np.ones(x.shape[0], np.int64), like=x, const=True)
        return _count(pos, ones, n)
    return _count(pos, w, n)


# -- histc ---------------------------------------------------------------------------------------
def _float_input(op: str, input) -> Tensor:  # noqa: A002
    x = ops.as_tensor(input)
    if not x.dtype.is_float:
        raise ops._err(op, f"expected a floating point input, got {ops._fmt(x)}",
                       RuntimeError)
    return x


def _data_range(x: Tensor, lo, hi, widen: float, empty_hi: float = 0.0
                ) -> tuple[Tensor, Tensor]:
    """The range [lo, hi] as 0-d tensors of x's dtype: the data's own when lo == hi ([0,
    empty_hi] for no data), moved apart by `widen` each way when its ends are still equal."""
    if lo == hi:
        if x.numel():
            flat = ops.stop_gradient(ops.reshape(x, (x.numel(),)))
            lo_t, hi_t = amin(flat), amax(flat)
            if not STATE.traces:
                ends = [float(v._host("histogram")) for v in (lo_t, hi_t)]
                if not all(np.isfinite(ends)):
                    raise ops._err("histc/histogram", f"range of [{ends[0]}, {ends[1]}] is "
                                   f"not finite", RuntimeError)
        else:
            lo_t, hi_t = (ops.as_tensor(v, x.dtype, like=x) for v in (0.0, empty_hi))
    else:
        lo_t, hi_t = (ops.as_tensor(float(v), x.dtype, like=x) for v in (lo, hi))
    same = ops.eq(lo_t, hi_t)
    return ops.where(same, ops.sub(lo_t, widen), lo_t), ops.where(same, ops.add(hi_t, widen),
                                                                  hi_t)


def histc(input, bins: int = 100, min=0, max=0) -> Tensor:  # noqa: A002
    """A histogram of `bins` equal bins over [min, max] (the data's range when min == max);
    elements outside it (and NaN) are not counted. The result has input's float dtype."""
    x = _float_input("histc", input)
    if isinstance(bins, bool) or not isinstance(bins, numbers.Integral) or bins <= 0:
        raise ops._err("histc", f"bins must be > 0, got {bins!r}", RuntimeError)
    if min > max:
        raise ops._err("histc", f"max must be larger than min, got min={min}, max={max}",
                       RuntimeError)
    flat = ops.stop_gradient(ops.reshape(x, (x.numel(),)))
    lo, hi = _data_range(flat, min, max, 1.0)
    inside = ops.logical_and(ops.ge(flat, lo), ops.le(flat, hi))
    pos = floor(ops.div(ops.mul(ops.sub(flat, lo), bins), ops.sub(hi, lo)))
    pos = ops.clip(ops.cast(ops.where(inside, pos, 0), dt.i64), 0, bins - 1)
    return _count(pos, ops.cast(inside, x.dtype), bins)


# -- histogram -----------------------------------------------------------------------------------
class Histogram(NamedTuple):
    """torch.return_types.histogram: (hist, bin_edges)."""
    hist: Tensor
    bin_edges: Tensor


def _edges(x: Tensor, bins: int, rng) -> Tensor:
    """bins + 1 equal-width edges over rng (or the data's range), torch's linspace formula."""
    if rng is None:
        lo, hi = _data_range(x, 0.0, 0.0, 0.5, 1.0)
    else:
        if len(rng) != 2 or rng[0] > rng[1]:
            raise ops._err("histogram", f"range must be (min, max) with min <= max, got "
                           f"{rng!r}", ValueError)
        lo, hi = _data_range(x, rng[0], rng[1], 0.5)
    i = np.arange(bins + 1, dtype=np.float64)
    half = (bins + 1) // 2
    step = ops.div(ops.sub(hi, lo), bins)
    up = ops.as_tensor(i.astype(x.dtype.np), like=x, const=True)
    down = ops.as_tensor((bins - i).astype(x.dtype.np), like=x, const=True)
    first = ops.as_tensor(i < half, like=x, const=True)
    return ops.where(first, ops.add(lo, ops.mul(step, up)), ops.sub(hi, ops.mul(step, down)))


def histogram(input, bins=100, *, range=None, weight=None, density: bool = False  # noqa: A002
              ) -> Histogram:
    """torch.histogram: counts (or summed weights) of input's elements in bins given as a
    count of equal bins over `range` (the data's range by default) or as a 1-d tensor of
    increasing edges; density=True divides by the total and the bin widths."""
    x = _float_input("histogram", input)
    flat = ops.stop_gradient(ops.reshape(x, (x.numel(),)))
    if isinstance(bins, Tensor):
        if bins.ndim != 1 or bins.shape[0] < 1 or bins.dtype is not x.dtype:
            raise ops._err("histogram", f"bins must be a 1-d tensor of at least one edge with "
                           f"the input's dtype, got {ops._fmt(bins)} for {ops._fmt(x)}",
                           RuntimeError)
        edges = bins
    elif isinstance(bins, numbers.Integral) and not isinstance(bins, bool) and bins > 0:
        edges = _edges(flat, int(bins), range)
    else:
        raise ops._err("histogram", f"bins must be a positive int or a 1-d tensor of edges, "
                       f"got {bins!r}", RuntimeError)
    nb = edges.shape[0] - 1
    w = None
    if weight is not None:
        w = ops.as_tensor(weight, like=x if x._traced else None)
        if w.shape != x.shape or w.dtype is not x.dtype:
            raise ops._err("histogram", f"weight {ops._fmt(w)} must have the input's shape "
                           f"and dtype {ops._fmt(x)}", RuntimeError)
        w = ops.reshape(w, (x.numel(),))
    if nb == 0:
        return Histogram(_zeros(0, x.dtype, x), edges)
    e = ops.stop_gradient(edges)
    inside = ops.logical_and(ops.ge(flat, e[0]), ops.le(flat, e[nb]))
    inner = e[1:nb]
    if nb > 1:
        above = ops.ge(ops.unsqueeze(flat, 1), ops.unsqueeze(inner, 0))
        pos = ops.sum(ops.cast(above, dt.i64), 1)
    else:
        pos = ops.as_tensor(np.zeros(x.numel(), np.int64), like=x, const=True)
    vals = ops.cast(inside, x.dtype) if w is None else ops.where(inside, w, 0)
    hist = _count(pos, vals, nb)
    if density:
        widths = ops.sub(e[1:], e[:nb])
        hist = ops.div(hist, ops.mul(ops.sum(hist), widths))
    return Histogram(hist, edges)
