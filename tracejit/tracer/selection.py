"""Reductions that select an element: `max`/`min` with a dimension (values and indices, as
PyTorch), `argmax`/`argmin` and `amax`/`amin`.

Indices come from the argmax/argmin primitives (ir/prims_select.py): the first index on
ties, as in PyTorch, and a NaN counts as the extreme (PyTorch's and NumPy's argmax and argmin
pick the first NaN). The values of `max(dim)` are read at those indices, so their gradient
goes to the selected element only (PyTorch's MaxBackward0); `amax`, `amin` and the full
`max()` split it evenly between ties (PyTorch's AmaxBackward0 and MaxBackward1).
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..ir import dtypes as dt
from ..ir.primitives import P, bind
from . import checks, ops
from .composites import composite
from .node_names import rename
from .tensor_base import TensorBase as Tensor


class ValuesIndices(NamedTuple):
    """What `max(x, dim)` and `min(x, dim)` return (PyTorch's torch.return_types.max)."""
    values: Tensor
    indices: Tensor


def amax(x, dim=None, keepdim: bool = False, *, axis=None, keepdims=None) -> Tensor:
    """The largest values over `dim` (all axes when None or ()); ties share the gradient."""
    return _amaxmin("max", x, dim, keepdim, axis, keepdims)


def amin(x, dim=None, keepdim: bool = False, *, axis=None, keepdims=None) -> Tensor:
    return _amaxmin("min", x, dim, keepdim, axis, keepdims)


def _amaxmin(op, x, dim, keepdim, axis, keepdims):
    axis = dim if axis is None else axis
    if isinstance(axis, (tuple, list)) and not axis:      # PyTorch: dim=() means every axis
        axis = None
    kd = keepdim if keepdims is None else keepdims
    return ops.amax(x, axis, kd) if op == "max" else ops.amin(x, axis, kd)


def positions(like: Tensor, shape: tuple[int, ...], axis: int) -> Tensor:
    """int64 positions along `axis` of an array of `shape`, in like's world (eager device or
    trace): an iota primitive, not an O(n) constant."""
    zero = ops.broadcast_to(ops.as_tensor(0, dt.i64, like=like), shape)
    return bind(P.iota, zero, axis=axis)


def _dim(op: str, x: Tensor, dim) -> int:
    if isinstance(dim, (tuple, list)) or not isinstance(dim, (int, np.integer)):
        raise ops._err(op, f"dim must be an int, got {dim!r} (for several axes use amax/amin, "
                       f"or axis= for values only)", TypeError)
    axes = ops._axes(x, int(dim), None, op)        # checks the range (0-d takes 0 and -1)
    return axes[0] if axes else 0


def _arg(op: str, x: Tensor, d: int) -> Tensor:
    """Index of the first extreme (or first NaN) along axis d of x (ndim >= 1), int64."""
    n = x.shape[d]
    if n == 0:
        raise ops._err(op, f"cannot reduce over the empty axis {d} of {ops._fmt(x)}",
                       IndexError)
    if x.dtype is dt.bool_:
        x = ops.cast(x, dt.i64)
    return bind(P.argmax if op in ("max", "argmax") else P.argmin, x, axis=d)


def _select_name(x, idx, d, op):
    return "MaxBackward0" if op == "max" else "MinBackward0"


@composite(_select_name)
def _values_at(x, idx, d: int, op: str):
    """x at index idx along axis d (idx has x's shape without d), read with take_along: the
    gradient reaches the selected element only, as a select against the index along d (one
    fused loop, no zero-filled scatter buffer and no transpose back)."""
    checks.in_bounds(idx, x.shape[d])       # argmax/argmin's own result: no run-time check
    return bind(P.take_along, x, idx, axis=d)


def _with_indices(op: str, x: Tensor, dim, keepdim: bool) -> ValuesIndices:
    scalar = x.ndim == 0
    d = _dim(op, x, dim)
    if scalar:
        x = ops.reshape(x, (1,))
    idx = _arg(op, x, d)
    vals = _values_at(x, idx, d, op)
    if scalar:
        return ValuesIndices(ops.reshape(vals, ()), ops.reshape(idx, ()))
    if keepdim:
        kept = x.shape[:d] + (1,) + x.shape[d + 1:]
        vals, idx = ops.reshape(vals, kept), ops.reshape(idx, kept)
    return ValuesIndices(vals, idx)


def _extreme(op: str, x, dim, keepdim, axis, keepdims):
    x = ops.as_tensor(x)
    if isinstance(dim, (Tensor, np.ndarray)):          # torch.max(a, b): the elementwise max
        return ops.maximum(x, dim) if op == "max" else ops.minimum(x, dim)
    if axis is not None or dim is None:                # NumPy/JAX spelling: values only
        out = ops.amax(x, axis, keepdims or keepdim) if op == "max" \
            else ops.amin(x, axis, keepdims or keepdim)
        # torch's max() and min() of all elements (with axis=, NumPy's amax keeps its name)
        return out if axis is not None else rename(out, "MaxBackward1" if op == "max"
                                                   else "MinBackward1", x)
    return _with_indices(op, x, dim, bool(keepdim if keepdims is None else keepdims))


def max(x, dim=None, keepdim: bool = False, *, axis=None, keepdims=None):  # noqa: A001
    """PyTorch's max: `max(x)` is the largest value (ties share the gradient evenly),
    `max(x, dim)` is (values, indices) with the gradient to the selected index, `max(x, y)` is
    the elementwise maximum. `axis=` (NumPy, JAX) gives the values only, as amax."""
    return _extreme("max", x, dim, keepdim, axis, keepdims)


def min(x, dim=None, keepdim: bool = False, *, axis=None, keepdims=None):  # noqa: A001
    """PyTorch's min; see `max`."""
    return _extreme("min", x, dim, keepdim, axis, keepdims)


def _argextreme(op: str, x, dim, keepdim, axis, keepdims) -> Tensor:
    x = ops.as_tensor(x)
    if x.dtype is dt.bool_:         # (as torch; max/min of bools are fine)
        raise ops._err(op, f"does not support bool input, got {ops._fmt(x)}; cast it first "
                       f"(x.int().{op}(...))", RuntimeError)
    dim = dim if axis is None else axis
    kd = bool(keepdim if keepdims is None else keepdims)
    if dim is None:                 # over the flattened tensor, as PyTorch and NumPy
        r = _arg(op, ops.reshape(x, (x.numel(),)), 0)
        return ops.reshape(r, (1,) * x.ndim) if kd else r
    d = _dim(op, x, dim)
    if x.ndim == 0:
        r = _arg(op, ops.reshape(x, (1,)), 0)
        return ops.reshape(r, ())
    r = _arg(op, x, d)
    return ops.reshape(r, x.shape[:d] + (1,) + x.shape[d + 1:]) if kd else r


def argmax(x, dim=None, keepdim: bool = False, *, axis=None, keepdims=None) -> Tensor:
    """Index (int64) of the largest value along dim, of the flattened tensor when dim is None;
    the first one on ties; a NaN counts as the largest."""
    return _argextreme("argmax", x, dim, keepdim, axis, keepdims)


def argmin(x, dim=None, keepdim: bool = False, *, axis=None, keepdims=None) -> Tensor:
    """Index (int64) of the smallest value along dim; the first one on ties; NaN counts as
    the smallest."""
    return _argextreme("argmin", x, dim, keepdim, axis, keepdims)
