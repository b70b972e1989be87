"""argsort: the int64 positions that sort each row along one axis, ascending or descending,
always stable (equal elements keep their order, in both directions), with NaN sorting as the
largest value (last ascending, first descending), as PyTorch. argtopk: the first k of them.
sort, topk and their gradients are built on these in the tracer: the values are a gather at
these positions, so their gradient is the gather's adjoint, a scatter-add.

argtopk on the host selects the k without sorting the row when the row is long and k small
against it (a partition, then a stable sort of the k); its result is argsort's first k, ties
included.

Lowering: an *extern* primitive (kind "extern"): the code generators do not generate it; the
CPU backend calls this NumPy implementation between native segments (as it calls BLAS for
matmul), the CUDA backend calls it on CuPy arrays (CuPy's stable sort); its operand is
materialized first. Descending order is the ascending order of
the reversed row, reversed, which keeps ties stable and puts NaN first without negating
(negation would overflow the smallest integer).
"""
from __future__ import annotations

import numpy as np

from . import dtypes as dt
from .batching import batch_axes_param
from .core import Aval
from .primitives import P, Primitive, op_error


def _infer(name: str, avals: list[Aval], axis: int, descending: bool) -> Aval:
    a = avals[0]
    if not 0 <= axis < a.ndim:
        raise op_error(name, f"invalid axis {axis} for {a}", IndexError)
    return Aval(a.shape, dt.i64)


def _impl(x, axis, descending):
    if x.dtype in dt.HALF_NP:          # compare in float32: every 16-bit value is exact there
        x = x.astype(np.float32)
    if not descending:
        return np.argsort(x, axis=axis, kind="stable").astype(np.int64)
    n = x.shape[axis]
    rev = np.argsort(np.flip(x, axis), axis=axis, kind="stable")
    return np.flip((n - 1) - rev, axis).astype(np.int64, order="C")


P.register(Primitive("argsort", "extern", _infer, _impl, vjp=lambda g, i, o, p, n: [None],
                     jvp=lambda t, i, o, p: None,
                     params={"axis": "int", "descending": "bool"}, arity=1,
                     batch=batch_axes_param("axis")))


def _infer_topk(name: str, avals: list[Aval], axis: int, k: int, descending: bool) -> Aval:
    a = avals[0]
    if not 0 <= axis < a.ndim:
        raise op_error(name, f"invalid axis {axis} for {a}", IndexError)
    if not 0 <= k <= a.shape[axis]:
        raise op_error(name, f"k={k} is out of range for axis {axis} of {a}", IndexError)
    return Aval(a.shape[:axis] + (k,) + a.shape[axis + 1:], dt.i64)


# a row at least this long, and k at most a quarter of it, is partitioned rather than sorted
# (measured with NumPy: a 64-element row sorts faster than it partitions, 128 and up do not)
PARTITION_MIN_ROW = 128

_BITS_AS_INT = {2: np.int16, 4: np.int32, 8: np.int64}


def _order_key(x: np.ndarray, descending: bool) -> np.ndarray:
    """Integers that order as x does in argsort (NaN the largest, -0.0 equal to 0.0, ties
    kept), reversed when descending: a float's bits with the sign bit folded, so that
    comparing integers compares the values; ~key reverses without overflow."""
    if x.dtype.kind == "f":
        # one NaN (all NaNs tie) and no -0.0 (-0.0 + 0.0 is 0.0)
        x = np.where(np.isnan(x), np.array(np.nan, x.dtype), x + x.dtype.type(0))
        it = _BITS_AS_INT[x.dtype.itemsize]
        b = x.view(it)
        key = b ^ ((b >> (8 * x.dtype.itemsize - 1)) & np.array(np.iinfo(it).max, it))
    elif x.dtype.kind == "b":
        key = x.view(np.int8)
    else:
        key = x
    return ~key if descending else key


def _impl_topk(x, axis, k, descending):
    n = x.shape[axis]
    if type(x) is not np.ndarray or n < PARTITION_MIN_ROW or 4 * k > n or k == 0:
        # (device arrays: CuPy's stable sort, as before)
        first = _impl(x, axis, descending)
        return first[(slice(None),) * axis + (slice(0, k),)].copy()     # (C order)
    if x.dtype in dt.HALF_NP:          # (as _impl: every 16-bit value is exact in float32)
        x = x.astype(np.float32)
    key = np.moveaxis(_order_key(x, descending), axis, -1)
    lead = key.shape[:-1]
    key = key.reshape(-1, n)
    # the k smallest keys per row: every key below the k-th, and of the keys equal to it the
    # first ones by position, as many as are missing (argsort's stable order takes those)
    kth = np.partition(key, k - 1, axis=-1)[:, k - 1:k]
    below = key < kth
    tied = key == kth
    missing = k - np.count_nonzero(below, axis=-1, keepdims=True)
    chosen = below | (tied & (np.cumsum(tied, axis=-1) <= missing))
    pos = np.nonzero(chosen)[1].reshape(-1, k)      # exactly k per row, in position order
    order = np.argsort(np.take_along_axis(key, pos, -1), axis=-1, kind="stable")
    out = np.take_along_axis(pos, order, -1).reshape(lead + (k,))
    return np.ascontiguousarray(np.moveaxis(out, -1, axis), dtype=np.int64)


P.register(Primitive("argtopk", "extern", _infer_topk, _impl_topk,
                     vjp=lambda g, i, o, p, n: [None], jvp=lambda t, i, o, p: None,
                     params={"axis": "int", "k": "int", "descending": "bool"}, arity=1,
                     batch=batch_axes_param("axis")))
