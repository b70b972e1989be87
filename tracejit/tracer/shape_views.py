"""`atleast_1d/2d/3d` and `Tensor.unfold` as views of their input, as PyTorch's are: an in-place
op through the result writes into the input, and the input's in-place changes show in the
result (views.py records them).

atleast_*d adds unit axes with torch's ops (unsqueeze; a reshape of a 0-d tensor), so its nodes
carry torch's names. unfold is one gather of constant positions along the dim (its gradient
scatters back); it is recorded as a view of its input, so writes through it reach the input
(overlapping windows read a position twice: an in-place op on them is refused, as torch
refuses a write into memory that several elements share)."""
from __future__ import annotations

import numbers

import numpy as np

from ..ir import dtypes as dt
from ..ir.primitives import P, bind
from . import ops, stacking
from .layout import _narrow
from .node_names import rename
from .tensor_base import TensorBase as Tensor
from .views import reshape, unsqueeze, viewing


def _atleast(one, args):
    """One tensor -> one result; several (or a list) -> a tuple, as torch."""
    many = len(args) != 1 or isinstance(args[0], (list, tuple))
    xs = [ops.as_tensor(x) if not isinstance(x, Tensor) else x
          for x in (args[0] if len(args) == 1 and many else args)]
    out = tuple(one(x) for x in xs)
    return out if many else out[0]


def _at_least_1(x: Tensor) -> Tensor:
    return reshape(x, (1,)) if x.ndim == 0 else x


def _at_least_2(x: Tensor) -> Tensor:
    if x.ndim == 0:
        return reshape(x, (1, 1))
    return unsqueeze(x, 0) if x.ndim == 1 else x


def _at_least_3(x: Tensor) -> Tensor:
    if x.ndim == 0:
        return reshape(x, (1, 1, 1))
    if x.ndim == 1:
        return unsqueeze(unsqueeze(x, 0), -1)
    return unsqueeze(x, -1) if x.ndim == 2 else x


def atleast_1d(*tensors):
    """Each input with at least 1 dim: a view (the input itself when it has enough)."""
    return _atleast(_at_least_1, tensors)


def atleast_2d(*tensors):
    """Each input with at least 2 dims (a 1-d x as [1, n]): a view, as torch."""
    return _atleast(_at_least_2, tensors)


def atleast_3d(*tensors):
    """Each input with at least 3 dims ([n] -> [1, n, 1], [m, n] -> [m, n, 1]): a view."""
    return _atleast(_at_least_3, tensors)


def _unfold(x, dimension: int, size: int, step: int) -> Tensor:
    """x.unfold(dimension, size, step): the windows of `size` elements every `step` along
    `dimension`, that dim replaced by the window count and a last dim of `size` added."""
    x = ops.as_tensor(x)
    for name, v in (("size", size), ("step", step)):
        if not isinstance(v, numbers.Integral) or isinstance(v, bool):
            raise ops._err("unfold", f"{name} must be an int, got {type(v).__name__}", TypeError)
    size, step = int(size), int(step)
    if step <= 0:
        raise ops._err("unfold", f"step is {step} but must be > 0 (tensor {ops._fmt(x)})",
                       RuntimeError)
    if x.ndim == 0:             # (torch: a 0-d tensor unfolds as one element, without the dim)
        ops._axes(ops.reshape(x, (1,)), dimension, None, "unfold")
        if size > 1 or size < 0:
            raise ops._err("unfold", f"maximum size for tensor at dimension 0 is 1 but size "
                           f"is {size}", RuntimeError)
        return _narrow(ops.reshape(x, (1,)), 0, 0, size)
    d = ops._axes(x, dimension, None, "unfold")[0]
    n = x.shape[d]
    if size < 0 or size > n:
        raise ops._err("unfold", f"maximum size for tensor at dimension {d} is {n} but size "
                       f"is {size} (tensor {ops._fmt(x)})", RuntimeError)
    count = (n - size) // step + 1
    pos = (np.arange(count, dtype=np.int64)[:, None] * step
           + np.arange(size, dtype=np.int64)[None, :]).reshape(-1)
    flat = ops.as_tensor(pos, like=x if x._traced else None)
    if flat.dtype is not dt.i64:
        flat = ops.cast(flat, dt.i64)
    g = bind(P.gather, x, flat, axis=d)
    g = ops.reshape(g, x.shape[:d] + (count, size) + x.shape[d + 1:])
    return rename(stacking.movedim(g, d + 1, -1), "UnfoldBackward0")


unfold = viewing(_unfold)
unfold.__name__ = "unfold"

__all__ = ["atleast_1d", "atleast_2d", "atleast_3d", "unfold"]
