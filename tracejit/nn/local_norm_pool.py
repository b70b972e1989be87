"""Local response normalization (AlexNet, GoogLeNet) and power-average pooling (LPPool), as
torch.nn's functions and modules, composed of tracejit ops (their gradients, compiled form and
fusion are those ops')."""
from __future__ import annotations

from typing import Any

from ..tracer import ops
from ..tracer.conv import avg_pool2d
from ..tracer.tensor import Tensor
from . import functional_1d
from .module import Module

__all__ = ["local_response_norm", "lp_pool1d", "lp_pool2d", "LocalResponseNorm", "LPPool1d",
           "LPPool2d"]


def local_response_norm(input: Tensor, size: int, alpha: float = 1e-4,  # noqa: A002
                        beta: float = 0.75, k: float = 1.0) -> Tensor:
    """x / (k + alpha * mean of x^2 over `size` neighbouring channels)^beta; the window runs
    over channels c - size//2 .. c + (size-1)//2, zero beyond the edges (torch's)."""
    x = ops.as_tensor(input)
    if x.ndim < 3:
        raise ops._err("local_response_norm", f"expects 3 or more dimensions, got "
                       f"{ops._fmt(x)}", ValueError)
    if x.shape[1] == 0:
        return x
    sq = ops.mul(x, x)
    before, after = size // 2, (size - 1) // 2
    pad = [(0, 0)] * x.ndim
    pad[1] = (before, after)
    padded = ops.pad(sq, pad)
    c = x.shape[1]
    total = None
    for j in range(size):         # (size is small: a sum of `size` shifted channel slices)
        part = padded.narrow(1, j, c)
        total = part if total is None else ops.add(total, part)
    div = ops.pow(ops.add(ops.mul(total, alpha / size), k), beta)
    return ops.div(x, div)


def _lp(out: Tensor, norm_type: float, window: int) -> Tensor:
    # (torch's: sign(out) * relu(|out|) keeps a negative mean of odd powers negative)
    mag = ops.mul(ops.sign(out), ops.maximum(ops.abs(out), 0.0))
    return ops.pow(ops.mul(mag, float(window)), 1.0 / float(norm_type))


def lp_pool2d(input: Tensor, norm_type: float, kernel_size: Any,  # noqa: A002
              stride: Any = None, ceil_mode: bool = False) -> Tensor:
    """(sum over each window of x^p)^(1/p)."""
    kh, kw = (kernel_size, kernel_size) if isinstance(kernel_size, int) else kernel_size
    out = avg_pool2d(ops.pow(ops.as_tensor(input), float(norm_type)), (kh, kw), stride, 0,
                     ceil_mode)
    return _lp(out, norm_type, kh * kw)


def lp_pool1d(input: Tensor, norm_type: float, kernel_size: int,  # noqa: A002
              stride: Any = None, ceil_mode: bool = False) -> Tensor:
    out = functional_1d.avg_pool1d(ops.pow(ops.as_tensor(input), float(norm_type)),
                                   kernel_size, stride, 0, ceil_mode)
    return _lp(out, norm_type, kernel_size if isinstance(kernel_size, int) else kernel_size[0])


class LocalResponseNorm(Module):
    def __init__(self, size: int, alpha: float = 1e-4, beta: float = 0.75,
                 k: float = 1.0) -> None:
        super().__init__()
        self.size, self.alpha, self.beta, self.k = size, alpha, beta, k

    def forward(self, input: Tensor) -> Tensor:  # noqa: A002
        return local_response_norm(input, self.size, self.alpha, self.beta, self.k)

    def extra_repr(self) -> str:
        return f"{self.size}, alpha={self.alpha}, beta={self.beta}, k={self.k}"


class _LPPoolNd(Module):
    _fn = staticmethod(lp_pool2d)

    def __init__(self, norm_type: float, kernel_size: Any, stride: Any = None,
                 ceil_mode: bool = False) -> None:
        super().__init__()
        self.norm_type, self.kernel_size = norm_type, kernel_size
        self.stride, self.ceil_mode = stride, ceil_mode

    def forward(self, input: Tensor) -> Tensor:  # noqa: A002
        return self._fn(input, self.norm_type, self.kernel_size, self.stride, self.ceil_mode)

    def extra_repr(self) -> str:
        return (f"norm_type={self.norm_type}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, ceil_mode={self.ceil_mode}")


class LPPool1d(_LPPoolNd):
    _fn = staticmethod(lp_pool1d)


class LPPool2d(_LPPoolNd):
    _fn = staticmethod(lp_pool2d)
