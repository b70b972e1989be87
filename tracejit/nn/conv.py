"""Conv1d/2d/3d and ConvTranspose1d/2d/3d: torch.nn's signatures, defaults, reprs
and initialization."""
from __future__ import annotations

import math
from typing import Any

from ..tracer.tensor import Tensor
from . import functional as F
from . import init
from .linear import new_parameter
from .module import Module


def _ntuple(v: Any, n: int) -> tuple[int, ...]:
    if not isinstance(v, (tuple, list)):
        return (int(v),) * n
    if len(v) != n:
        raise ValueError(f"Conv{n}d: expected an int or {n} ints, got {v!r}")
    return tuple(int(e) for e in v)


_PADDING_MODES = {"zeros", "reflect", "replicate", "circular"}


class _ConvNd(Module):
    """An n-D convolution layer; weight [out, in/groups, *kernel] from
    kaiming_uniform_(a=sqrt(5)), bias from U(+-1/sqrt(fan_in)), as torch."""
    _n = 2
    _transposed = False

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Any, stride: Any = 1,
                 padding: Any = 0, dilation: Any = 1, groups: int = 1, bias: bool = True,
                 padding_mode: str = "zeros", device: Any = None, dtype: Any = None) -> None:
        super().__init__()
        name, n = type(self).__name__, self._n
        if groups < 1 or in_channels % groups or out_channels % groups:
            raise ValueError(f"{name}: in_channels ({in_channels}) and out_channels "
                             f"({out_channels}) must be divisible by groups ({groups})")
        if padding_mode not in _PADDING_MODES:
            raise ValueError(f"{name}: padding_mode must be one of {sorted(_PADDING_MODES)}, "
                             f"but got padding_mode={padding_mode!r}")
        if isinstance(padding, str) and padding not in ("same", "valid"):
            raise ValueError(f"{name}: invalid padding string {padding!r}, should be one of "
                             "{'valid', 'same'}")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride = _ntuple(kernel_size, n), _ntuple(stride, n)
        self.padding = padding if isinstance(padding, str) else _ntuple(padding, n)
        self.dilation, self.groups, self.padding_mode = _ntuple(dilation, n), groups, padding_mode
        if padding == "same" and self.stride != (1,) * n:
            raise ValueError(f"{name}: padding='same' is not supported for strided "
                             "convolutions")
        if self._transposed:
            if isinstance(padding, str):
                raise ValueError(f"{name}: padding={padding!r} is not supported for "
                                 "transposed convolutions (an int or a tuple)")
            self.output_padding = _ntuple(self._output_padding_arg, n)
            # torch's transposed weight: [in, out/groups, *kernel]
            shape = (in_channels, out_channels // groups) + self.kernel_size
        else:
            shape = (out_channels, in_channels // groups) + self.kernel_size
        self.weight = new_parameter(shape, device, dtype)
        if bias:
            self.bias = new_parameter((out_channels,), device, dtype)
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in, _ = init._calculate_fan_in_and_fan_out(self.weight)
            if fan_in != 0:
                bound = 1 / math.sqrt(fan_in)
                init.uniform_(self.bias, -bound, bound)

    def _edge_padding(self) -> tuple[int, ...]:
        """F.pad's pad (last dim first) giving what `padding` adds on each side ('same': the
        odd one out on the right, as torch)."""
        if self.padding == "valid":
            return (0, 0) * self._n
        if self.padding == "same":
            pads = []
            for d, k in zip(self.dilation, self.kernel_size):
                total = d * (k - 1)
                pads.append((total // 2, total - total // 2))
        else:
            pads = [(p, p) for p in self.padding]
        return tuple(e for pair in reversed(pads) for e in pair)

    def forward(self, input: Tensor) -> Tensor:  # noqa: A002
        conv = (F.conv1d, F.conv2d, F.conv3d)[self._n - 1]
        if self.padding_mode != "zeros":
            # reflect/replicate/circular: pad the input that way, then a convolution without
            # padding (torch's Conv layers do the same)
            input = F.pad(input, self._edge_padding(), mode=self.padding_mode)
            return conv(input, self.weight, self.bias, self.stride, 0, self.dilation,
                        self.groups)
        return conv(input, self.weight, self.bias, self.stride, self.padding, self.dilation,
                    self.groups)

    def extra_repr(self) -> str:
        s = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
             f"stride={self.stride}")
        if self.padding != (0,) * self._n:
            s += f", padding={self.padding}"
        if self.dilation != (1,) * self._n:
            s += f", dilation={self.dilation}"
        if getattr(self, "output_padding", (0,) * self._n) != (0,) * self._n:
            s += f", output_padding={self.output_padding}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        if self.padding_mode != "zeros":
            s += f", padding_mode={self.padding_mode}"
        return s


class Conv1d(_ConvNd):
    """1-D convolution over (N, C, L); weight [out, in/groups, k]."""
    _n = 1


class Conv2d(_ConvNd):
    """2-D convolution over (N, C, H, W); weight [out, in/groups, kH, kW]."""
    _n = 2


class Conv3d(_ConvNd):
    """3-D convolution over (N, C, D, H, W); weight [out, in/groups, kD, kH, kW]."""
    _n = 3


class _ConvTransposeNd(_ConvNd):
    """A transposed convolution layer; weight [in, out/groups, *kernel], initialised as
    torch's (kaiming_uniform_(a=sqrt(5)) with fan_in = out/groups * prod(kernel))."""
    _transposed = True

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Any, stride: Any = 1,
                 padding: Any = 0, output_padding: Any = 0, groups: int = 1, bias: bool = True,
                 dilation: Any = 1, padding_mode: str = "zeros", device: Any = None,
                 dtype: Any = None) -> None:
        if padding_mode != "zeros":         # (torch's error for transposed convolutions)
            raise ValueError(f'Only "zeros" padding mode is supported for '
                             f"{type(self).__name__}")
        self._output_padding_arg = output_padding
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation,
                         groups, bias, padding_mode, device, dtype)
        del self._output_padding_arg

    def _output_padding(self, input: Tensor, output_size: Any) -> tuple[int, ...]:  # noqa: A002
        """torch's rule: the output_padding that makes the output exactly output_size (the
        trailing n entries of it), which must lie within [min, min + stride - 1]."""
        if output_size is None:
            return self.output_padding
        n = self._n
        size = [int(v) for v in output_size]
        lead = 2 if input.ndim == n + 2 else 1      # batch and channel, or channel only
        if len(size) == n + lead:
            size = size[lead:]
        if len(size) != n:
            raise ValueError(f"{type(self).__name__}: output_size must have {n} or {n + lead} "
                             f"elements (got {len(size)})")
        spatial = list(input.shape[input.ndim - n:])
        lo = [(spatial[d] - 1) * self.stride[d] - 2 * self.padding[d] +
              self.dilation[d] * (self.kernel_size[d] - 1) + 1 for d in range(n)]
        hi = [lo[d] + self.stride[d] - 1 for d in range(n)]
        if any(not lo[d] <= size[d] <= hi[d] for d in range(n)):
            raise ValueError(f"{type(self).__name__}: requested an output size of {size}, but "
                             f"valid sizes range from {lo} to {hi} (for an input of "
                             f"{spatial})")
        pads = [size[d] - lo[d] for d in range(n)]
        return tuple(pads)

    def forward(self, input: Tensor, output_size: Any = None) -> Tensor:  # noqa: A002
        conv = (F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d)[self._n - 1]
        return conv(input, self.weight, self.bias, self.stride, self.padding,
                    self._output_padding(input, output_size), self.groups, self.dilation)


class ConvTranspose1d(_ConvTransposeNd):
    """1-D transposed convolution over (N, C, L); weight [in, out/groups, k]."""
    _n = 1


class ConvTranspose2d(_ConvTransposeNd):
    """2-D transposed convolution over (N, C, H, W); weight [in, out/groups, kH, kW]."""
    _n = 2


class ConvTranspose3d(_ConvTransposeNd):
    """3-D transposed convolution over (N, C, D, H, W); weight [in, out/groups, kD, kH, kW]."""
    _n = 3
