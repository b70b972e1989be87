"""Reductions, shape/layout ops, gather/scatter-add, matmul and constants."""
from __future__ import annotations

import math

import numpy as np

from . import dtypes as dt
from .core import Aval
from .primitives import (P, Primitive, bind, broadcast, cast, div, eq, matmul, mul, op_error,
                         reduce_sum, reshape, swap_last, transpose)


def _check_axes(name: str, a: Aval, axes: tuple[int, ...]) -> None:
    if len(set(axes)) != len(axes) or any(not 0 <= ax < a.ndim for ax in axes):
        raise op_error(name, f"invalid axes {list(axes)} for {a}")


def _keep_shape(shape, axes):
    return tuple(1 if i in axes else d for i, d in enumerate(shape))


# -- reductions -------------------------------------------------------------------------------
def _infer_reduce(name, avals, axes):
    a = avals[0]
    _check_axes(name, a, axes)
    if a.dtype is dt.bool_:
        raise op_error(name, f"does not take bool operands, got {a}", TypeError)
    if name != "sum" and any(a.shape[ax] == 0 for ax in axes):
        raise op_error(name, f"reduction over an empty axis of {a} has no identity")
    return Aval(tuple(d for i, d in enumerate(a.shape) if i not in axes), a.dtype)


def _vjp_sum(g, ins, out, params, need):
    x = ins[0]
    return [broadcast(reshape(g, _keep_shape(x.shape, params["axes"])), x.shape)]


def _vjp_extreme(g, ins, out, params, need):
    # ties share the gradient evenly, as PyTorch's amax/amin
    x, axes = ins[0], params["axes"]
    keep = _keep_shape(x.shape, axes)
    mask = cast(eq(x, broadcast(reshape(out, keep), x.shape)), x.dtype)
    count = broadcast(reshape(reduce_sum(mask, axes), keep), x.shape)
    return [div(mul(mask, broadcast(reshape(g, keep), x.shape)), count)]


def _sum_node(params, in_avals, requires):
    # PyTorch names a full reduction to a scalar SumBackward0, one over given dims SumBackward1
    return "SumBackward0" if len(params["axes"]) == in_avals[0].ndim else "SumBackward1"


def _in_float32(fn):
    """16-bit floats accumulate in float32 and round once, as PyTorch and the kernels do."""
    def impl(*xs, **params):
        d = xs[-1].dtype                # the data: sum's x, matmul's b, scatter_add's updates
        if d not in dt.HALF_NP:
            return fn(*xs, **params)
        return fn(*(x.astype(np.float32) if x.dtype == d else x for x in xs), **params).astype(d)
    return impl


def _impl_sum(x, axes):
    """The accumulation rule, the same on every axis and every backend: float32 sums accumulate
    in float64 and round once (16-bit floats reach here as float32, see `_in_float32`); float64
    and integer sums accumulate in their own type."""
    if x.dtype == np.float32:
        return np.sum(x, axis=axes, dtype=np.float64).astype(np.float32)
    return np.sum(x, axis=axes, dtype=x.dtype)


P.register(Primitive("sum", "reduce", _infer_reduce, _in_float32(_impl_sum),
                     vjp=_vjp_sum, params={"axes": "ints"}, arity=1,
                     node_name=_sum_node))
P.register(Primitive("max", "reduce", _infer_reduce, lambda x, axes: np.max(x, axis=axes),
                     vjp=_vjp_extreme, saves=(0,), save_out=True, params={"axes": "ints"},
                     arity=1, node_name="AmaxBackward0"))
P.register(Primitive("min", "reduce", _infer_reduce, lambda x, axes: np.min(x, axis=axes),
                     vjp=_vjp_extreme, saves=(0,), save_out=True, params={"axes": "ints"},
                     arity=1, node_name="AminBackward0"))


# -- shape and layout -------------------------------------------------------------------------
def _infer_reshape(name, avals, shape):
    a = avals[0]
    if any(d < 0 for d in shape) or math.prod(shape) != a.size:
        raise op_error(name, f"cannot reshape {a} to {list(shape)}")
    return Aval(shape, a.dtype)


P.register(Primitive("reshape", "shape", _infer_reshape, lambda x, shape: np.reshape(x, shape),
                     vjp=lambda g, i, o, p, n: [reshape(g, i[0].shape)],
                     params={"shape": "ints"}, arity=1, node_name="ViewBackward0"))


def _infer_broadcast(name, avals, shape):
    a = avals[0]
    lead = len(shape) - a.ndim
    if lead < 0 or any(d not in (1, shape[lead + i]) for i, d in enumerate(a.shape)):
        raise op_error(name, f"cannot broadcast {a} to {list(shape)}")
    return Aval(shape, a.dtype)


def _vjp_broadcast(g, ins, out, params, need):
    from .primitives import sum_to_shape
    return [sum_to_shape(g, ins[0].shape)]


P.register(Primitive("broadcast", "shape", _infer_broadcast,
                     lambda x, shape: np.broadcast_to(x, shape), vjp=_vjp_broadcast,
                     params={"shape": "ints"}, arity=1, node_name="ExpandBackward0"))


def _infer_transpose(name, avals, perm):
    a = avals[0]
    if sorted(perm) != list(range(a.ndim)):
        raise op_error(name, f"{list(perm)} is not a permutation of the axes of {a}")
    return Aval(tuple(a.shape[p] for p in perm), a.dtype)


def _transpose_node(params, in_avals, requires):
    return "PermuteBackward0"        # what PyTorch names .T and .permute


P.register(Primitive("transpose", "shape", _infer_transpose,
                     lambda x, perm: np.transpose(x, perm),
                     vjp=lambda g, i, o, p, n: [transpose(g, tuple(np.argsort(p["perm"])))],
                     params={"perm": "ints"}, arity=1, node_name=_transpose_node))


def _infer_slice(name, avals, starts, stops, steps):
    a = avals[0]
    if not (len(starts) == len(stops) == len(steps) == a.ndim):
        raise op_error(name, f"needs one start/stop/step per axis of {a}")
    out = []
    for d, lo, hi, st in zip(a.shape, starts, stops, steps):
        if st < 1 or not 0 <= lo <= hi <= d:
            raise op_error(name, f"invalid slice {lo}:{hi}:{st} of an axis of size {d} in {a}")
        out.append(-(-(hi - lo) // st))
    return Aval(out, a.dtype)


def _vjp_slice(g, ins, out, params, need):
    lo, hi, it = [], [], []
    for d, n, a, st in zip(ins[0].shape, g.shape, params["starts"], params["steps"]):
        if n == 0:
            lo.append(0), hi.append(d), it.append(0)
        else:
            lo.append(a), hi.append(d - (a + (n - 1) * st + 1)), it.append(st - 1)
    return [bind(P.pad, g, lo=lo, hi=hi, interior=it)]


P.register(Primitive("slice", "shape", _infer_slice,
                     lambda x, starts, stops, steps:
                         x[tuple(slice(a, b, s) for a, b, s in zip(starts, stops, steps))],
                     vjp=_vjp_slice, params={"starts": "ints", "stops": "ints", "steps": "ints"},
                     arity=1, node_name="SliceBackward0"))


def _infer_pad(name, avals, lo, hi, interior):
    a = avals[0]
    if not (len(lo) == len(hi) == len(interior) == a.ndim):
        raise op_error(name, f"needs one lo/hi/interior per axis of {a}")
    if min((*lo, *hi, *interior), default=0) < 0:
        raise op_error(name, "negative padding is not supported")
    return Aval([l + h + n + max(n - 1, 0) * i for n, l, h, i in zip(a.shape, lo, hi, interior)],
                a.dtype)


def _impl_pad(x, lo, hi, interior):
    shape = [l + h + n + max(n - 1, 0) * i for n, l, h, i in zip(x.shape, lo, hi, interior)]
    out = np.zeros_like(x, shape=shape)      # *_like: stays on x's device (NEP 18)
    out[tuple(slice(l, l + (n - 1) * (i + 1) + 1, i + 1)
              for n, l, i in zip(x.shape, lo, interior))] = x
    return out


def _vjp_pad(g, ins, out, params, need):
    n = ins[0].shape
    starts = params["lo"]
    steps = tuple(i + 1 for i in params["interior"])
    stops = tuple(l + (d - 1) * s + 1 if d else l for d, l, s in zip(n, starts, steps))
    return [bind(P.slice, g, starts=starts, stops=stops, steps=steps)]


P.register(Primitive("pad", "shape", _infer_pad, _impl_pad, vjp=_vjp_pad,
                     params={"lo": "ints", "hi": "ints", "interior": "ints"}, arity=1,
                     node_name="ConstantPadNdBackward0"))


def _infer_concat(name, avals, axis):
    a0 = avals[0] if avals else None
    if a0 is None:
        raise op_error(name, "needs at least one operand")
    if not 0 <= axis < a0.ndim:
        raise op_error(name, f"invalid axis {axis} for {a0}")
    for a in avals[1:]:
        if a.dtype is not a0.dtype:
            raise op_error(name, "operand dtypes differ: " + ", ".join(map(str, avals)), TypeError)
        if a.ndim != a0.ndim or any(x != y for i, (x, y) in enumerate(zip(a.shape, a0.shape))
                                    if i != axis):
            raise op_error(name, f"shapes do not match except on axis {axis}: "
                           + ", ".join(map(str, avals)))
    shape = list(a0.shape)
    shape[axis] = sum(a.shape[axis] for a in avals)
    return Aval(shape, a0.dtype)


def _vjp_concat(g, ins, out, params, need):
    axis, off, res = params["axis"], 0, []
    for x in ins:
        starts = [0] * len(g.shape)
        stops = list(g.shape)
        starts[axis], stops[axis] = off, off + x.shape[axis]
        off += x.shape[axis]
        res.append(bind(P.slice, g, starts=starts, stops=stops, steps=[1] * len(g.shape)))
    return res


P.register(Primitive("concatenate", "shape", _infer_concat,
                     lambda *xs, axis: np.concatenate(xs, axis=axis), vjp=_vjp_concat,
                     params={"axis": "int"}, node_name="CatBackward0"))


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
    n = x.shape[axis]
    if idx.size and (idx.min() < -n or idx.max() >= n):
        raise IndexError(f"gather: index out of range for an axis of size {n}")
    return np.take(x, idx, axis=axis)


P.register(Primitive("gather", "index", _infer_gather, _impl_gather,
                     vjp=lambda g, i, o, p, n: [
                         bind(P.scatter_add, i[1], g, axis=p["axis"], shape=i[0].shape), None],
                     saves=(1,), params={"axis": "int"}, arity=2, node_name="IndexBackward0"))


def _infer_scatter_add(name, avals, axis, shape):
    idx, upd = avals
    _check_index(name, idx)
    want = shape[:axis] + idx.shape + shape[axis + 1:]
    if not 0 <= axis < len(shape) or upd.shape != tuple(want):
        raise op_error(name, f"updates {upd} do not fit indices {idx} into {list(shape)} "
                             f"on axis {axis}")
    return Aval(shape, upd.dtype)


def _impl_scatter_add(idx, upd, axis, shape):
    out = np.zeros_like(upd, shape=shape)       # on upd's device (NEP 18)
    where = (slice(None),) * axis + (idx,)
    if hasattr(out, "scatter_add"):     # a CuPy array: it has no ufunc.at, but this method
        out.scatter_add(where, upd)     # (what cupyx.scatter_add calls) is np.add.at's twin
    else:
        np.add.at(out, where, upd)
    return out


P.register(Primitive("scatter_add", "index", _infer_scatter_add, _in_float32(_impl_scatter_add),
                     vjp=lambda g, i, o, p, n: [None, bind(P.gather, g, i[0], axis=p["axis"])],
                     saves=(0,), params={"axis": "int", "shape": "ints"}, arity=2,
                     node_name="ScatterAddBackward0"))


# -- matmul -----------------------------------------------------------------------------------
def _infer_matmul(name, avals):
    a, b = avals
    if a.dtype is not b.dtype or a.dtype is dt.bool_:
        raise op_error(name, f"operand dtypes must match and be numeric: {a}, {b}", TypeError)
    if a.ndim < 2 or a.ndim != b.ndim or a.shape[:-2] != b.shape[:-2] or a.shape[-1] != b.shape[-2]:
        raise op_error(name, f"shapes do not align: {a} @ {b}")
    return Aval(a.shape[:-1] + b.shape[-1:], a.dtype)


P.register(Primitive("matmul", "matmul", _infer_matmul, _in_float32(np.matmul),
                     vjp=lambda g, i, o, p, n: [
                         matmul(g, swap_last(i[1])) if n[0] else None,
                         matmul(swap_last(i[0]), g) if n[1] else None],
                     saves=lambda need: (1,) * need[0] + (0,) * need[1], arity=2,
                     node_name=lambda p, a, r: "MmBackward0" if a[0].ndim == 2 else "BmmBackward0"))


# -- constants --------------------------------------------------------------------------------
P.register(Primitive("constant", "constant",
                     lambda name, avals, value: Aval(value.shape, dt.as_dtype(value.dtype)),
                     lambda value: value, params={"value": "array"}, arity=0))
