"""Identity, Linear, Flatten, Unflatten."""
from __future__ import annotations

import math
from typing import Any

from ..ir import dtypes as dt
from ..tracer import ops
from ..tracer.creation import empty
from ..tracer.tensor import Tensor
from . import functional as F
from . import init
from .module import Module
from .parameter import Parameter


def new_parameter(shape: tuple[int, ...], device: Any = None, dtype: Any = None) -> Parameter:
    """An uninitialised parameter (float32 unless dtype says otherwise) for a layer to fill."""
    d = dt.as_dtype(dtype) if dtype is not None else dt.f32
    if not d.is_float:
        raise TypeError(f"parameters must have a floating-point dtype, got {d.name}")
    return Parameter(empty(*shape, dtype=d, device=device))


class Identity(Module):
    """Returns its input; any constructor arguments are ignored (as torch)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__()

    def forward(self, input: Tensor) -> Tensor:  # noqa: A002
        return input


class Linear(Module):
    """y = x W^T + b, W [out_features, in_features]; W and b start as U(±1/sqrt(in_features))
    (torch's kaiming_uniform_(a=sqrt(5)))."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 device: Any = None, dtype: Any = None) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.weight = new_parameter((out_features, in_features), device, dtype)
        if bias:
            self.bias = new_parameter((out_features,), device, dtype)
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in, _ = init._calculate_fan_in_and_fan_out(self.weight)
            bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
            init.uniform_(self.bias, -bound, bound)

    def forward(self, input: Tensor) -> Tensor:  # noqa: A002
        return F.linear(input, self.weight, self.bias)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}")


class Flatten(Module):
    def __init__(self, start_dim: int = 1, end_dim: int = -1) -> None:
        super().__init__()
        self.start_dim = start_dim
        self.end_dim = end_dim

    def forward(self, input: Tensor) -> Tensor:  # noqa: A002
        return ops.flatten(input, self.start_dim, self.end_dim)

    def extra_repr(self) -> str:
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"


class Unflatten(Module):
    def __init__(self, dim: int, unflattened_size: tuple[int, ...]) -> None:
        super().__init__()
        self.dim = dim
        self.unflattened_size = tuple(unflattened_size)

    def forward(self, input: Tensor) -> Tensor:  # noqa: A002
        d = self.dim % input.ndim if input.ndim else 0
        shape = input.shape[:d] + self.unflattened_size + input.shape[d + 1:]
        return ops.reshape(input, shape)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, unflattened_size={self.unflattened_size}"
