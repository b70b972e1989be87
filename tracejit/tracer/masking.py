"""Masks and the ops built on them, in PyTorch's spelling: `masked_fill` (and in place),
`tril`/`triu` (and in place), `one_hot` and `eye`.

Triangle and one-hot masks are comparisons of iota positions (ir/prims_select.py), never an
O(n^2) constant baked into a trace; the selection is a `where`, whose rule gives the gradient
(zero where the mask replaced the value, and for masked_fill's 0-d tensor value the sum of
the gradient over the filled places).
"""
from __future__ import annotations

import numbers

import numpy as np

from ..ir import dtypes as dt
from . import checks, creation, ops
from .composites import composite
from .inplace import inplace
from .selection import positions
from .tensor_base import TensorBase as Tensor
from .operands import check_store


# -- masked_fill ----------------------------------------------------------------------------------
def _fill_value(x: Tensor, value) -> Tensor:
    """masked_fill's value: a number or a 0-d tensor, taken in x's dtype (as PyTorch)."""
    if isinstance(value, Tensor):
        if value.ndim != 0:
            raise ops._err("masked_fill", f"only supports a 0-dimensional value tensor, got "
                           f"{ops._fmt(value)}", RuntimeError)
        return ops.cast(value, x.dtype)
    if not isinstance(value, (numbers.Number, np.bool_)):
        raise ops._err("masked_fill", f"value must be a number or a 0-d tensor, got "
                       f"{type(value).__name__}", TypeError)
    if x.dtype.is_int and isinstance(value, float) and not np.isfinite(value):
        raise ops._err("masked_fill", f"value {value} cannot be converted to {x.dtype.name} "
                       f"without overflow", RuntimeError)
    check_store("masked_fill", value, x.dtype)
    return ops.as_tensor(value, x.dtype, like=x)


@composite("MaskedFillBackward0")
def _masked_fill(x: Tensor, mask: Tensor, value: Tensor) -> Tensor:
    return ops.where(mask, value, x)


def masked_fill(x, mask, value) -> Tensor:
    """x with `value` where the bool `mask` (broadcast against x) is True."""
    x = ops.as_tensor(x)
    if not isinstance(mask, Tensor):
        mask = ops.as_tensor(mask, like=x if x._traced else None)
    if mask.dtype is not dt.bool_:
        raise ops._err("masked_fill", f"only supports boolean masks, got mask "
                       f"{ops._fmt(mask)}", RuntimeError)
    try:
        np.broadcast_shapes(x.shape, mask.shape)
    except ValueError:
        raise ops._err("masked_fill", f"mask {ops._fmt(mask)} does not broadcast with "
                       f"{ops._fmt(x)}", RuntimeError) from None
    return _masked_fill(x, mask, _fill_value(x, value))


def masked_fill_(x: Tensor, mask, value) -> Tensor:
    """In place: the mask must broadcast to x's own shape."""
    return inplace(x, lambda old: masked_fill(old, mask, value), "masked_fill_")


# -- tril, triu -----------------------------------------------------------------------------------
def _triangle(op: str, x, diagonal: int) -> Tensor:
    x = ops.as_tensor(x)
    if x.ndim < 2:
        raise ops._err(op, f"input tensor must have at least 2 dimensions, got {ops._fmt(x)}",
                       RuntimeError)
    if isinstance(diagonal, bool) or not isinstance(diagonal, numbers.Integral):
        raise ops._err(op, f"diagonal must be an int, got {diagonal!r}", TypeError)
    return _tril(x, int(diagonal)) if op == "tril" else _triu(x, int(diagonal))


def _keep(x: Tensor, diagonal: int, lower: bool) -> Tensor:
    """The bool mask of the kept triangle over x's last two dims (broadcasts over batches)."""
    rc = x.shape[-2:]
    offset = ops.sub(positions(x, rc, 1), positions(x, rc, 0))      # col - row
    return ops.le(offset, diagonal) if lower else ops.ge(offset, diagonal)


def _zero(x: Tensor):
    return False if x.dtype is dt.bool_ else 0


@composite("TrilBackward0")
def _tril(x: Tensor, diagonal: int) -> Tensor:
    return ops.where(_keep(x, diagonal, True), x, ops.as_tensor(_zero(x), x.dtype, like=x))


@composite("TriuBackward0")
def _triu(x: Tensor, diagonal: int) -> Tensor:
    return ops.where(_keep(x, diagonal, False), x, ops.as_tensor(_zero(x), x.dtype, like=x))


def tril(x, diagonal: int = 0) -> Tensor:
    """The lower triangle (col - row <= diagonal) of the last two dims; zeros elsewhere."""
    return _triangle("tril", x, diagonal)


def triu(x, diagonal: int = 0) -> Tensor:
    """The upper triangle (col - row >= diagonal) of the last two dims; zeros elsewhere."""
    return _triangle("triu", x, diagonal)


def tril_(x: Tensor, diagonal: int = 0) -> Tensor:
    return inplace(x, lambda old: tril(old, diagonal), "tril_")


def triu_(x: Tensor, diagonal: int = 0) -> Tensor:
    return inplace(x, lambda old: triu(old, diagonal), "triu_")


# -- nonzero, one-argument where -------------------------------------------------------------------
def nonzero(x, *, as_tuple: bool = False):
    """Indices of the nonzero elements: an int64 [count, ndim] tensor, or (as_tuple=True) one
    1-d tensor per dim (a 0-d input counts as 1-d). The count depends on the data, so this
    is eager only: inside a compiled function it is a clear error."""
    x = ops.as_tensor(x)
    arr = x._host("nonzero / one-argument tj.where(cond) (the result's shape depends on the "
                  "data; use tj.where(cond, a, b) for a fixed shape)")
    idx = np.nonzero(np.atleast_1d(arr))
    if as_tuple:
        return tuple(creation._new(np.asarray(i, np.int64), x.device, False) for i in idx)
    stacked = np.stack(idx, axis=1) if x.ndim else np.zeros((len(idx[0]), 0), np.int64)
    return creation._new(stacked.astype(np.int64), x.device, False)


_MISSING = object()


def where(condition, input=_MISSING, other=_MISSING):     # noqa: A002
    """torch.where: `where(cond, a, b)` picks elementwise; `where(cond)` is
    `nonzero(cond, as_tuple=True)` (eager only: its shape depends on the data)."""
    if input is _MISSING and other is _MISSING:
        return nonzero(condition, as_tuple=True)
    if input is _MISSING or other is _MISSING:
        raise ops._err("where", "takes a condition and both branches, or the condition alone",
                       TypeError)
    return ops.where(condition, input, other)


# -- one_hot, eye -------------------------------------------------------------------------------
def one_hot(tensor, num_classes: int = -1) -> Tensor:
    """int64 one-hot vectors along a new last dim. num_classes=-1 means max(tensor) + 1, a
    value read from the data (so a compiled function must pass num_classes). Values outside
    [0, num_classes) are an error, eagerly now and in a compiled function when it runs."""
    t = ops.as_tensor(tensor)
    if t.dtype is not dt.i64:
        raise ops._err("one_hot", f"one_hot is only applicable to index tensor of type int64, "
                       f"got {ops._fmt(t)}", TypeError)
    if num_classes == -1:
        if t.numel() == 0:
            raise ops._err("one_hot", "Can not infer total number of classes from empty tensor.",
                           RuntimeError)
        num_classes = int(t._host("one_hot with num_classes=-1").max()) + 1
    if isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral) \
            or num_classes < 0:
        raise ops._err("one_hot", f"num_classes must be a non-negative int or -1, got "
                       f"{num_classes!r}", RuntimeError)
    if not checks.check_index(t, 0, int(num_classes), f"one_hot: class values must be in "
                              f"[0, {num_classes})", cls=RuntimeError) and t.numel():
        vals = t._host("one_hot")
        if vals.min() < 0 or vals.max() >= num_classes:
            raise ops._err("one_hot", f"Class values must be in [0, {num_classes}), got "
                           f"[{int(vals.min())}, {int(vals.max())}]", RuntimeError)
    shape = t.shape + (int(num_classes),)
    classes = positions(t, shape, len(shape) - 1)
    return ops.cast(ops.eq(ops.broadcast_to(ops.unsqueeze(t, -1), shape), classes), dt.i64)


def eye(n: int, m: int | None = None, *, dtype=None, device=None,
        requires_grad: bool = False) -> Tensor:
    """The n x m identity matrix (ones on the main diagonal), float32 by default."""
    m = n if m is None else m
    for name, v in (("n", n), ("m", m)):
        if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 0:
            raise ops._err("eye", f"{name} must be a non-negative int, got {v!r}", RuntimeError)
    d = dt.as_dtype(dtype) if dtype is not None else dt.f32
    return creation._new(np.eye(int(n), int(m), dtype=d.np), device, requires_grad)


def _tri_indices(op: str, row: int, col: int, offset: int, dtype, device) -> Tensor:
    if row < 0 or col < 0:
        raise ops._err(op, f"row and col must be non-negative, got {row}, {col}", RuntimeError)
    fn = np.tril_indices if op == "tril_indices" else np.triu_indices
    rc = np.stack(fn(row, offset, col)).astype((dt.as_dtype(dtype) if dtype else dt.i64).np)
    return creation._new(rc.reshape(2, -1), device, False)


def tril_indices(row: int, col: int, offset: int = 0, *, dtype=None, device=None,
                 layout=None) -> Tensor:
    """The [2, N] row/column coordinates of the lower triangle, in row-major order."""
    return _tri_indices("tril_indices", row, col, offset, dtype, device)


def triu_indices(row: int, col: int, offset: int = 0, *, dtype=None, device=None,
                 layout=None) -> Tensor:
    return _tri_indices("triu_indices", row, col, offset, dtype, device)
