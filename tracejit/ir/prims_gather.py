"""gather (an integer-indexed read along one axis) and scatter_add, its adjoint, and
take_along (one element per position along an axis, numpy's take_along_axis with the axis
dropped: cross_entropy's target log-probabilities), whose adjoint is an elementwise select
rather than a scatter. Each primitive with its rules (shape, NumPy implementation, vjp/jvp,
index map for fusion, batching, bounds for compiled index checks)."""
from __future__ import annotations

import math

import numpy as np

from . import dtypes as dt
from .batching import moveaxis, to_batched
from .core import Aval
from .index_maps import Read
from .primitives import (P, Primitive, add, bind, broadcast, cast, eq, ge, lt, mul, ne,
                         op_error, reshape, transpose, where, zeros_like)
from .prims_structural import in_float32


# -- gather and its adjoint -------------------------------------------------------------------
def _check_index(name, idx: Aval):
    if not idx.dtype.is_int:
        raise op_error(name, f"indices must be integers, got {idx}", TypeError)


def _infer_gather(name, avals, axis):
    x, idx = avals
    _check_index(name, idx)
    if not 0 <= axis < x.ndim:
        raise op_error(name, f"invalid axis {axis} for {x}")
    if x.shape[axis] == 0 and idx.size:
        raise op_error(name, f"cannot index into an empty axis of {x}", IndexError)
    return Aval(x.shape[:axis] + idx.shape + x.shape[axis + 1:], x.dtype)


def _impl_gather(x, idx, axis):
    # the one bounds check of an eager lookup (the tracer leaves a host index to it; the eager
    # path adds the user's file:line): NumPy's take wraps a negative index in [-n, 0) itself
    if type(x) is np.ndarray and type(idx) is np.ndarray:
        try:    # (mode "raise": NumPy checks each index as it copies; a min and a max cost 2x)
            return np.take(x, idx, axis=axis)
        except IndexError:
            pass            # raised below, naming the index as the other arrays' check does
    n = x.shape[axis]
    if idx.size:
        lo, hi = idx.min(), idx.max()
        if lo < -n or hi >= n:
            raise IndexError(f"gather: index {int(hi) if hi >= n else int(lo)} is out of "
                             f"bounds for an axis of size {n}")
    return np.take(x, idx, axis=axis)


def _batch_flat_index(idx, n: int, ax):
    """Per-example indices into an axis of size n as indices into the batch folded into that
    axis (B*n rows): valid ones gain b*n; invalid ones become B*n, out of range there too."""
    if idx.dtype is not dt.i64:
        idx = cast(idx, dt.i64)
    idx = where(lt(idx, 0), add(idx, n), idx)
    bad = ne(lt(idx, 0), ge(idx, n))            # (both cannot hold: this is their "or")
    rows = mul(bind(P.iota, idx, axis=0), n)
    return where(bad, ax.size * n, add(idx, rows))


def _batch_gather(prim, ax, args, batched, params):
    x, idx = args
    axis = params["axis"]
    if not batched[1]:
        return bind(P.gather, x, idx, axis=axis + 1), True
    if not batched[0]:                 # x[:axis] + (B, I...) + rest
        return moveaxis(bind(P.gather, x, idx, axis=axis), axis, 0), True
    # both batched: one gather from x with the batch folded into the indexed axis
    n = x.shape[axis + 1]
    xt = moveaxis(x, axis + 1, 1)                       # (B, n, a..., rest)
    flat = reshape(xt, (ax.size * n,) + tuple(xt.shape[2:]))
    out = bind(P.gather, flat, _batch_flat_index(idx, n, ax), axis=0)   # (B, I..., a..., rest)
    k = len(idx.shape) - 1
    perm = ([0] + list(range(1 + k, 1 + k + axis)) + list(range(1, 1 + k))
            + list(range(1 + k + axis, len(out.shape))))
    return transpose(out, tuple(perm)), True


def _index_gather(ix, idx, site, axis):
    k = len(site.in_shapes[1])
    j = ix.wrap_index(site.operand(1, idx[axis:axis + k]), site.in_shapes[0][axis])
    return Read(0, idx[:axis] + [j] + idx[axis + k:])


def _rows_gather(j, ins, out, dep, axis):
    # indices computed in the same rows would have to be read across rows: not row-local
    return axis >= j and not dep[1]


P.register(Primitive("gather", "index", _infer_gather, _impl_gather,
                     vjp=lambda g, i, o, p, n: [
                         bind(P.scatter_add, i[1], g, axis=p["axis"], shape=i[0].shape), None],
                     jvp=lambda t, i, o, p: bind(P.gather, t[0], i[1], **p),
                     saves=(1,), params={"axis": "int"}, arity=2,
                     index_map=_index_gather, rows=_rows_gather,
                     bounds=lambda avals, p: (1, avals[0].shape[p["axis"]]),
                     batch=_batch_gather))


def _infer_scatter_add(name, avals, axis, shape):
    idx, upd = avals
    _check_index(name, idx)
    want = shape[:axis] + idx.shape + shape[axis + 1:]
    if not 0 <= axis < len(shape) or upd.shape != tuple(want):
        raise op_error(name, f"updates {upd} do not fit indices {idx} into {list(shape)} "
                             f"on axis {axis}")
    return Aval(shape, upd.dtype)


def _impl_scatter_add(idx, upd, axis, shape):
    # on upd's device (NEP 18); C order whatever upd's, so that the flat view below is one
    out = np.zeros_like(upd, shape=shape, order="C")
    if hasattr(out, "scatter_add"):     # a CuPy array: it has no ufunc.at, but this method
        where = (slice(None),) * axis + (idx,)  # (what cupyx.scatter_add calls) is np.add.at's
        out.scatter_add(where, upd)             # twin
    else:
        _add_at_flat(out, idx, upd, axis)
    return out


def _add_at_flat(out: np.ndarray, idx: np.ndarray, upd: np.ndarray, axis: int) -> None:
    """np.add.at(out, (:,)*axis + (idx,), upd) through one flat index into the flat `out`:
    NumPy's fast path of ufunc.at is a 1-D operand with a 1-D index; a row index into a 2-D
    array runs its generic loop (an embedding's gradient, 159 rows of 10: 17 -> 8 us; 4096 rows
    of 64: 7.4 -> 3.1 ms). Each output element still sums its updates in index order."""
    n = out.shape[axis]
    if idx.size:
        lo, hi = int(idx.min()), int(idx.max())
        if lo < -n or hi >= n:          # (a flat index out of its row could land in another)
            raise IndexError(f"scatter_add: index {hi if hi >= n else lo} is out of range for "
                             f"an axis of size {n}")
        if lo < 0:
            idx = np.where(idx < 0, idx + n, idx)
    pre = math.prod(out.shape[:axis])
    post = math.prod(out.shape[axis + 1:])
    flat = idx.reshape(1, -1, 1).astype(np.intp, copy=False)
    if pre != 1:
        flat = flat + (np.arange(pre, dtype=np.intp) * n).reshape(-1, 1, 1)
    if post != 1:
        flat = flat * post + np.arange(post, dtype=np.intp).reshape(1, 1, -1)
    np.add.at(out.reshape(-1), flat.reshape(-1), upd.reshape(-1))


def _batch_scatter_add(prim, ax, args, batched, params):
    idx, upd = args
    axis, shape = params["axis"], tuple(params["shape"])
    if not batched[0]:
        return bind(P.scatter_add, idx, upd, axis=axis + 1, shape=(ax.size,) + shape), True
    if not batched[1]:
        upd = to_batched(upd, ax)
    # both batched: one scatter into the batch folded into the indexed axis
    n, k = shape[axis], len(idx.shape) - 1
    perm = ([0] + list(range(1 + axis, 1 + axis + k)) + list(range(1, 1 + axis))
            + list(range(1 + axis + k, len(upd.shape))))
    rest = shape[:axis] + shape[axis + 1:]
    flat = bind(P.scatter_add, _batch_flat_index(idx, n, ax), transpose(upd, tuple(perm)),
                axis=0, shape=(ax.size * n,) + rest)
    return moveaxis(reshape(flat, (ax.size, n) + rest), 1, axis + 1), True


P.register(Primitive("scatter_add", "index", _infer_scatter_add, in_float32(_impl_scatter_add),
                     vjp=lambda g, i, o, p, n: [None, bind(P.gather, g, i[0], axis=p["axis"])],
                     jvp=lambda t, i, o, p: bind(P.scatter_add, i[0], t[1], **p),
                     saves=(0,), params={"axis": "int", "shape": "ints"}, arity=2,
                     bounds=lambda avals, p: (0, p["shape"][p["axis"]]),
                     batch=_batch_scatter_add))


# -- take_along: one element per position along an axis ------------------------------------------
def _infer_take_along(name, avals, axis):
    x, idx = avals
    _check_index(name, idx)
    if not 0 <= axis < x.ndim:
        raise op_error(name, f"invalid axis {axis} for {x}")
    want = x.shape[:axis] + x.shape[axis + 1:]
    if tuple(idx.shape) != tuple(want):
        raise op_error(name, f"indices {idx} must have the shape {list(want)} of {x} without "
                             f"axis {axis}")
    if x.shape[axis] == 0 and idx.size:
        raise op_error(name, f"cannot index into an empty axis of {x}", IndexError)
    return Aval(idx.shape, x.dtype)


def _impl_take_along(x, idx, axis):
    n = x.shape[axis]
    if idx.size and (idx.min() < -n or idx.max() >= n):
        raise IndexError(f"take_along: index out of range for an axis of size {n}")
    return np.take_along_axis(x, np.expand_dims(idx, axis), axis).squeeze(axis)


def _vjp_take_along(g, ins, out, params, need):
    """The cotangent put back where it was read: where(iota == idx, g, 0), elementwise, so it
    fuses into whatever consumes it (cross_entropy's log_softmax backward) instead of being a
    zero-filled scatter buffer of x's size."""
    x, idx = ins
    axis = params["axis"]
    n, shape = x.shape[axis], tuple(x.shape)
    keep = shape[:axis] + (1,) + shape[axis + 1:]
    i = cast(idx, dt.i64)
    i = where(lt(i, 0), add(i, n), i)
    gb = broadcast(reshape(g, keep), shape)
    hit = eq(bind(P.iota, gb, axis=axis), broadcast(reshape(i, keep), shape))
    return [where(hit, gb, zeros_like(gb)), None]


def _index_take_along(ix, idx, site, axis):
    j = ix.wrap_index(site.operand(1, list(idx)), site.in_shapes[0][axis])
    return Read(0, list(idx[:axis]) + [j] + list(idx[axis:]))


def _batch_take_along(prim, ax, args, batched, params):
    x, idx = (a if b else to_batched(a, ax) for a, b in zip(args, batched))
    return bind(P.take_along, x, idx, axis=params["axis"] + 1), True


P.register(Primitive("take_along", "index", _infer_take_along, _impl_take_along,
                     vjp=_vjp_take_along,
                     jvp=lambda t, i, o, p: bind(P.take_along, t[0], i[1], **p),
                     saves=(1,), params={"axis": "int"}, arity=2,
                     index_map=_index_take_along, rows=_rows_gather,
                     bounds=lambda avals, p: (1, avals[0].shape[p["axis"]]),
                     batch=_batch_take_along))
