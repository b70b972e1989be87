"""Sorting in PyTorch's spelling: `sort` and `topk` return (values, indices), `argsort` the
indices. All are stable (equal elements keep their order, in both directions) and NaN sorts as
the largest value, as PyTorch. The indices come from the argsort and argtopk primitives
(ir/prims_sort.py: topk's are argsort's first k, selected without a full sort on long rows);
the values are read at them with gathering.along (torch.gather's read), so their gradient is
one scatter into zeros of the input's size, as torch's sort/topk backward (a select for topk
with k=1). PyTorch's own CPU topk returns tied values in an order of its algorithm's (not by
position: the top 3 of [1, 3, 3, 2, 3, 0, 3] are at 1, 6, 4 there, at 1, 2, 4 here); the
values are the same, and the gradient goes to the positions each returns.
"""
from __future__ import annotations

import operator
from typing import NamedTuple

from ..ir import dtypes as dt
from ..ir.primitives import P, bind
from . import ops
from .gathering import along
from .node_names import rename
from .tensor_base import TensorBase as Tensor


class SortResult(NamedTuple):
    """What `sort` and `topk` return (PyTorch's torch.return_types.sort / topk)."""
    values: Tensor
    indices: Tensor


def _dim(op: str, x: Tensor, dim) -> int:
    if isinstance(dim, (tuple, list)) or dim is None:
        raise ops._err(op, f"dim must be an int, got {dim!r}", TypeError)
    axes = ops._axes(x, int(dim), None, op)
    return axes[0] if axes else 0


def _argsort(op: str, x: Tensor, d: int, descending: bool) -> Tensor:
    return bind(P.argsort, x, axis=d, descending=bool(descending))


def argsort(x, dim: int = -1, descending: bool = False, stable: bool = False) -> Tensor:
    """int64 positions that sort x along `dim` (always stable; NaN is the largest)."""
    x = ops.as_tensor(x)
    d = _dim("argsort", x, dim)
    if x.ndim == 0:
        return ops.reshape(_argsort("argsort", ops.reshape(x, (1,)), 0, descending), ())
    return _argsort("argsort", x, d, descending)


def sort(x, dim: int = -1, descending: bool = False, stable: bool = False) -> SortResult:
    """(values, indices) of x sorted along `dim`; the gradient flows to the sorted elements."""
    x = ops.as_tensor(x)
    d = _dim("sort", x, dim)
    if x.ndim == 0:
        return SortResult(x, ops.as_tensor(0, dt.i64, like=x))
    idx = _argsort("sort", x, d, descending)
    return SortResult(rename(along(x, idx, d), "SortBackward0"), idx)


def topk(x, k: int, dim: int = -1, largest: bool = True, sorted: bool = True) -> SortResult:  # noqa: A002
    """The k largest (smallest with largest=False) values along `dim` and their indices, in
    sorted order (also for sorted=False, which allows any order); ties keep their order."""
    x = ops.as_tensor(x)
    d = _dim("topk", x, dim)
    n = x.shape[d] if x.ndim else 1
    try:
        k = operator.index(k)
    except TypeError:
        raise ops._err("topk", f"k must be an int, got {k!r}", TypeError) from None
    if not 0 <= k <= n:
        raise ops._err("topk", f"k={k} is out of range for dimension {d} of size {n} "
                       f"({ops._fmt(x)})", IndexError)
    if x.ndim == 0:
        return SortResult(x, ops.as_tensor(0, dt.i64, like=x))
    idx = bind(P.argtopk, x, axis=d, k=k, descending=bool(largest))
    return SortResult(rename(along(x, idx, d), "TopkBackward0"), idx)
