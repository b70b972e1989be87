"""argmax and argmin: the index (int64) of the extreme element along one axis, the first one
on ties, where a NaN counts as the extreme (NumPy's and PyTorch's rule); and iota, the
position of each element along an axis, which they and other index arithmetic are built from
(so no O(n) constant array is baked into the graph).

Eager mode and the interpreter run NumPy's argmax/argmin. The code generators have no kernel
of their own for them: before fusion, `expand_arg_reductions` rewrites each into reductions
they already generate (the extreme value per row, then the smallest position holding it),
which fuse into one row-wise kernel on both backends. Integer results: no gradient.
"""
from __future__ import annotations

import numpy as np

from . import dtypes as dt
from .batching import batch_axes_param
from .core import Aval, Graph, expand
from .index_maps import Position
from .primitives import (P, Primitive, bind, broadcast, const_like, eq, ne, op_error, reshape,
                         where)

ARG_REDUCTIONS = ("argmax", "argmin")


# -- iota -------------------------------------------------------------------------------------
def _infer_iota(name: str, avals: list[Aval], axis: int) -> Aval:
    a = avals[0]
    if not 0 <= axis < a.ndim:
        raise op_error(name, f"invalid axis {axis} for {a}")
    return Aval(a.shape, dt.i64)


def _impl_iota(like, axis):
    n = like.shape[axis]
    shape = tuple(n if i == axis else 1 for i in range(like.ndim))
    # like=: the positions live on like's device (NEP 35); its values are never read
    return np.broadcast_to(np.arange(n, dtype=np.int64, like=like).reshape(shape), like.shape)


# `iota %z {axis=k}`: the index along axis k of each element of z's shape. It takes an operand
# only for its shape (and its world: eager device, graph); code generators emit the loop index.
def _index_iota(ix, idx, site, axis):
    return Position(idx[axis])          # the element's own position; the operand is not read


P.register(Primitive("iota", "shape", _infer_iota, _impl_iota, vjp=lambda g, i, o, p, n: [None],
                     jvp=lambda t, i, o, p: None,
                     params={"axis": "int"}, arity=1,
                     index_map=_index_iota, rows=lambda j, ins, out, dep, axis: True,
                     batch=batch_axes_param("axis")))


def iota(like, axis: int):
    """int64 positions along `axis`, in the shape of `like` (whose values are not read)."""
    return bind(P.iota, like, axis=axis)


def _infer(name: str, avals: list[Aval], axis: int) -> Aval:
    a = avals[0]
    if not 0 <= axis < a.ndim:
        raise op_error(name, f"invalid axis {axis} for {a}")
    if a.dtype is dt.bool_:
        raise op_error(name, f"does not take bool operands, got {a}", TypeError)
    if a.shape[axis] == 0:
        raise op_error(name, f"cannot reduce over the empty axis {axis} of {a}", IndexError)
    return Aval(a.shape[:axis] + a.shape[axis + 1:], dt.i64)


def _impl(fn):
    def impl(x, axis):
        if x.dtype in dt.HALF_NP:      # compare in float32: every 16-bit value is exact there
            x = x.astype(np.float32)
        return fn(x, axis=axis).astype(np.int64)
    return impl


for _name, _fn in (("argmax", np.argmax), ("argmin", np.argmin)):
    P.register(Primitive(_name, "reduce", _infer, _impl(_fn), vjp=lambda g, i, o, p, n: [None],
                         jvp=lambda t, i, o, p: None,
                         params={"axis": "int"}, arity=1, batch=batch_axes_param("axis")))
del _name, _fn


def _expand(name: str, x, axis: int):
    """argmax/argmin of x along axis in terms of max/min, eq, ne, where and constants."""
    keep = tuple(1 if i == axis else d for i, d in enumerate(x.shape))
    extreme = bind(P.max if name == "argmax" else P.min, x, axes=(axis,))
    hit = eq(x, broadcast(reshape(extreme, keep), x.shape))
    if x.dtype.is_float:            # the extreme is NaN when a NaN is there: NaN != NaN marks it
        hit = where(hit, hit, ne(x, x))
    # iota of a splat (not of x) keeps row-wise fusion free to group this with x's producer
    zero = broadcast(const_like(x, np.array(0, np.int64)), x.shape)
    past_end = broadcast(const_like(x, np.array(x.shape[axis], np.int64)), x.shape)
    pos = where(hit, iota(zero, axis), past_end)
    return bind(P.min, pos, axes=(axis,))


def expand_arg_reductions(g: Graph) -> Graph:
    """A graph without argmax/argmin (the backends run this before fusion); `g` itself when
    it has none, so the IR dumps keep showing them."""
    rules = {name: (lambda args, params, name=name: _expand(name, args[0], params["axis"]))
             for name in ARG_REDUCTIONS}
    return expand(g, rules)
