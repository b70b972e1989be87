"""torch.nn.functional's affine_grid and grid_sample (4-D and 5-D input), composed from
existing ops, so their gradients (to the input and to the grid or theta), compiled form and
fusion are those ops'.

- affine_grid: the base grid of normalized coordinates ([-1, 1], pixel centres or corners per
  align_corners), a small constant, times theta^T: one batched matmul.
- grid_sample: each grid point is unnormalized per axis, then mapped by the padding mode
  (border clips, reflection folds with abs/floor arithmetic, as torch's reflect_coordinates).
  'bilinear' (trilinear for 5-D) reads the 2^n corners around the point from the flattened
  input with one gather each (gathering.along; its gradient is a scatter-add into the input)
  and weights them by the products of the fractional parts; the grid's gradient comes through
  those weights (floor is piecewise constant, as in torch). 'nearest' reads the rounded
  (half to even, torch's nearbyint) point; its grid gradient is zeros, as torch's.
  A corner outside the input reads index 0 and is masked to 0 with `where` (so a NaN or an
  infinity there cannot leak in), which is 'zeros' padding. A non-finite grid point (NaN,
  +-inf) gives NaN in every mode: 0 * the point is added to the output (torch's result there
  varies by kernel: NaN, 0, or the value at a clamped position); for 'nearest' the same term
  keeps the grid connected with a zero gradient (torch's grid gradient is zeros, not None).
"""
from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np

from ..ir import dtypes as dt
from ..tracer import ops
from ..tracer.gathering import along
from ..tracer.math_ops import floor, round as round_half_even
from ..tracer.stacking import select
from ..tracer.tensor import Tensor

__all__ = ["affine_grid", "grid_sample"]


def _base_coords(n: int, align_corners: bool) -> np.ndarray:
    """The n normalized coordinates of one axis: corners at +-1, or pixel centres."""
    if align_corners:
        return np.linspace(-1.0, 1.0, n) if n > 1 else np.zeros(1)
    return (2.0 * np.arange(n) + 1.0) / n - 1.0


def affine_grid(theta: Tensor, size: Any, align_corners: bool | None = None) -> Tensor:
    """Sampling grid (N, H, W, 2) for theta (N, 2, 3) and size (N, C, H, W), or (N, D, H, W, 3)
    for theta (N, 3, 4) and size (N, C, D, H, W); the last axis holds (x, y[, z])."""
    op = "affine_grid"
    t = ops.as_tensor(theta)
    size = tuple(int(s) for s in size)
    if len(size) not in (4, 5):
        raise ops._err(op, f"only 4-D and 5-D sizes are supported, got size {list(size)}",
                       NotImplementedError)
    nd = len(size) - 2
    if not t.dtype.is_float:
        raise ops._err(op, f"expected theta to have a floating point dtype, got {ops._fmt(t)}",
                       TypeError)
    if t.shape != (size[0], nd, nd + 1):
        raise ops._err(op, f"expected a batch of {nd}-D affine matrices of shape "
                       f"(N, {nd}, {nd + 1}) for size {list(size)}, got theta {ops._fmt(t)}")
    if min(size[2:]) < 1:
        raise ops._err(op, f"expected non-zero, positive output size, got {list(size)}")
    spatial = size[2:]
    # base[..., :] = (x, y[, z], 1): x runs along the last axis (W), z along the first (D)
    axes = [_base_coords(s, bool(align_corners)) for s in spatial]
    mesh = np.meshgrid(*axes, indexing="ij")                   # D/H/W order
    base = np.stack(list(mesh[::-1]) + [np.ones(spatial)], axis=-1).reshape(-1, nd + 1)
    b = ops.as_tensor(base.astype(t.dtype.np), like=t, const=True)
    grid = ops.matmul(ops.broadcast_to(b, (size[0],) + tuple(b.shape)),
                      ops.permute(t, (0, 2, 1)))                    # (N, L, nd)
    return ops.reshape(grid, (size[0],) + spatial + (nd,))


def _unnormalize(c: Tensor, n: int, align_corners: bool) -> Tensor:
    if align_corners:
        return ops.mul(ops.add(c, 1.0), (n - 1) / 2)
    return ops.div(ops.sub(ops.mul(ops.add(c, 1.0), n), 1.0), 2)


def _clip(c: Tensor, n: int) -> Tensor:
    return ops.clip(c, 0.0, float(n - 1))


def _reflect(c: Tensor, n: int, align_corners: bool) -> Tensor:
    """torch's reflect_coordinates over [lo, hi] ([0, n-1] or [-0.5, n-0.5]), then clipped."""
    lo, hi = (0.0, n - 1.0) if align_corners else (-0.5, n - 0.5)
    span = hi - lo
    if span <= 0:                                    # a single position: every point is it
        return ops.mul(c, 0.0)
    dist = ops.abs(ops.sub(c, lo))
    flips = floor(ops.div(dist, span))
    extra = ops.sub(dist, ops.mul(flips, span))
    even = ops.eq(ops.remainder(flips, 2.0), 0.0)
    out = ops.where(even, ops.add(extra, lo), ops.sub(span + lo, extra))
    return _clip(out, n)


def _coords(grid: Tensor, sizes, padding_mode: str, align_corners: bool) -> list[Tensor]:
    """Per input axis (D, H, W order) the (N, L) source coordinate in pixels."""
    nd = len(sizes)
    out = []
    for axis, n in enumerate(sizes):
        c = _unnormalize(select(grid, -1, nd - 1 - axis), n, align_corners)
        if padding_mode == "border":
            c = _clip(c, n)
        elif padding_mode == "reflection":
            c = _reflect(c, n, align_corners)
        out.append(c)
    return out


def _read(flat: Tensor, pos: list[Tensor], sizes, c: int) -> tuple[Tensor, Tensor]:
    """The values at integral (float) positions pos of flat (N, C, S) as (N, C, L), and the
    (N, 1, L) mask of positions inside the input; outside ones read index 0."""
    inside, index = None, None
    for p, n in zip(pos, sizes):
        ok = ops.logical_and(ops.ge(p, 0.0), ops.le(p, float(n - 1)))   # False for NaN
        inside = ok if inside is None else ops.logical_and(inside, ok)
    for p, n in zip(pos, sizes):
        # masked before the cast: a NaN, infinite or huge coordinate never reaches it
        i = ops.cast(ops.where(inside, p, 0.0), dt.i64)
        index = i if index is None else ops.add(ops.mul(index, n), i)
    idx = ops.unsqueeze(index, 1)
    vals = along(flat, ops.broadcast_to(idx, (flat.shape[0], c, idx.shape[2])), 2)
    return vals, ops.unsqueeze(inside, 1)


def grid_sample(input: Tensor, grid: Tensor, mode: str = "bilinear",  # noqa: A002
                padding_mode: str = "zeros", align_corners: bool | None = None) -> Tensor:
    """Samples input (N, C, H, W) at grid (N, H_out, W_out, 2) of normalized (x, y) points
    (5-D: input (N, C, D, H, W), grid (N, D_out, H_out, W_out, 3)); output (N, C, H_out,
    W_out)."""
    op = "grid_sample"
    x, g = ops.as_tensor(input), ops.as_tensor(grid)
    if mode not in ("bilinear", "nearest"):
        raise ops._err(op, f"mode {mode!r} is not supported (bilinear, nearest)",
                       NotImplementedError)
    if padding_mode not in ("zeros", "border", "reflection"):
        raise ops._err(op, f"padding_mode must be 'zeros', 'border' or 'reflection', got "
                       f"{padding_mode!r}")
    if x.ndim not in (4, 5) or g.ndim != x.ndim:
        raise ops._err(op, f"expects a 4-D input with a 4-D grid or a 5-D input with a 5-D "
                       f"grid, got input {ops._fmt(x)} and grid {ops._fmt(g)}")
    nd = x.ndim - 2
    if g.shape[0] != x.shape[0] or g.shape[-1] != nd:
        raise ops._err(op, f"grid {ops._fmt(g)} must be (N, *out, {nd}) with the batch size "
                       f"{x.shape[0]} of input {ops._fmt(x)}")
    if not x.dtype.is_float or x.dtype is not g.dtype:
        raise ops._err(op, f"input {ops._fmt(x)} and grid {ops._fmt(g)} must have the same "
                       "floating dtype", TypeError)
    if 0 in x.shape[2:]:
        raise ops._err(op, f"input {ops._fmt(x)} has an empty spatial dimension")
    n, c, sizes = x.shape[0], x.shape[1], tuple(x.shape[2:])
    out_sp = tuple(g.shape[1:-1])
    ell = math.prod(out_sp)
    flat = ops.reshape(x, (n, c, math.prod(sizes)))
    gf = ops.reshape(g, (n, ell, nd))
    coords = _coords(gf, sizes, padding_mode, bool(align_corners))
    zero = ops.as_tensor(0.0, x.dtype, like=x)
    if mode == "nearest":
        vals, inside = _read(flat, [round_half_even(p) for p in coords], sizes, c)
        out = ops.where(inside, vals, zero)
    else:
        lo = [floor(p) for p in coords]
        frac = [ops.sub(p, f) for p, f in zip(coords, lo)]
        out = None
        for corner in itertools.product((0, 1), repeat=nd):
            weight = None
            for bit, f in zip(corner, frac):
                w = f if bit else ops.sub(1.0, f)
                weight = w if weight is None else ops.mul(weight, w)
            vals, inside = _read(flat, [ops.add(f, float(b)) for f, b in zip(lo, corner)],
                                 sizes, c)
            term = ops.where(inside, ops.mul(vals, ops.unsqueeze(weight, 1)), zero)
            out = term if out is None else ops.add(out, term)
    # 0 where the point is finite, NaN where it is not (see the module docstring)
    out = ops.add(out, ops.unsqueeze(ops.mul(ops.sum(gf, axis=2), 0.0), 1))
    return ops.reshape(out, (n, c) + out_sp)
