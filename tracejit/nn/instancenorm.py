"""InstanceNorm1d/2d/3d (torch's defaults: no affine, no running statistics) and PixelShuffle /
PixelUnshuffle."""
from __future__ import annotations

from typing import Any

from ..tracer import ops
from ..tracer.tensor import Tensor
from . import functional as F
from .batchnorm import _BatchNorm
from .module import Module


class _InstanceNorm(_BatchNorm):
    """torch's _InstanceNorm: _NormBase's parameters and buffers (so the same state_dict
    names), statistics per (sample, channel); running statistics are updated (with
    track_running_stats) but num_batches_tracked is not, as torch."""
    _unbatched = 2

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1,
                 affine: bool = False, track_running_stats: bool = False, device: Any = None,
                 dtype: Any = None, *, bias: bool = True) -> None:
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device,
                         dtype, bias=bias)

    def forward(self, input: Tensor) -> Tensor:  # noqa: A002
        x = ops.as_tensor(input)
        if x.ndim not in (self._unbatched, self._unbatched + 1):
            raise ValueError(f"{type(self).__name__}: expected {self._unbatched}D or "
                             f"{self._unbatched + 1}D input (got {x.ndim}D input of shape "
                             f"{list(x.shape)})")
        unbatched = x.ndim == self._unbatched
        c = x.shape[0 if unbatched else 1]
        if c != self.num_features and self.affine:
            raise ValueError(f"{type(self).__name__}: expected input's size at dim="
                             f"{0 if unbatched else 1} to match num_features "
                             f"({self.num_features}), but got: {c}.")
        y = F.instance_norm(ops.unsqueeze(x, 0) if unbatched else x, self.running_mean,
                            self.running_var, self.weight, self.bias,
                            self.training or not self.track_running_stats,
                            0.0 if self.momentum is None else self.momentum, self.eps)
        return ops.squeeze(y, 0) if unbatched else y


class InstanceNorm1d(_InstanceNorm):
    """Instance norm over (N, C, L) or (C, L) input."""
    _unbatched = 2


class InstanceNorm2d(_InstanceNorm):
    """Instance norm over (N, C, H, W) or (C, H, W) input."""
    _unbatched = 3


class InstanceNorm3d(_InstanceNorm):
    """Instance norm over (N, C, D, H, W) or (C, D, H, W) input."""
    _unbatched = 4


class PixelShuffle(Module):
    """(*, C*r*r, H, W) -> (*, C, H*r, W*r)."""

    def __init__(self, upscale_factor: int) -> None:
        super().__init__()
        self.upscale_factor = upscale_factor

    def forward(self, input: Tensor) -> Tensor:  # noqa: A002
        return F.pixel_shuffle(input, self.upscale_factor)

    def extra_repr(self) -> str:
        return f"upscale_factor={self.upscale_factor}"


class PixelUnshuffle(Module):
    """(*, C, H*r, W*r) -> (*, C*r*r, H, W)."""

    def __init__(self, downscale_factor: int) -> None:
        super().__init__()
        self.downscale_factor = downscale_factor

    def forward(self, input: Tensor) -> Tensor:  # noqa: A002
        return F.pixel_unshuffle(input, self.downscale_factor)

    def extra_repr(self) -> str:
        return f"downscale_factor={self.downscale_factor}"
