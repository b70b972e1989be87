"""Scans along one axis: cumsum and cumprod (also reversed: from the end of the axis).

They follow the accumulation rule of `sum`: float32 accumulates in float64 and rounds each
prefix once, 16-bit floats accumulate in float32, float64 and integers in their own type.

Lowering: kind "scan", a kernel of its own (codegen: `scan`): per row along the axis, a
sequential loop that carries the accumulator and stores every prefix, rows in parallel (LLVM:
rows split across threads' ranges; CUDA: a thread per row). The producer expression of the
input is evaluated inline, as in a reduction. The sequential order is NumPy's, so generated
code, eager mode and the interpreter agree bit for bit.

Gradients: cumsum's is the cumsum of the cotangent in the other direction. cumprod's is
PyTorch's formula, which stays exact where the input has zeros: before the first zero of a row
it is rev_cumsum(g * out) / x; at the first zero it is rev_cumsum(g * cumprod(x with that zero
replaced by 1)); after it, 0, written as x_z times the same rule applied to x with that zero
replaced by 1, so that its derivative with respect to x_z is right. It is written with these
same primitives, so it differentiates again, and the second derivative is exact also where x
has zeros (as PyTorch's double backward).
"""
from __future__ import annotations

import numpy as np

from . import dtypes as dt
from .batching import batch_axes_param
from .core import Aval
from .primitives import (P, Primitive, add, bind, broadcast, cast, div, eq, mul, op_error,
                         reduce_sum, reshape, where)


def _infer(name: str, avals: list[Aval], axis: int, reverse: bool) -> Aval:
    a = avals[0]
    if not 0 <= axis < a.ndim:
        raise op_error(name, f"invalid axis {axis} for {a}", IndexError)
    if a.dtype is dt.bool_:
        raise op_error(name, f"does not take bool operands, got {a}", TypeError)
    return a


def _scan(fn):
    def impl(x, axis, reverse):
        d = x.dtype
        acc = np.float32 if d in dt.HALF_NP else np.float64 if d == np.float32 else d
        if reverse:
            x = np.flip(x, axis)
        out = fn(x, axis=axis, dtype=acc)
        if reverse:
            out = np.flip(out, axis)
        return out.astype(d, order="C")      # (np.ascontiguousarray would not dispatch)
    return impl


def scan_acc_dtype(d: dt.DType) -> dt.DType:
    """What a scan of dtype d accumulates in (the rule of `sum`)."""
    if d is dt.f32:
        return dt.f64
    return dt.f32 if d in dt.HALF else d


def cumsum(x, axis: int, reverse: bool = False):
    return bind(P.cumsum, x, axis=axis, reverse=reverse)


def cumprod(x, axis: int, reverse: bool = False):
    return bind(P.cumprod, x, axis=axis, reverse=reverse)


def _vjp_cumsum(g, ins, out, params, need):
    return [cumsum(g, params["axis"], not params["reverse"])]


def _masks(x, axis: int, rev: bool):
    """(strictly before the first zero of the row, the first zero itself), as bool arrays."""
    zero = eq(x, 0.0)
    seen = cumsum(cast(zero, dt.i64), axis, rev)         # zeros up to and including here
    return eq(seen, 0), where(zero, eq(seen, 1), zero)


def _up_to_first_zero(g, x, out, axis: int, rev: bool):
    """cumprod's gradient before and at each row's first zero (0 after it), x with that zero
    replaced by 1, and the cumprod of that."""
    before, first = _masks(x, axis, rev)
    g_before = div(cumsum(mul(g, out), axis, not rev), where(before, x, 1.0))
    x1 = where(first, 1.0, x)
    out1 = cumprod(x1, axis, rev)
    g_first = cumsum(mul(g, out1), axis, not rev)
    return where(before, g_before, where(first, g_first, 0.0)), before, first, x1, out1


def _vjp_cumprod(g, ins, out, params, need):
    x = ins[0]
    axis, rev = params["axis"], params["reverse"]
    head, before, first, x1, out1 = _up_to_first_zero(g, x, out, axis, rev)
    # after the first zero x_z, the gradient is x_z times cumprod's gradient at x1 (x_z
    # replaced by 1): 0, but with the right derivative with respect to x_z, so that the
    # second derivative is exact too
    tail = _up_to_first_zero(g, x1, out1, axis, rev)[0]
    keep = tuple(1 if a == axis else d for a, d in enumerate(x.shape))
    x_z = broadcast(reshape(reduce_sum(where(first, x, 0.0), (axis,)), keep), x.shape)
    return [where(before, head, where(first, head, mul(x_z, tail)))]


def _jvp_first_zero(x, t, out, axis: int, rev: bool):
    """cumprod's tangent, exact to first order where rows have zeros: before the first zero
    out * cumsum(t / x); from it on, only the term of the zero survives, t_z * cumprod(x1)
    (x1: x with that zero replaced by 1). Also returns the masks, x1 and cumprod(x1)."""
    before, first = _masks(x, axis, rev)
    head = mul(out, cumsum(div(t, where(before, x, 1.0)), axis, rev))
    x1 = where(first, 1.0, x)
    out1 = cumprod(x1, axis, rev)
    keep = tuple(1 if a == axis else d for a, d in enumerate(x.shape))
    t_z = broadcast(reshape(reduce_sum(where(first, t, 0.0), (axis,)), keep), x.shape)
    return where(before, head, mul(t_z, out1)), before, first, x1, out1, keep


def _jvp_cumprod(t, ins, out, params):
    x, axis, rev = ins[0], params["axis"], params["reverse"]
    res, before, first, x1, out1, keep = _jvp_first_zero(x, t[0], out, axis, rev)
    # the other terms after the first zero x_z are x_z times the tangent at x1 (without t_z's
    # term): 0 here, but with the right derivative with respect to x_z (second order exact)
    rest = _jvp_first_zero(x1, where(first, 0.0, t[0]), out1, axis, rev)[0]
    x_z = broadcast(reshape(reduce_sum(where(first, x, 0.0), (axis,)), keep), x.shape)
    return where(before, res, add(res, mul(x_z, rest)))


_PARAMS = {"axis": "int", "reverse": "bool"}
P.register(Primitive("cumsum", "scan", _infer, _scan(np.cumsum), vjp=_vjp_cumsum,
                     jvp=lambda t, i, o, p: cumsum(t[0], p["axis"], p["reverse"]),
                     params=_PARAMS, arity=1,
                     batch=batch_axes_param("axis")))
P.register(Primitive("cumprod", "scan", _infer, _scan(np.cumprod), vjp=_vjp_cumprod,
                     jvp=_jvp_cumprod,
                     saves=(0,), save_out=True, params=_PARAMS, arity=1,
                     batch=batch_axes_param("axis")))

__all__ = ["cumsum", "cumprod", "scan_acc_dtype"]
