"""Scans and the reductions built on them, in PyTorch's spelling: `cumsum`, `cumprod`, `prod`,
`any`, `all`.

cumsum/cumprod are primitives (ir/prims_scan.py). `prod` is the last element of a cumprod
along the (flattened) reduced axes, so its gradient is cumprod's, which handles zeros exactly
as PyTorch's does (a product with one zero still has a gradient for that element). `any`/`all`
count the nonzero (zero) elements: NaN counts as true, an empty reduction gives False/True.
Integer and bool inputs give int64 results, as PyTorch; `dtype=` casts the input first.
"""
from __future__ import annotations

import math

from ..ir import dtypes as dt
from ..ir.primitives import P, bind
from . import ops
from .autocast import FP32, autocast_op
from .composites import composite
from .tensor_base import TensorBase as Tensor


def _int_dim(op: str, x: Tensor, dim) -> int:
    if isinstance(dim, (tuple, list)) or dim is None:
        raise ops._err(op, f"dim must be an int, got {dim!r}", TypeError)
    axes = ops._axes(x, int(dim), None, op)        # checks the range (0-d takes 0 and -1)
    return axes[0] if axes else 0


def _scan_input(x, dtype) -> Tensor:
    x = ops.as_tensor(x)
    if dtype is not None:
        return ops.cast(x, dtype)
    return ops.cast(x, dt.i64) if not x.dtype.is_float else x


def _bool_result(fn, x, dtype, *args) -> Tensor:
    """dtype=bool: computed in int64, then cast (a product of bools is their `all`)."""
    if dtype is not None and dt.as_dtype(dtype) is dt.bool_:
        return ops.cast(fn(_scan_input(x, dt.i64), *args), dt.bool_)
    return fn(_scan_input(x, dtype), *args)


def _scan_op(op: str):
    def run(x: Tensor, dim) -> Tensor:
        d = _int_dim(op, x, dim)
        if x.ndim == 0:
            return ops.reshape(bind(P.get(op), ops.reshape(x, (1,)), axis=0, reverse=False), ())
        return bind(P.get(op), x, axis=d, reverse=False)
    return run


def _scan(op: str, x, dim, dtype) -> Tensor:
    return _bool_result(_scan_op(op), x, dtype, dim)


@autocast_op(FP32)
def cumsum(x, dim, *, dtype=None) -> Tensor:
    """Running sums along `dim` (float32 accumulates in float64, as `sum`)."""
    return _scan("cumsum", x, dim, dtype)


@autocast_op(FP32)
def cumprod(x, dim, *, dtype=None) -> Tensor:
    """Running products along `dim`; the gradient is exact where x has zeros."""
    return _scan("cumprod", x, dim, dtype)


def _prod_name(x, dim=None, *a, **k):
    return "ProdBackward0" if dim is None else "ProdBackward1"


@composite(_prod_name)
def _prod(x: Tensor, dim, keepdim: bool) -> Tensor:
    if dim is None:
        flat = ops.reshape(x, (x.numel(),))
        if flat.shape[0] == 0:
            r = ops.add(ops.sum(flat), 1)
        else:
            r = ops.reshape(bind(P.cumprod, flat, axis=0, reverse=False)[-1:], ())
        return ops.reshape(r, (1,) * x.ndim) if keepdim else r
    d = _int_dim("prod", x, dim)
    if x.ndim == 0:
        return x
    moved = ops.permute(x, [a for a in range(x.ndim) if a != d] + [d])
    n = x.shape[d]
    kept = moved.shape[:-1]
    if n == 0:
        r = ops.add(ops.sum(moved, -1), 1)
    else:
        rows = ops.reshape(moved, (math.prod(kept), n))
        last = bind(P.cumprod, rows, axis=1, reverse=False)[:, n - 1]
        r = ops.reshape(last, kept)
    if keepdim:
        r = ops.reshape(r, x.shape[:d] + (1,) + x.shape[d + 1:])
    return r


@autocast_op(FP32)
def prod(x, dim=None, keepdim: bool = False, *, dtype=None) -> Tensor:
    """The product over `dim` (every element when None), as torch.prod; zeros handled in the
    gradient as PyTorch (through cumprod's rule)."""
    return _bool_result(_prod, x, dtype, dim, bool(keepdim))


def _count(x, dim, keepdim, zero: bool) -> Tensor:
    x = ops.as_tensor(x)
    if x.dtype is dt.bool_:
        hit = ops.logical_not(x) if zero else x
    else:
        hit = ops.eq(x, 0) if zero else ops.ne(x, 0)
    return ops.sum(ops.cast(hit, dt.i64), dim, bool(keepdim))


def any(x, dim=None, keepdim: bool = False) -> Tensor:      # noqa: A001
    """Whether any element over `dim` is nonzero (NaN is); bool (uint8 for uint8 x, as
    torch)."""
    return _as_uint8_of(x, ops.gt(_count(x, dim, keepdim, zero=False), 0))


def all(x, dim=None, keepdim: bool = False) -> Tensor:      # noqa: A001
    """Whether every element over `dim` is nonzero; bool (True for an empty reduction;
    uint8 for uint8 x, as torch)."""
    return _as_uint8_of(x, ops.eq(_count(x, dim, keepdim, zero=True), 0))


def _as_uint8_of(x, r: Tensor) -> Tensor:
    return ops.cast(r, dt.u8) if isinstance(x, Tensor) and x.dtype is dt.u8 else r
