"""The dtype refusals of ops torch has no integer or bool kernel for (gelu, silu, softmax,
layer_norm, ...; relu and hardtanh refuse bool only). Computing them in float32 instead, as
the ops' inner arithmetic would (it promotes), gave results where torch raises."""
from __future__ import annotations

from ..ir.core import user_location
from .tensor_base import TensorBase as Tensor


class DTypeNotImplemented(TypeError, NotImplementedError):
    """An op has no kernel for this dtype. A TypeError, as tracejit's other dtype errors, and
    a NotImplementedError, as torch raises for these ops."""


def float_only(op: str, x: Tensor) -> None:
    """Raise unless `x` is a floating-point tensor."""
    d = x.dtype
    if d.kind != "f":
        raise DTypeNotImplemented(
            f"{op}: not implemented for {d.name} tensors ({d.name}{list(x.shape)}): torch has no "
            f"integer or bool kernel for it; cast first, e.g. x.float() (at {user_location()})")


def no_bool(op: str, x: Tensor) -> None:
    """Raise if `x` is a bool tensor (torch's relu and hardtanh take integers, not bools)."""
    if x.dtype.kind == "b":
        raise DTypeNotImplemented(
            f"{op}: bool inputs are not supported (bool{list(x.shape)}); cast first, e.g. "
            f"x.float() or x.long() (at {user_location()})")
