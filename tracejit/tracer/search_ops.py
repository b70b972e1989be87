"""Order statistics, searches and comparisons in torch's spelling: `kthvalue`, `median`,
`searchsorted`, `bucketize`, `isclose`, `allclose` and `unique`.

kthvalue/median read one element per row at a position of the stable argsort (sorting.py's
primitive, NaN largest), so their gradient is gathering.along's (to the element returned) and
they compile. median returns the lower of the two middle values, as torch, and NaN (at the
first NaN's index) when a row holds one. searchsorted counts, per value, the sequence elements
below it (`<`, or `<=` for side='right') with one comparison against every element of its
row: compilable, exact, O(values x sequence) work. `unique`'s result has a data-dependent size:
eager only (NumPy), with a clear error inside a trace; it has no gradient, as torch's.
"""
from __future__ import annotations

import numbers
from typing import NamedTuple

import numpy as np

from ..ir import dtypes as dt
from . import creation, ops
from .gathering import along
from .node_names import rename
from .sorting import _argsort, _dim
from .tensor_base import TensorBase as Tensor


class ValueIndex(NamedTuple):
    """torch.return_types.kthvalue / median: (values, indices)."""
    values: Tensor
    indices: Tensor


# -- kthvalue, median ---------------------------------------------------------------------------
def _pick(x: Tensor, d: int, pos: Tensor | int, keepdim: bool, name: str) -> ValueIndex:
    """The element at sorted position `pos` (per row, or one int) along d, and its index."""
    order = _argsort(name, x, d, False)
    shape1 = x.shape[:d] + (1,) + x.shape[d + 1:]
    if isinstance(pos, int):
        at = ops.as_tensor(np.full(shape1, pos, np.int64), like=x, const=True)
    else:
        at = ops.reshape(pos, shape1)
    idx = along(order, at, d)
    val = rename(along(x, idx, d), name, x)
    if not keepdim:
        val, idx = ops.reshape(val, x.shape[:d] + x.shape[d + 1:]), \
            ops.reshape(idx, x.shape[:d] + x.shape[d + 1:])
    return ValueIndex(val, idx)


def kthvalue(input, k: int, dim: int = -1, keepdim: bool = False) -> ValueIndex:  # noqa: A002
    """The k-th smallest element (1-based) along dim and its index."""
    x = ops.as_tensor(input)
    d = _dim("kthvalue", x, dim)
    n = x.shape[d] if x.ndim else 1
    if isinstance(k, bool) or not isinstance(k, numbers.Integral):
        raise ops._err("kthvalue", f"k must be an int, got {k!r}", TypeError)
    if not 1 <= k <= n:
        raise ops._err("kthvalue", f"selected number k={k} out of range for dimension {d} of "
                       f"size {n} ({ops._fmt(x)})", RuntimeError)
    if x.ndim == 0:
        return ValueIndex(x, ops.as_tensor(0, dt.i64, like=x))
    return _pick(x, d, int(k) - 1, bool(keepdim), "KthvalueBackward0")


def median(input, dim=None, keepdim: bool = False):  # noqa: A002
    """The lower median: of all elements (a 0-d tensor) when dim is None, else (values,
    indices) along dim. A row with a NaN has median NaN (the first NaN's index)."""
    x = ops.as_tensor(input)
    if dim is None:
        if x.numel() == 0:      # torch: NaN
            return ops.add(ops.sum(ops.cast(x, x.dtype if x.dtype.is_float else dt.f32)),
                           np.nan)
        flat = ops.reshape(x, (x.numel(),))
        return rename(_median(flat, 0, False).values, "MedianBackward0", x)
    d = _dim("median", x, dim)
    if x.ndim == 0:
        return ValueIndex(x, ops.as_tensor(0, dt.i64, like=x))
    if x.shape[d] == 0:
        raise ops._err("median", f"cannot compute the median over an empty dimension {d} of "
                       f"{ops._fmt(x)}", IndexError)
    return _median(x, d, bool(keepdim))


def _median(x: Tensor, d: int, keepdim: bool) -> ValueIndex:
    n = x.shape[d]
    if not x.dtype.is_float:
        return _pick(x, d, (n - 1) // 2, keepdim, "MedianBackward1")
    # NaN sorts last: a row with c NaNs has its first NaN at sorted position n - c
    nans = ops.sum(ops.cast(ops.ne(ops.stop_gradient(x), ops.stop_gradient(x)), dt.i64), d,
                   True)
    pos = ops.where(ops.gt(nans, 0), ops.sub(n, nans), (n - 1) // 2)
    return _pick(x, d, ops.cast(pos, dt.i64), keepdim, "MedianBackward1")


# -- searchsorted, bucketize --------------------------------------------------------------------
def searchsorted(sorted_sequence, input, *, out_int32: bool = False,  # noqa: A002
                 right: bool = False, side: str | None = None, sorter=None) -> Tensor:
    """For each value, the index in the (last dim of the) sorted sequence where it would be
    inserted to keep the order: before equal elements (side='left'), or after (right)."""
    seq = ops.as_tensor(sorted_sequence)
    if isinstance(input, numbers.Number) and not isinstance(input, bool):
        vals = ops.as_tensor(input, seq.dtype, like=seq)
    else:
        vals = ops.as_tensor(input, like=seq if seq._traced else None)
    if side is not None:
        if side not in ("left", "right"):
            raise ops._err("searchsorted", f"side can only be 'left' or 'right', got {side!r}",
                           RuntimeError)
        if right and side == "left":
            raise ops._err("searchsorted", "side='left' and right=True are conflicting",
                           RuntimeError)
        right = side == "right"
    if seq.ndim == 0:
        raise ops._err("searchsorted", f"sorted_sequence must have at least one dim, got "
                       f"{ops._fmt(seq)}", RuntimeError)
    if seq.ndim > 1 and (vals.ndim != seq.ndim or vals.shape[:-1] != seq.shape[:-1]):
        raise ops._err("searchsorted", f"sorted_sequence {ops._fmt(seq)} and input "
                       f"{ops._fmt(vals)} must have the same leading dims (or a 1-d sequence)",
                       RuntimeError)
    if sorter is not None:
        srt = ops.as_tensor(sorter, like=seq if seq._traced else None)
        if srt.shape != seq.shape or not srt.dtype.is_int:
            raise ops._err("searchsorted", f"sorter {ops._fmt(srt)} must be an integer tensor "
                           f"of the sequence's shape {ops._fmt(seq)}", RuntimeError)
        seq = along(seq, ops.cast(srt, dt.i64), seq.ndim - 1)
    seq, vals = ops.stop_gradient(seq), ops.stop_gradient(vals)
    if seq.dtype is not vals.dtype:
        common = ops.result_dtype(seq, vals)
        seq, vals = ops.cast(seq, common), ops.cast(vals, common)
    if seq.ndim == 1:
        s = ops.reshape(seq, (1,) * vals.ndim + seq.shape)
        v = ops.unsqueeze(vals, -1) if vals.ndim else ops.reshape(vals, (1,))
    else:
        s = ops.unsqueeze(seq, -2)             # [..., 1, n]
        v = ops.unsqueeze(vals, -1)            # [..., m, 1]
    below = ops.le(s, v) if right else ops.lt(s, v)
    if vals.dtype.is_float:     # NaN values go past every element (torch: NaN is largest)
        below = ops.logical_or(below, ops.ne(v, v))
    count = ops.sum(ops.cast(below, dt.i64), -1)
    if vals.ndim == 0:
        count = ops.reshape(count, ())
    return ops.cast(count, dt.i32) if out_int32 else count


def bucketize(input, boundaries, *, out_int32: bool = False, right: bool = False) -> Tensor:  # noqa: A002
    """The bucket of each value among 1-d sorted boundaries: i such that
    boundaries[i-1] < x <= boundaries[i] (right=False), or boundaries[i-1] <= x < boundaries[i]."""
    b = ops.as_tensor(boundaries)
    if b.ndim != 1:
        raise ops._err("bucketize", f"boundaries must be 1-d, got {ops._fmt(b)}", RuntimeError)
    return searchsorted(b, input, out_int32=out_int32, right=right)


# -- isclose, allclose --------------------------------------------------------------------------
def isclose(input, other, rtol: float = 1e-05, atol: float = 1e-08,  # noqa: A002
            equal_nan: bool = False) -> Tensor:
    """|a - b| <= atol + rtol |b| elementwise (equal infinities are close; NaN only to NaN with
    equal_nan)."""
    a = ops.as_tensor(input)
    b = ops.as_tensor(other, like=a if a._traced else None)
    if a.dtype is not b.dtype:
        raise ops._err("isclose", f"{ops._fmt(a)} and {ops._fmt(b)} must have the same dtype",
                       RuntimeError)
    if rtol < 0 or atol < 0:
        raise ops._err("isclose", f"rtol ({rtol}) and atol ({atol}) must be non-negative",
                       RuntimeError)
    a, b = ops.stop_gradient(a), ops.stop_gradient(b)
    same = ops.eq(a, b)
    if a.dtype is dt.bool_ or not a.dtype.is_float:
        if a.dtype is dt.bool_:
            return same
        a, b = ops.cast(a, dt.f64), ops.cast(b, dt.f64)
    diff = ops.abs(ops.sub(a, b))
    tol = ops.add(ops.mul(ops.abs(b), rtol), atol)
    # an unequal pair with an infinity is never close (|b| = inf makes the tolerance inf)
    finite = ops.logical_and(ops.lt(ops.abs(a), np.inf), ops.lt(ops.abs(b), np.inf))
    close = ops.logical_or(same, ops.logical_and(finite, ops.le(diff, ops.cast(tol, diff.dtype))))
    if equal_nan:
        close = ops.logical_or(close, ops.logical_and(ops.ne(a, a), ops.ne(b, b)))
    return close


def allclose(input, other, rtol: float = 1e-05, atol: float = 1e-08,  # noqa: A002
             equal_nan: bool = False) -> bool:
    """Whether every element is close (isclose): a Python bool, so eager only."""
    c = isclose(input, other, rtol, atol, equal_nan)
    return bool(np.all(c._host("allclose (returns a Python bool; use isclose(...).all() "
                               "inside tj.compile)")))


# -- unique -------------------------------------------------------------------------------------
def unique(input, sorted: bool = True, return_inverse: bool = False,  # noqa: A002
           return_counts: bool = False, dim=None):
    """The distinct elements (sorted ascending; along dim: the distinct slices), with the
    inverse indices and counts on request, as torch.unique. Eager only (data-dependent size);
    no gradient, as torch's."""
    x = ops.as_tensor(input)
    arr = x._host("unique (the result's size depends on the data; it runs eagerly only)")
    if dim is None:
        u, inv, cnt = np.unique(arr.reshape(-1), return_inverse=True, return_counts=True,
                                 equal_nan=False)    # each NaN its own, as torch
        inv = inv.reshape(x.shape)
    else:
        d = _dim("unique", x, dim)
        if x.ndim == 0:
            raise ops._err("unique", f"dim {dim} is out of range for a 0-d tensor", IndexError)
        if x.shape[d] == 0:
            u, inv, cnt = arr, np.zeros(0, np.int64), np.zeros(0, np.int64)
        else:
            u, inv, cnt = np.unique(arr, return_inverse=True, return_counts=True, axis=d)
            inv = inv.reshape(-1)
    dev = x.device
    res = [creation._new(np.ascontiguousarray(u.astype(arr.dtype, copy=False)), dev, False)]
    if return_inverse:
        res.append(creation._new(np.asarray(inv, np.int64), dev, False))
    if return_counts:
        res.append(creation._new(np.asarray(cnt, np.int64), dev, False))
    return res[0] if len(res) == 1 else tuple(res)
