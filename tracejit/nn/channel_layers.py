"""Channel-wise layers of torch.nn: Softmax2d (softmax over the channel dim), ChannelShuffle, and the legacy upsampling modules UpsamplingNearest2d /
UpsamplingBilinear2d (Upsample with mode fixed; bilinear with align_corners=True)."""
from __future__ import annotations

from typing import Any

from ..tracer import ops
from ..tracer.tensor import Tensor
from . import functional as F
from .functional_extra import channel_shuffle
from .interpolate import Upsample
from .module import Module


class Softmax2d(Module):
    """Softmax over the channels of a (C, H, W) or (N, C, H, W) input (dim -3)."""

    def forward(self, input: Tensor) -> Tensor:  # noqa: A002
        x = F._t(input)
        if x.ndim not in (3, 4):
            raise ops._err("Softmax2d", f"expected input to be 3D or 4D, got {x.ndim}D "
                           f"{ops._fmt(x)} instead", ValueError)
        return F.softmax(x, -3)


class ChannelShuffle(Module):
    def __init__(self, groups: int) -> None:
        super().__init__()
        self.groups = groups

    def forward(self, input: Tensor) -> Tensor:  # noqa: A002
        return channel_shuffle(input, self.groups)

    def extra_repr(self) -> str:
        return f"groups={self.groups}"


class UpsamplingNearest2d(Upsample):
    def __init__(self, size: Any = None, scale_factor: Any = None) -> None:
        super().__init__(size, scale_factor, mode="nearest")


class UpsamplingBilinear2d(Upsample):
    def __init__(self, size: Any = None, scale_factor: Any = None) -> None:
        super().__init__(size, scale_factor, mode="bilinear", align_corners=True)
