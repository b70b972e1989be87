"""torch.nn.functional's adaptive_max_pool1d/2d/3d and the modules AdaptiveMaxPool1d/2d/3d.

Output cell (i, j) is the maximum over torch's window rows [floor(i*H/oh), ceil((i+1)*H/oh)),
columns likewise. Windows of one size that tile the plane (H % oh == 0 and W % ow == 0, which
includes global pooling) are max_pool2d/3d with kernel = stride; other sizes take each cell's
window as a slice, flattened: its argmax (the first maximum in row-major order, a NaN counting
as the largest, as torch's kernel) and the value gathered there, so the gradient goes to that
one element as torch's does, also on ties. The indices are flat H*W (D*H*W) positions, as
torch's."""
from __future__ import annotations

import itertools
import math
from typing import Any

from ..ir import dtypes as dt
from ..tracer import gathering, ops, selection, shape_ops
from ..tracer.conv import max_pool2d, max_pool3d
from ..tracer.tensor import Tensor
from .module import Module

__all__ = ["adaptive_max_pool1d", "adaptive_max_pool2d", "adaptive_max_pool3d",
           "AdaptiveMaxPool1d", "AdaptiveMaxPool2d", "AdaptiveMaxPool3d"]


def _bounds(n: int, o: int) -> list[tuple[int, int]]:
    return [((i * n) // o, -(-((i + 1) * n) // o)) for i in range(o)]


def _pool(op: str, x: Tensor, outs: tuple[int, ...], return_indices: bool) -> Any:
    """Over the last len(outs) axes of x (2 or 3; 1-D input comes as a height-1 plane)."""
    nd = len(outs)
    sizes = tuple(x.shape[-nd:])
    if not x.dtype.is_float:
        raise ops._err(op, f"expects a floating input, got {ops._fmt(x)}", RuntimeError)
    if min(outs) < 0 or 0 in x.shape[-nd - 1:]:
        raise ops._err(op, f"cannot pool input {ops._fmt(x)} to output size {outs} "
                       "(an empty spatial or channel axis, or a negative size)", RuntimeError)
    lead = tuple(x.shape[:-nd])
    if 0 in outs:                       # an empty output, as torch gives
        out = ops.reshape(x[(Ellipsis,) + (slice(0, 0),) * nd], lead + outs)
        return (out, ops.cast(ops.stop_gradient(out), dt.i64)) if return_indices else out
    if all(n % o == 0 for n, o in zip(sizes, outs)):
        k = tuple(n // o for n, o in zip(sizes, outs))
        return (max_pool2d if nd == 2 else max_pool3d)(x, k, k, return_indices=return_indices)
    vals, idxs = [], []
    for cell in itertools.product(*(_bounds(n, o) for n, o in zip(sizes, outs))):
        ext = [b - a for a, b in cell]
        flat = ops.reshape(x[(Ellipsis,) + tuple(slice(a, b) for a, b in cell)],
                           lead + (math.prod(ext),))
        a = selection.argmax(flat, -1, keepdim=True)
        vals.append(gathering.gather(flat, -1, a))
        if return_indices:
            # the window argmax's position in the input volume, flattened row-major
            idx = None
            for d, ((c0, _), e, n) in enumerate(zip(cell, ext, sizes)):
                pos = ops.add(ops.remainder(ops.floor_divide(a, math.prod(ext[d + 1:])), e), c0)
                idx = pos if idx is None else ops.add(ops.mul(idx, n), pos)
            idxs.append(idx)
    out = ops.reshape(shape_ops.concatenate(vals, -1), lead + outs)
    if not return_indices:
        return out
    return out, ops.reshape(shape_ops.concatenate(idxs, -1), lead + outs)


def _size(op: str, output_size: Any, n: int, dims: tuple[int, ...]) -> tuple[int, ...]:
    s = tuple(output_size) if isinstance(output_size, (tuple, list)) else (output_size,) * n
    if len(s) != n:
        raise ops._err(op, f"output_size must be an int or {n} ints (None keeps that input "
                       f"size), got {output_size!r}", RuntimeError)
    return tuple(d if v is None else int(v) for v, d in zip(s, dims))


def adaptive_max_pool2d(input: Tensor, output_size: Any,  # noqa: A002
                        return_indices: bool = False) -> Any:
    """Maxima over torch's adaptive windows of an (N, C, H, W) or (C, H, W) input; with
    return_indices also their flat H*W positions (int64)."""
    op = "adaptive_max_pool2d"
    x = ops.as_tensor(input)
    if x.ndim not in (3, 4):
        raise ops._err(op, f"expects a 3-D (C, H, W) or 4-D (N, C, H, W) input, got "
                       f"{ops._fmt(x)}", RuntimeError)
    return _pool(op, x, _size(op, output_size, 2, tuple(x.shape[-2:])), return_indices)


def adaptive_max_pool3d(input: Tensor, output_size: Any,  # noqa: A002
                        return_indices: bool = False) -> Any:
    """Maxima over torch's adaptive windows of an (N, C, D, H, W) or (C, D, H, W) input; with
    return_indices also their flat D*H*W positions (int64)."""
    op = "adaptive_max_pool3d"
    x = ops.as_tensor(input)
    if x.ndim not in (4, 5):
        raise ops._err(op, f"expects a 4-D (C, D, H, W) or 5-D (N, C, D, H, W) input, got "
                       f"{ops._fmt(x)}", RuntimeError)
    return _pool(op, x, _size(op, output_size, 3, tuple(x.shape[-3:])), return_indices)


def adaptive_max_pool1d(input: Tensor, output_size: Any,  # noqa: A002
                        return_indices: bool = False) -> Any:
    """Maxima over torch's adaptive windows of an (N, C, L) or (C, L) input."""
    op = "adaptive_max_pool1d"
    x = ops.as_tensor(input)
    if x.ndim not in (2, 3):
        raise ops._err(op, f"expects a 2-D (C, L) or 3-D (N, C, L) input, got "
                       f"{ops._fmt(x)}", RuntimeError)
    o, = _size(op, output_size, 1, (x.shape[-1],))
    res = _pool(op, ops.unsqueeze(x, -2), (1, o), return_indices)   # (a height-1 plane)
    if not return_indices:
        return ops.squeeze(res, -2)
    return ops.squeeze(res[0], -2), ops.squeeze(res[1], -2)


class _AdaptiveMaxPoolNd(Module):
    def __init__(self, output_size: Any, return_indices: bool = False) -> None:
        super().__init__()
        self.output_size, self.return_indices = output_size, return_indices

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}"


class AdaptiveMaxPool1d(_AdaptiveMaxPoolNd):
    def forward(self, input: Tensor) -> Any:  # noqa: A002
        return adaptive_max_pool1d(input, self.output_size, self.return_indices)


class AdaptiveMaxPool2d(_AdaptiveMaxPoolNd):
    def forward(self, input: Tensor) -> Any:  # noqa: A002
        return adaptive_max_pool2d(input, self.output_size, self.return_indices)


class AdaptiveMaxPool3d(_AdaptiveMaxPoolNd):
    def forward(self, input: Tensor) -> Any:  # noqa: A002
        return adaptive_max_pool3d(input, self.output_size, self.return_indices)
