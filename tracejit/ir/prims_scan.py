"""Scans along one axis: cumsum and cumprod (also reversed: from the end of the axis).

They follow the accumulation rule of `sum`: float32 accumulates in float64 and rounds each
prefix once, 16-bit floats accumulate in float32, float64 and integers in their own type.

Lowering: both are *extern* primitives (kind "extern"): the code generators do not generate
them; the CPU backend calls the NumPy implementation between native segments (as it calls BLAS
for matmul) and the CUDA backend calls CuPy's (the implementation dispatches on the array
type), so every backend computes the same function. Their operands are materialized first.

Gradients: cumsum's is the cumsum of the cotangent in the other direction. cumprod's is
PyTorch's formula, which stays exact where the input has zeros: before the first zero of a row
it is rev_cumsum(g * out) / x; at the first zero it is rev_cumsum(g * cumprod(x with that zero
replaced by 1)); after it, 0. It is written with these same primitives, so it differentiates
again: exactly where x has no zeros; at an exact zero the masks make the later positions'
gradient a constant 0, so the second derivative misses the terms through that zero (PyTorch's
double backward has them).
"""
from __future__ import annotations

import numpy as np

from . import dtypes as dt
from .core import Aval
from .primitives import P, Primitive, bind, cast, div, eq, mul, op_error, where


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


def cumsum(x, axis: int, reverse: bool = False):
    return bind(P.cumsum, x, axis=axis, reverse=reverse)


def cumprod(x, axis: int, reverse: bool = False):
    return bind(P.cumprod, x, axis=axis, reverse=reverse)


def _vjp_cumsum(g, ins, out, params, need):
    return [cumsum(g, params["axis"], not params["reverse"])]


def _vjp_cumprod(g, ins, out, params, need):
    x = ins[0]
    axis, rev = params["axis"], params["reverse"]
    zero = eq(x, 0.0)
    seen = cumsum(cast(zero, dt.i64), axis, rev)         # zeros up to and including here
    before = eq(seen, 0)                                 # strictly before the first zero
    first = where(zero, eq(seen, 1), zero)               # the first zero itself
    safe = where(before, x, 1.0)
    g_before = div(cumsum(mul(g, out), axis, not rev), safe)
    skip_zero = cumprod(where(first, 1.0, x), axis, rev)
    g_first = cumsum(mul(g, skip_zero), axis, not rev)
    return [where(before, g_before, where(first, g_first, 0.0))]


_PARAMS = {"axis": "int", "reverse": "bool"}
P.register(Primitive("cumsum", "extern", _infer, _scan(np.cumsum), vjp=_vjp_cumsum,
                     params=_PARAMS, arity=1))
P.register(Primitive("cumprod", "extern", _infer, _scan(np.cumprod), vjp=_vjp_cumprod,
                     saves=(0,), save_out=True, params=_PARAMS, arity=1))

__all__ = ["cumsum", "cumprod"]
