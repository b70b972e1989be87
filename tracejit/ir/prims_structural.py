"""Reductions, shape/layout ops, matmul and constants (gather and scatter-add: prims_gather)."""
from __future__ import annotations

import math

import numpy as np

from . import dtypes as dt
from .batching import (batch_axes_param, batch_broadcast, batch_concatenate,
                       batch_prefix, batch_transpose, batch_unbatched, moveaxis)
from .core import Aval
from .index_maps import Read, Select, Zero, reshape_index
from .primitives import (P, Primitive, bind, broadcast, cast, div, eq, matmul, mul, op_error,
                         reduce_sum, reshape, sum_to_shape, swap_last, tangent_or_zeros,
                         tangent_sum, transpose)


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


def _jvp_extreme(t, ins, out, params):
    # the VJP's even split of ties, forward: the mean of the tangents at the extreme
    x, axes = ins[0], params["axes"]
    keep = _keep_shape(x.shape, axes)
    mask = cast(eq(x, broadcast(reshape(out, keep), x.shape)), x.dtype)
    return div(reduce_sum(mul(mask, t[0]), axes), reduce_sum(mask, axes))


def _rows_reduce(j, ins, out, dep, axes):
    # a reduction over trailing axes only keeps the leading j (row) axes
    return min(axes, default=j) >= j


def in_float32(fn):
    """16-bit floats accumulate in float32 and round once, as PyTorch and the kernels do."""
    def impl(*xs, **params):
        d = xs[-1].dtype                # the data: sum's x, matmul's b, scatter_add's updates
        if d not in dt.HALF_NP:
            return fn(*xs, **params)
        return fn(*(x.astype(np.float32) if x.dtype == d else x for x in xs), **params).astype(d)
    # what impl runs when the data is not a 16-bit float: a replayed VJP plan, whose dtypes
    # are fixed when it is recorded, calls it directly (tracer/vjp_plans.py)
    impl.unwrapped = fn
    return impl


def _impl_sum(x, axes):
    """The accumulation rule, the same on every axis and every backend: float32 sums accumulate
    in float64 and round once (16-bit floats reach here as float32, see `in_float32`); float64
    and integer sums accumulate in their own type. (On the host np.add.reduce: np.sum's own
    call, without its Python layer, ~1.5 us of a small eager reduction.)"""
    total = np.add.reduce if type(x) is np.ndarray else np.sum
    if x.dtype == np.float32:
        return total(x, axis=axes, dtype=np.float64).astype(np.float32)
    return total(x, axis=axes, dtype=x.dtype)


P.register(Primitive("sum", "reduce", _infer_reduce, in_float32(_impl_sum),
                     vjp=_vjp_sum, jvp=lambda t, i, o, p: reduce_sum(t[0], p["axes"]),
                     params={"axes": "ints"}, arity=1,
                     rows=_rows_reduce,
                     batch=batch_axes_param("axes")))
P.register(Primitive("max", "reduce", _infer_reduce, lambda x, axes: np.max(x, axis=axes),
                     vjp=_vjp_extreme, jvp=_jvp_extreme, saves=(0,), save_out=True,
                     params={"axes": "ints"},
                     arity=1, rows=_rows_reduce,
                     batch=batch_axes_param("axes")))
P.register(Primitive("min", "reduce", _infer_reduce, lambda x, axes: np.min(x, axis=axes),
                     vjp=_vjp_extreme, jvp=_jvp_extreme, saves=(0,), save_out=True,
                     params={"axes": "ints"},
                     arity=1, rows=_rows_reduce,
                     batch=batch_axes_param("axes")))


# -- shape and layout -------------------------------------------------------------------------
def _infer_reshape(name, avals, shape):
    a = avals[0]
    if any(d < 0 for d in shape) or math.prod(shape) != a.size:
        raise op_error(name, f"cannot reshape {a} to {list(shape)}")
    return Aval(shape, a.dtype)


def _index_reshape(ix, idx, site, shape):
    x = site.in_shapes[0]
    if [d for d in x if d != 1] == [d for d in shape if d != 1]:   # only size-1 axes change
        it = iter(i for i, d in zip(idx, shape) if d != 1)
        return Read(0, ["0" if d == 1 else next(it) for d in x])
    return Read(0, lambda: reshape_index(ix, idx, shape, x), same_offset=True)


def _rows_same(j, ins, out, dep, **params):
    # the leading j axes of operands and output agree (fusion checks that), and so does the
    # offset within the row: reshape, and ops that read nothing at other rows
    return True


# (the array methods, here and in transpose/slice: np.reshape/np.transpose add a Python dispatch
# layer, about 1 us of a small eager op; host and device arrays both have the methods)
P.register(Primitive("reshape", "shape", _infer_reshape, lambda x, shape: x.reshape(shape),
                     vjp=lambda g, i, o, p, n: [reshape(g, i[0].shape)],
                     jvp=lambda t, i, o, p: reshape(t[0], p["shape"]),
                     params={"shape": "ints"}, arity=1,
                     index_map=_index_reshape, rows=_rows_same,
                     batch=batch_prefix(shape=-1)))


def _infer_broadcast(name, avals, shape):
    a = avals[0]
    lead = len(shape) - a.ndim
    if lead < 0 or any(d not in (1, shape[lead + i]) for i, d in enumerate(a.shape)):
        raise op_error(name, f"cannot broadcast {a} to {list(shape)}")
    return Aval(shape, a.dtype)


def _vjp_broadcast(g, ins, out, params, need):
    return [sum_to_shape(g, ins[0].shape)]


def _index_broadcast(ix, idx, site, shape):
    x = site.in_shapes[0]
    lead = len(shape) - len(x)
    return Read(0, ["0" if d == 1 else idx[lead + i] for i, d in enumerate(x)])


def _rows_broadcast(j, ins, out, dep, shape):
    return len(ins[0]) == len(out)      # no new leading axes: the row axes stay the rows


def _impl_broadcast(x, shape):
    """A read-only view, no copy; but a small result on the host (a VJP rule's 1.0, a bias
    row over a batch) is filled instead: the same values, and np.broadcast_to's Python
    overhead would be most of a small eager op."""
    if type(x) is np.ndarray and math.prod(shape) <= 4096:
        if x.ndim == 0:
            return np.full(shape, x)
        # a small operand (a bias row over a batch): a copy costs less than broadcast_to's
        # Python layer, and its values are the same
        out = np.empty(shape, x.dtype)
        np.copyto(out, x)
        return out
    return np.broadcast_to(x, shape)


P.register(Primitive("broadcast", "shape", _infer_broadcast, _impl_broadcast, vjp=_vjp_broadcast,
                     jvp=lambda t, i, o, p: broadcast(t[0], p["shape"]),
                     params={"shape": "ints"}, arity=1,
                     index_map=_index_broadcast, rows=_rows_broadcast,
                     batch=batch_broadcast))


def _infer_transpose(name, avals, perm):
    a = avals[0]
    if sorted(perm) != list(range(a.ndim)):
        raise op_error(name, f"{list(perm)} is not a permutation of the axes of {a}")
    return Aval(tuple(a.shape[p] for p in perm), a.dtype)


def _index_transpose(ix, idx, site, perm):
    inv = [0] * len(perm)
    for k, q in enumerate(perm):
        inv[q] = k
    return Read(0, [idx[inv[j]] for j in range(len(inv))])


def _rows_transpose(j, ins, out, dep, perm):
    return tuple(perm[:j]) == tuple(range(j))


P.register(Primitive("transpose", "shape", _infer_transpose,
                     lambda x, perm: x.transpose(perm),
                     vjp=lambda g, i, o, p, n: [transpose(g, tuple(np.argsort(p["perm"])))],
                     jvp=lambda t, i, o, p: transpose(t[0], p["perm"]),
                     params={"perm": "ints"}, arity=1,
                     index_map=_index_transpose, rows=_rows_transpose,
                     batch=batch_transpose))


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
    return [bind(P.pad, g, lo=tuple(lo), hi=tuple(hi), interior=tuple(it))]


def _index_slice(ix, idx, site, starts, stops, steps):
    return Read(0, [ix.iadd(str(a), ix.imul(i, s)) for i, a, s in zip(idx, starts, steps)])


def _rows_slice(j, ins, out, dep, starts, stops, steps):
    return all(a == 0 for a in starts[:j]) and all(st == 1 for st in steps[:j])


P.register(Primitive("slice", "shape", _infer_slice,
                     lambda x, starts, stops, steps: x[tuple(map(slice, starts, stops, steps))],
                     vjp=_vjp_slice, jvp=lambda t, i, o, p: bind(P.slice, t[0], **p),
                     params={"starts": "ints", "stops": "ints", "steps": "ints"},
                     arity=1, index_map=_index_slice, rows=_rows_slice,
                     batch=batch_prefix(starts=0, stops=-1, steps=1)))


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
    # *_like keeps a device array on its device (NEP 18); on the host np.zeros is the same
    # buffer without zeros_like's Python layer (a slice's gradient is a pad, per slice)
    out = np.zeros(shape, x.dtype) if type(x) is np.ndarray else np.zeros_like(x, shape=shape)
    if not any(interior):           # (a slice's gradient: no interior padding)
        out[tuple(map(slice, lo, [l + n for l, n in zip(lo, x.shape)]))] = x
    else:
        out[tuple(slice(l, l + (n - 1) * (i + 1) + 1, i + 1)
                  for n, l, i in zip(x.shape, lo, interior))] = x
    return out


def _vjp_pad(g, ins, out, params, need):
    n = ins[0].shape
    starts = params["lo"]
    steps = tuple(i + 1 for i in params["interior"])
    stops = tuple(l + (d - 1) * s + 1 if d else l for d, l, s in zip(n, starts, steps))
    return [bind(P.slice, g, starts=starts, stops=stops, steps=steps)]


def _index_pad(ix, idx, site, lo, hi, interior):
    x = site.in_shapes[0]
    if 0 in x:
        return Zero()
    ok, src = None, []
    for i, n, l, it in zip(idx, x, lo, interior):
        j = ix.iadd(i, str(-l))
        step = it + 1
        conds = [ix.icmp("ge", j, "0")]
        q = j
        if step > 1:            # interior padding: only every step-th position is an element
            q = ix.idiv(j, step, signed=True)
            conds.append(ix.icmp("eq", ix.irem(j, step, signed=True), "0"))
        conds.append(ix.icmp("lt", q, str(n)))
        for c in conds:
            ok = c if ok is None else ix.iand(ok, c)
        src.append(ix.clamp(q, n))          # in range even where the element is padding
    return Read(0, src) if ok is None else Select(ok, Read(0, src), Zero())


def _rows_pad(j, ins, out, dep, lo, hi, interior):
    return not any((*lo[:j], *hi[:j], *interior[:j]))


P.register(Primitive("pad", "shape", _infer_pad, _impl_pad, vjp=_vjp_pad,
                     jvp=lambda t, i, o, p: bind(P.pad, t[0], **p),
                     params={"lo": "ints", "hi": "ints", "interior": "ints"}, arity=1,
                     index_map=_index_pad, rows=_rows_pad,
                     batch=batch_prefix(lo=0, hi=0, interior=0)))


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


def _jvp_concat(t, ins, out, params):
    if all(x is None for x in t):
        return None
    return bind(P.concatenate, *[tangent_or_zeros(x, v) for x, v in zip(t, ins)], **params)


def _index_concat(ix, idx, site, axis):
    offs, o = [], 0
    for x in site.in_shapes:
        offs.append(o)
        o += x[axis]
    result = None
    for k in reversed(range(len(site.in_shapes))):
        n, off = site.in_shapes[k][axis], offs[k]
        if n == 0:
            continue
        j = ix.clamp(ix.iadd(idx[axis], str(-off)), n)
        read = Read(k, idx[:axis] + [j] + idx[axis + 1:])
        result = read if result is None else \
            Select(ix.icmp("lt", idx[axis], str(off + n)), read, result)
    # every operand empty on the axis: so is the result, and the loop never runs
    return Zero() if result is None else result


def _rows_concat(j, ins, out, dep, axis):
    return axis >= j


P.register(Primitive("concatenate", "shape", _infer_concat,
                     lambda *xs, axis: np.concatenate(xs, axis=axis), vjp=_vjp_concat,
                     jvp=_jvp_concat,
                     params={"axis": "int"},
                     index_map=_index_concat, rows=_rows_concat,
                     batch=batch_concatenate))


# -- matmul -----------------------------------------------------------------------------------
def _infer_matmul(name, avals):
    a, b = avals
    if a.dtype is not b.dtype or a.dtype is dt.bool_:
        raise op_error(name, f"operand dtypes must match and be numeric: {a}, {b}", TypeError)
    if a.ndim < 2 or a.ndim != b.ndim or a.shape[:-2] != b.shape[:-2] or a.shape[-1] != b.shape[-2]:
        raise op_error(name, f"shapes do not align: {a} @ {b}")
    return Aval(a.shape[:-1] + b.shape[-1:], a.dtype)


def _batch_matmul(prim, ax, args, batched, params):
    """One batched side folds the batch into its rows (a) or columns (b): one GEMM."""
    a, b = args
    size = ax.size
    if batched[0] and batched[1]:
        if a.shape[-1] == 1 and a.dtype.is_float:
            # an outer product (a per-example weight gradient): elementwise, so it fuses
            # with its operands instead of running one GEMM call per example
            shape = tuple(a.shape[:-1]) + (b.shape[-1],)
            return mul(broadcast(a, shape), broadcast(b, shape)), True
        return matmul(a, b), True
    if batched[0]:                                     # a: (B, ..., m, k); b: (..., k, n)
        r = len(a.shape)
        at = moveaxis(a, 0, r - 3)                     # (..., B, m, k)
        lead, m, k = tuple(at.shape[:-3]), at.shape[-2], at.shape[-1]
        out = matmul(reshape(at, lead + (size * m, k)), b)
        out = reshape(out, lead + (size, m, b.shape[-1]))
        return moveaxis(out, r - 3, 0), True
    r = len(b.shape)                                   # b: (B, ..., k, n); a: (..., m, k)
    bt = moveaxis(b, 0, r - 2)                         # (..., k, B, n)
    lead, k, n = tuple(bt.shape[:-3]), bt.shape[-3], bt.shape[-1]
    out = matmul(a, reshape(bt, lead + (k, size * n)))
    out = reshape(out, lead + (a.shape[-2], size, n))
    return moveaxis(out, r - 2, 0), True


P.register(Primitive("matmul", "matmul", _infer_matmul, in_float32(np.matmul),
                     vjp=lambda g, i, o, p, n: [
                         matmul(g, swap_last(i[1])) if n[0] else None,
                         matmul(swap_last(i[0]), g) if n[1] else None],
                     jvp=lambda t, i, o, p: tangent_sum(
                         None if t[0] is None else matmul(t[0], i[1]),
                         None if t[1] is None else matmul(i[0], t[1])),
                     saves=lambda need: (1,) * need[0] + (0,) * need[1], arity=2,
                     batch=_batch_matmul))


# -- constants --------------------------------------------------------------------------------
P.register(Primitive("constant", "constant",
                     lambda name, avals, value: Aval(value.shape, dt.as_dtype(value.dtype)),
                     lambda value: value, jvp=lambda t, i, o, p: None,
                     params={"value": "array"}, arity=0,
                     batch=batch_unbatched))
