"""torch.nn.functional's 1-D convolution and pools (conv1d, max_pool1d, avg_pool1d,
adaptive_avg_pool1d) and group_norm. A 1-D op is its 2-D op on a height-1 view, (N, C, L) as
(N, C, 1, L), so it shares that op's kernels, gradients, autocast rule and compiled form; the
arguments are checked here first, so that errors name the 1-D op and its shapes."""
from __future__ import annotations

from typing import Any

from ..tracer import composites as C
from ..tracer import ops
from ..tracer.float_only import float_only
from ..tracer.conv import adaptive_avg_pool2d, avg_pool2d, conv2d, max_pool2d
from ..tracer.tensor import Tensor

__all__ = ["conv1d", "max_pool1d", "avg_pool1d", "adaptive_avg_pool1d", "group_norm"]


def _single(v: Any, op: str, what: str) -> int:
    if isinstance(v, (tuple, list)):
        if len(v) != 1:
            raise ops._err(op, f"{what} must be an int or a 1-tuple, got {v!r}")
        v = v[0]
    return int(v)


def _as_2d(x: Any, op: str) -> Tensor:
    """(N, C, L) -> (N, C, 1, L) and unbatched (C, L) -> (C, 1, L)."""
    x = ops.as_tensor(x)
    if x.ndim not in (2, 3):
        raise ops._err(op, f"expects a 2-D (C, L) or 3-D (N, C, L) input, got {ops._fmt(x)}")
    return ops.unsqueeze(x, -2)


def _from_2d(y: Any) -> Any:
    if isinstance(y, tuple):                   # (values, indices) of max_pool1d
        return tuple(ops.squeeze(t, -2) for t in y)
    return ops.squeeze(y, -2)


def conv1d(input: Tensor, weight: Tensor, bias: Tensor | None = None, stride: Any = 1,  # noqa: A002
           padding: Any = 0, dilation: Any = 1, groups: int = 1) -> Tensor:
    """1-D cross-correlation of an (N, C, L) input with an (O, C/groups, K) weight."""
    x = _as_2d(input, "conv1d")
    w = ops.as_tensor(weight)
    if w.ndim != 3:
        raise ops._err("conv1d", f"weight must be 3-D (O, C/groups, K), got {ops._fmt(w)}")
    if x.shape[-3] != w.shape[1] * groups:
        raise ops._err("conv1d", f"input {ops._fmt(ops.as_tensor(input))} has "
                       f"{x.shape[-3]} channels, weight {ops._fmt(w)} with groups={groups} "
                       f"expects {w.shape[1] * groups}", RuntimeError)
    s, d = _single(stride, "conv1d", "stride"), _single(dilation, "conv1d", "dilation")
    if isinstance(padding, str):
        if padding == "same" and s != 1:
            raise ops._err("conv1d", "padding='same' is not supported for strided "
                           f"convolutions (stride={s})")
        pad: Any = padding
    else:
        pad = (0, _single(padding, "conv1d", "padding"))
    return _from_2d(conv2d(x, ops.unsqueeze(w, -2), bias, (1, s), pad, (1, d), groups))


def max_pool1d(input: Tensor, kernel_size: Any, stride: Any = None, padding: Any = 0,  # noqa: A002
               dilation: Any = 1, ceil_mode: bool = False, return_indices: bool = False) -> Any:
    op = "max_pool1d"
    k = _single(kernel_size, op, "kernel_size")
    s = k if stride is None or stride == [] else _single(stride, op, "stride")
    y = max_pool2d(_as_2d(input, op), (1, k), (1, s), (0, _single(padding, op, "padding")),
                   (1, _single(dilation, op, "dilation")), ceil_mode=ceil_mode,
                   return_indices=return_indices)
    return _from_2d(y)


def avg_pool1d(input: Tensor, kernel_size: Any, stride: Any = None, padding: Any = 0,  # noqa: A002
               ceil_mode: bool = False, count_include_pad: bool = True) -> Tensor:
    op = "avg_pool1d"
    k = _single(kernel_size, op, "kernel_size")
    s = k if stride is None or stride == [] else _single(stride, op, "stride")
    return _from_2d(avg_pool2d(_as_2d(input, op), (1, k), (1, s),
                               (0, _single(padding, op, "padding")), ceil_mode,
                               count_include_pad))


def adaptive_avg_pool1d(input: Tensor, output_size: Any) -> Tensor:  # noqa: A002
    op = "adaptive_avg_pool1d"
    return _from_2d(adaptive_avg_pool2d(_as_2d(input, op),
                                        (1, _single(output_size, op, "output_size"))))


def group_norm(input: Tensor, num_groups: int, weight: Tensor | None = None,  # noqa: A002
               bias: Tensor | None = None, eps: float = 1e-5) -> Tensor:
    """Normalises each sample's channels in num_groups groups (mean and biased variance over
    the group's channels and all positions), then scales and shifts each channel: layer_norm
    over an (N, G, C/G * positions) view, so it inherits that op's float32 rule under autocast."""
    x = ops.as_tensor(input)
    float_only("group_norm", x)
    if x.ndim < 2:
        raise ops._err("group_norm", f"expects an (N, C, *) input, got {ops._fmt(x)}",
                       RuntimeError)
    n, c = x.shape[0], x.shape[1]
    if num_groups <= 0 or c % num_groups:
        raise ops._err("group_norm", f"expected number of channels in input {ops._fmt(x)} to "
                       f"be divisible by num_groups={num_groups}", RuntimeError)
    per_group = (c // num_groups) * (x.numel() // max(n * c, 1))
    y = C.layer_norm(ops.reshape(x, (n, num_groups, per_group)), (per_group,), eps=eps)
    y = ops.reshape(y, x.shape)
    channel = (1, c) + (1,) * (x.ndim - 2)
    for t, combine in ((weight, ops.mul), (bias, ops.add)):
        if t is not None:
            t = ops.as_tensor(t)
            if t.shape != (c,):
                raise ops._err("group_norm", f"weight and bias must have shape ({c},), got "
                               f"{ops._fmt(t)}", RuntimeError)
            y = combine(y, ops.reshape(t, channel))
    return y
