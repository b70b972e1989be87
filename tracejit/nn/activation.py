"""Activation modules (torch.nn's names, arguments and reprs)."""
from __future__ import annotations

from typing import Any

from ..tracer.tensor import Tensor
from . import functional as F
from . import init
from .functional import _maybe_inplace
from .linear import new_parameter
from .module import Module


def _inplace_repr(m: Module, first: str = "") -> str:
    parts = [first] if first else []
    if m.inplace:
        parts.append("inplace=True")
    return ", ".join(parts)


class ReLU(Module):
    def __init__(self, inplace: bool = False) -> None:
        super().__init__()
        self.inplace = inplace

    def forward(self, input: Tensor) -> Tensor:  # noqa: A002
        return _maybe_inplace(F.relu, input, self.inplace, "relu_")

    def extra_repr(self) -> str:
        return _inplace_repr(self)


class Hardtanh(Module):
    def __init__(self, min_val: float = -1.0, max_val: float = 1.0, inplace: bool = False) -> None:
        super().__init__()
        self.min_val, self.max_val, self.inplace = min_val, max_val, inplace

    def forward(self, input: Tensor) -> Tensor:  # noqa: A002
        return _maybe_inplace(lambda x: F.hardtanh(x, self.min_val, self.max_val), input, self.inplace,
                      "hardtanh_")

    def extra_repr(self) -> str:
        return _inplace_repr(self, f"min_val={self.min_val}, max_val={self.max_val}")


class ReLU6(Hardtanh):
    def __init__(self, inplace: bool = False) -> None:
        super().__init__(0.0, 6.0, inplace)

    def extra_repr(self) -> str:
        return _inplace_repr(self)


class LeakyReLU(Module):
    def __init__(self, negative_slope: float = 0.01, inplace: bool = False) -> None:
        super().__init__()
        self.negative_slope, self.inplace = negative_slope, inplace

    def forward(self, input: Tensor) -> Tensor:  # noqa: A002
        return _maybe_inplace(lambda x: F.leaky_relu(x, self.negative_slope), input, self.inplace,
                      "leaky_relu_")

    def extra_repr(self) -> str:
        return _inplace_repr(self, f"negative_slope={self.negative_slope}")


class ELU(Module):
    def __init__(self, alpha: float = 1.0, inplace: bool = False) -> None:
        super().__init__()
        self.alpha, self.inplace = alpha, inplace

    def forward(self, input: Tensor) -> Tensor:  # noqa: A002
        return _maybe_inplace(lambda x: F.elu(x, self.alpha), input, self.inplace, "elu_")

    def extra_repr(self) -> str:
        return _inplace_repr(self, f"alpha={self.alpha}")


class GELU(Module):
    def __init__(self, approximate: str = "none") -> None:
        super().__init__()
        self.approximate = approximate

    def forward(self, input: Tensor) -> Tensor:  # noqa: A002
        return F.gelu(input, approximate=self.approximate)

    def extra_repr(self) -> str:
        return f"approximate={self.approximate!r}"


class SiLU(Module):
    def __init__(self, inplace: bool = False) -> None:
        super().__init__()
        self.inplace = inplace

    def forward(self, input: Tensor) -> Tensor:  # noqa: A002
        return _maybe_inplace(F.silu, input, self.inplace, "silu_")

    def extra_repr(self) -> str:
        return _inplace_repr(self)


class Mish(Module):
    def __init__(self, inplace: bool = False) -> None:
        super().__init__()
        self.inplace = inplace

    def forward(self, input: Tensor) -> Tensor:  # noqa: A002
        return _maybe_inplace(F.mish, input, self.inplace, "mish_")

    def extra_repr(self) -> str:
        return _inplace_repr(self)


class Softplus(Module):
    def __init__(self, beta: float = 1.0, threshold: float = 20.0) -> None:
        super().__init__()
        self.beta, self.threshold = beta, threshold

    def forward(self, input: Tensor) -> Tensor:  # noqa: A002
        return F.softplus(input, self.beta, self.threshold)

    def extra_repr(self) -> str:
        return f"beta={self.beta}, threshold={self.threshold}"


class Tanh(Module):
    def forward(self, input: Tensor) -> Tensor:  # noqa: A002
        return F.tanh(input)


class Sigmoid(Module):
    def forward(self, input: Tensor) -> Tensor:  # noqa: A002
        return F.sigmoid(input)


class LogSigmoid(Module):
    def forward(self, input: Tensor) -> Tensor:  # noqa: A002
        return F.logsigmoid(input)


class Softmax(Module):
    def __init__(self, dim: int | None = None) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, input: Tensor) -> Tensor:  # noqa: A002
        return F.softmax(input, self.dim)

    def extra_repr(self) -> str:
        return f"dim={self.dim}"


class LogSoftmax(Module):
    def __init__(self, dim: int | None = None) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, input: Tensor) -> Tensor:  # noqa: A002
        return F.log_softmax(input, self.dim)

    def extra_repr(self) -> str:
        return f"dim={self.dim}"


class _Pointwise(Module):
    """An activation applied through F.<_fn>; inplace writes the result into the input."""
    _fn = ""
    _show_inplace = True

    def __init__(self, inplace: bool = False) -> None:
        super().__init__()
        self.inplace = inplace

    def _apply_fn(self, x: Tensor) -> Tensor:
        return getattr(F, self._fn)(x)

    def forward(self, input: Tensor) -> Tensor:  # noqa: A002
        return _maybe_inplace(self._apply_fn, input, self.inplace, self._fn + "_")

    def extra_repr(self) -> str:
        return _inplace_repr(self) if self._show_inplace else ""


class Hardswish(_Pointwise):
    _fn, _show_inplace = "hardswish", False


class Hardsigmoid(_Pointwise):
    _fn, _show_inplace = "hardsigmoid", False


class SELU(_Pointwise):
    _fn = "selu"


class CELU(_Pointwise):
    _fn = "celu"

    def __init__(self, alpha: float = 1.0, inplace: bool = False) -> None:
        super().__init__(inplace)
        self.alpha = alpha

    def _apply_fn(self, x: Tensor) -> Tensor:
        return F.celu(x, self.alpha)

    def extra_repr(self) -> str:
        return _inplace_repr(self, f"alpha={self.alpha}")


class Threshold(_Pointwise):
    _fn = "threshold"

    def __init__(self, threshold: float, value: float, inplace: bool = False) -> None:
        super().__init__(inplace)
        self.threshold, self.value = threshold, value

    def _apply_fn(self, x: Tensor) -> Tensor:
        return F.threshold(x, self.threshold, self.value)

    def extra_repr(self) -> str:
        return _inplace_repr(self, f"threshold={self.threshold}, value={self.value}")


class Softsign(_Pointwise):
    _fn, _show_inplace = "softsign", False


class Tanhshrink(_Pointwise):
    _fn, _show_inplace = "tanhshrink", False


class GLU(Module):
    def __init__(self, dim: int = -1) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, input: Tensor) -> Tensor:  # noqa: A002
        return F.glu(input, self.dim)

    def extra_repr(self) -> str:
        return f"dim={self.dim}"


class Softmin(Module):
    def __init__(self, dim: int | None = None) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, input: Tensor) -> Tensor:  # noqa: A002
        return F.softmin(input, self.dim, _stacklevel=5)

    def extra_repr(self) -> str:
        return f"dim={self.dim}"


class PReLU(Module):
    """max(0, x) + weight * min(0, x), weight (num_parameters,) starting at `init`."""

    def __init__(self, num_parameters: int = 1, init: float = 0.25, device: Any = None,
                 dtype: Any = None) -> None:
        super().__init__()
        self.num_parameters, self.init = num_parameters, init
        self.weight = new_parameter((num_parameters,), device, dtype)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        init.constant_(self.weight, self.init)

    def forward(self, input: Tensor) -> Tensor:  # noqa: A002
        return F.prelu(input, self.weight)

    def extra_repr(self) -> str:
        return f"num_parameters={self.num_parameters}"
