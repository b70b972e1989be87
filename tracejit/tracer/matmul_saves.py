"""Which operand of an eager batched `a @ b` torch saves for backward as a copy, not as a view
of the operand: tracejit then saves a copy there too.

torch computes a batched product by folding the larger operand into a matrix (`mm`/`mv`) or by
reshaping both into `bmm`'s (B, n, m) form. Where that reshape cannot be a view (a transposed
batch, an expanded batch of several dims), torch saves the reshape's copy, so an in-place write
to the operand after the product does not invalidate its gradient. tracejit's product saves the
operand itself; without a copy there, such a write made backward raise "modified by an inplace
operation" where torch runs (eager fuzzer seed 26730: `x.transpose(-2, -1) @ w`, then an
in-place op on x)."""
from __future__ import annotations

import math

from .state import STATE


def _views(shape: tuple, strides: tuple, new: tuple) -> bool:
    """Whether torch's reshape of (shape, strides) to `new` is a view: its computeStride."""
    if not shape or math.prod(shape) == 0:
        return True
    view_d = len(new) - 1
    base = strides[-1]
    numel = view_numel = 1
    for d in range(len(shape) - 1, -1, -1):
        numel *= shape[d]
        if d == 0 or (shape[d - 1] != 1 and strides[d - 1] != numel * base):
            while view_d >= 0 and (view_numel < numel or new[view_d] == 1):
                view_numel *= new[view_d]
                view_d -= 1
            if view_numel != numel:
                return False
            if d > 0:
                base = strides[d - 1]
                numel = view_numel = 1
    return view_d == -1


def _strides(t) -> tuple | None:
    s = getattr(t._data, "strides", None)
    if s is None:
        return None
    size = t._data.itemsize
    return tuple(v // size for v in s)


def _folds(shape: tuple, strides: tuple) -> bool:
    """Whether folding every dim but the last into one is a view (torch's fold into mm)."""
    return _views(shape, strides, (math.prod(shape[:-1]), shape[-1]))


def _batch_views(t, strides: tuple, batch: tuple) -> bool:
    """Whether t.expand(batch + t.shape[-2:]).reshape(prod(batch), *t.shape[-2:]) is a view."""
    lead = len(batch) - (t.ndim - 2)
    shape = batch + t.shape[-2:]
    st = (0,) * lead + tuple(0 if n == 1 and m != 1 else s
                             for n, m, s in zip(t.shape[:-2], batch[lead:], strides)) + strides[-2:]
    return _views(shape, st, (math.prod(batch),) + t.shape[-2:])


def saved_copies(x, y, a_ndim: int, b_ndim: int, batch: tuple) -> tuple:
    """(x, y), each replaced by a copy (with its gradient) where torch saves `a @ b`'s operand
    as a copy: x and y are a and b with a vector made a matrix (a_ndim, b_ndim: the ranks a
    and b had), `batch` the broadcast batch shape. Called for eager host or device operands
    only, at least one of rank > 2."""
    a_grad, b_grad = x._requires_grad, y._requires_grad
    if not (a_grad or b_grad) or not STATE.grad_enabled:
        return x, y
    sx, sy = _strides(x), _strides(y)
    if sx is None or sy is None:
        return x, y
    if a_ndim == 3 == b_ndim and x.shape[0] != y.shape[0]:
        # torch squeezes a batch of one that requires grad and folds the product
        if x.shape[0] == 1 and a_grad:
            a_ndim = 2
        elif y.shape[0] == 1 and b_grad:
            b_ndim = 2
    copy_x = copy_y = False
    if a_ndim >= 3 and b_ndim <= 2:
        # folded when b requires grad, the only case where a is saved (for b's gradient)
        copy_x = b_grad and not _folds(x.shape, sx)
    elif a_ndim <= 2 and b_ndim >= 3:
        # folded as (b.mT @ a.mT).mT when a requires grad, the only case b is saved
        copy_y = a_grad and not _folds(y.shape[:-2] + y.shape[-1:] + y.shape[-2:-1],
                                       sy[:-2] + sy[-1:] + sy[-2:-1])
    else:           # bmm of both expanded to `batch` and reshaped to one batch dim
        copy_x = b_grad and not _batch_views(x, sx, batch)
        copy_y = a_grad and not _batch_views(y, sy, batch)
    if copy_x:
        x = x.clone()
    if copy_y:
        y = y.clone()
    return x, y
