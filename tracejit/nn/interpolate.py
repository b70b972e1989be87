"""F.interpolate (modes 'nearest', 'nearest-exact', 'linear', 'bilinear', 'bicubic',
'trilinear', and 'area', which is adaptive average pooling; 3-D to 5-D input) and
nn.Upsample, with torch's index and weight rules. Each spatial axis is resampled on its own:
the source indices and weights depend only on the sizes, so they are computed here with NumPy
and enter as index_select indices and constant weights (gradients scatter back through
index_select)."""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..tracer import ops
from ..tracer.conv import adaptive_avg_pool2d, adaptive_avg_pool3d
from ..tracer.stacking import index_select
from ..tracer.tensor import Tensor
from .functional_1d import adaptive_avg_pool1d
from .module import Module

__all__ = ["interpolate", "upsample", "Upsample"]
_MODES = {"nearest": None, "nearest-exact": None, "linear": 1, "bilinear": 2, "bicubic": 2,
          "trilinear": 3, "area": None}
_CUBIC_A = -0.75            # torch's (and OpenCV's) cubic convolution coefficient


def _nearest_index(n_in: int, n_out: int, scale: float, exact: bool = False) -> np.ndarray:
    # torch computes the source index in float32 arithmetic; nearest-exact samples at pixel
    # centres (dst + 0.5) * scale, nearest at dst * scale
    dst = np.arange(n_out, dtype=np.float32)
    src = np.floor((dst + np.float32(0.5) if exact else dst) * np.float32(scale))
    return np.minimum(src.astype(np.int64), n_in - 1)


def _cubic_weights(n_in: int, n_out: int, scale: float, align_corners: bool):
    """The four source indices (clamped to the edge) and cubic-convolution weights of each
    output index, as torch's bicubic: the source coordinate is not clamped at 0, unlike
    linear's."""
    dst = np.arange(n_out, dtype=np.float64)
    src = dst * scale if align_corners else (dst + 0.5) * scale - 0.5
    base = np.floor(src)
    t = src - base
    a = _CUBIC_A

    def near(d):            # |d| <= 1
        return ((a + 2) * d - (a + 3)) * d * d + 1

    def far(d):             # 1 < |d| < 2
        return ((a * d - 5 * a) * d + 8 * a) * d - 4 * a
    weights = [far(t + 1), near(t), near(1 - t), far(2 - t)]
    idx = [np.clip(base.astype(np.int64) + k, 0, n_in - 1) for k in (-1, 0, 1, 2)]
    return idx, weights


def _linear_weights(n_in: int, n_out: int, scale: float, align_corners: bool):
    dst = np.arange(n_out, dtype=np.float64)
    src = dst * scale if align_corners else np.maximum((dst + 0.5) * scale - 0.5, 0.0)
    i0 = np.floor(src).astype(np.int64)
    i0 = np.minimum(i0, n_in - 1)
    i1 = np.where(i0 < n_in - 1, i0 + 1, i0)
    lam1 = src - i0
    return i0, i1, 1.0 - lam1, lam1


def _scale(n_in: int, n_out: int, factor: float | None, align_corners: bool, linear: bool
           ) -> float:
    if linear and align_corners:
        return (n_in - 1) / (n_out - 1) if n_out > 1 else 0.0
    return 1.0 / factor if factor is not None else n_in / n_out


def interpolate(input: Tensor, size: Any = None, scale_factor: Any = None,  # noqa: A002
                mode: str = "nearest", align_corners: bool | None = None,
                recompute_scale_factor: bool | None = None, antialias: bool = False) -> Tensor:
    x = ops.as_tensor(input)
    if mode not in _MODES:
        raise NotImplementedError(f"interpolate: mode {mode!r} is not supported (supported: "
                                  f"{', '.join(_MODES)})")
    spatial = x.ndim - 2
    if _MODES[mode] is not None and spatial != _MODES[mode]:
        raise ops._err("interpolate", f"mode {mode!r} expects a {_MODES[mode] + 2}-D input, got "
                       f"{ops._fmt(x)}", NotImplementedError)
    if spatial not in (1, 2, 3):
        raise ops._err("interpolate", f"expects a 3-D, 4-D or 5-D input, got {ops._fmt(x)}",
                       NotImplementedError)
    if align_corners is not None and mode in ("nearest", "nearest-exact", "area"):
        raise ValueError("align_corners option can only be set with the interpolating modes: "
                         "linear | bilinear | bicubic | trilinear")
    if (size is None) == (scale_factor is None):
        raise ValueError("only one of size or scale_factor should be defined")
    if antialias:
        raise NotImplementedError("interpolate: antialias=True is not supported")
    n_in = list(x.shape[2:])
    if size is not None:
        n_out = [int(s) for s in (size if isinstance(size, (tuple, list)) else [size] * spatial)]
        factors: list = [None] * spatial
    else:
        factors = [float(f) for f in (scale_factor if isinstance(scale_factor, (tuple, list))
                                      else [scale_factor] * spatial)]
        n_out = [int(math.floor(n * f)) for n, f in zip(n_in, factors)]
        if recompute_scale_factor:
            factors = [None] * spatial
    if len(n_out) != spatial:
        raise ValueError(f"Input and output must have the same number of spatial dimensions, "
                         f"but got input with spatial dimensions of {n_in} and output size of "
                         f"{n_out}.")
    if mode == "area":              # (torch: adaptive average pooling to the output size)
        pool = (adaptive_avg_pool1d, adaptive_avg_pool2d, adaptive_avg_pool3d)[spatial - 1]
        return pool(x, tuple(n_out) if spatial > 1 else n_out[0])
    linear = not mode.startswith("nearest")
    for axis, (a, b, f) in enumerate(zip(n_in, n_out, factors)):
        dim = 2 + axis
        if a == b and (f is None or f == 1.0):
            continue
        scale = _scale(a, b, f, bool(align_corners), linear)
        if not linear:
            idx = _nearest_index(a, b, scale, exact=mode == "nearest-exact")
            x = index_select(x, dim, ops.as_tensor(idx))
            continue
        if mode == "bicubic":
            idx, weights = _cubic_weights(a, b, scale, bool(align_corners))
        else:
            i0, i1, w0, w1 = _linear_weights(a, b, scale, bool(align_corners))
            idx, weights = [i0, i1], [w0, w1]
        x = _weighted_taps(x, dim, b, idx, weights)
    if x is input:                  # (sizes unchanged: still a new tensor, as torch, not input)
        x = x.clone()
    return x


def _weighted_taps(x: Tensor, dim: int, n_out: int, idx: list, weights: list) -> Tensor:
    """sum_k weights[k] * x gathered at idx[k] along dim (constant weights, broadcast)."""
    shape = [1] * x.ndim
    shape[dim] = n_out
    out = None
    for i, w in zip(idx, weights):
        wt = ops.reshape(ops.as_tensor(w.astype(x.dtype.np), like=x), tuple(shape))
        term = ops.mul(wt, index_select(x, dim, ops.as_tensor(i)))
        out = term if out is None else ops.add(out, term)
    return out


def upsample(input: Tensor, size: Any = None, scale_factor: Any = None,  # noqa: A002
             mode: str = "nearest", align_corners: bool | None = None) -> Tensor:
    return interpolate(input, size, scale_factor, mode, align_corners)


class Upsample(Module):
    def __init__(self, size: Any = None, scale_factor: Any = None, mode: str = "nearest",
                 align_corners: bool | None = None,
                 recompute_scale_factor: bool | None = None) -> None:
        super().__init__()
        self.name = type(self).__name__
        self.size = size
        self.scale_factor = float(scale_factor) if isinstance(scale_factor, (int, float)) \
            else (tuple(float(f) for f in scale_factor) if scale_factor else None)
        self.mode, self.align_corners = mode, align_corners
        self.recompute_scale_factor = recompute_scale_factor

    def forward(self, input: Tensor) -> Tensor:  # noqa: A002
        return interpolate(input, self.size, self.scale_factor, self.mode, self.align_corners,
                           recompute_scale_factor=self.recompute_scale_factor)

    def extra_repr(self) -> str:
        info = (f"scale_factor={self.scale_factor!r}" if self.scale_factor is not None
                else f"size={self.size!r}")
        return info + f", mode={self.mode!r}"
