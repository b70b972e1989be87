"""torch.nn.functional's hardsigmoid, hardswish, selu, celu, glu, softsign, tanhshrink,
threshold, prelu and dropout1d/dropout2d, from existing ops. The piecewise ones use
where() on torch's intervals, so the gradient at a breakpoint is the one torch's backward
formula gives there."""
from __future__ import annotations

from ..tracer import composites as C
from ..tracer import ops
from ..tracer.creation import ones
from ..tracer.float_only import float_only, no_bool
from ..tracer.inplace import inplace as _inplace
from ..tracer.layout import chunk
from ..tracer.math_ops import expm1 as _expm1
from ..tracer.rng import dropout as _dropout
from ..tracer.tensor import Tensor

__all__ = ["hardsigmoid", "hardswish", "selu", "celu", "glu", "softsign", "tanhshrink",
           "threshold", "prelu", "dropout1d", "dropout2d"]

_SELU_ALPHA = 1.6732632423543772848170429916717
_SELU_SCALE = 1.0507009873554804934193349852946


def hardsigmoid(input: Tensor, inplace: bool = False) -> Tensor:  # noqa: A002
    """relu6(x + 3) / 6; gradient 1/6 strictly inside (-3, 3)."""
    x = ops.as_tensor(input)
    float_only("hardsigmoid", x)
    inner = ops.div(ops.add(x, 3.0), 6.0)
    return ops.where(ops.le(x, -3.0), 0.0, ops.where(ops.ge(x, 3.0), 1.0, inner))


def hardswish(input: Tensor, inplace: bool = False) -> Tensor:  # noqa: A002
    """x relu6(x + 3) / 6; gradient x / 3 + 1/2 strictly inside (-3, 3), 0 up to -3, 1 from
    3 on (torch's backward)."""
    x = ops.as_tensor(input)
    float_only("hardswish", x)
    inner = ops.div(ops.mul(x, ops.add(x, 3.0)), 6.0)
    return ops.where(ops.le(x, -3.0), 0.0, ops.where(ops.ge(x, 3.0), x, inner))


def _elu_part(x: Tensor, alpha: float, inner_scale: float, op: str = "elu") -> Tensor:
    float_only(op, x)
    # exp of the clamped input: the branch not taken must not overflow into a NaN gradient
    pos = ops.gt(x, 0)
    # (expm1, not exp - 1: that cancels for small negative x)
    neg = ops.mul(_expm1(ops.mul(ops.where(pos, 0.0, x), inner_scale)), alpha)
    return ops.where(pos, x, neg)


def _maybe_inplace(fn, x, inplace: bool, name: str) -> Tensor:
    # inplace=True writes into x's storage (was silently ignored: torch's F.selu_ and co.)
    x = ops.as_tensor(x)
    return _inplace(x, fn, name) if inplace else fn(x)


def selu(input: Tensor, inplace: bool = False) -> Tensor:  # noqa: A002
    return _maybe_inplace(lambda x: ops.mul(_elu_part(x, _SELU_ALPHA, 1.0, "selu"),
                                            _SELU_SCALE),
                          input, inplace, "selu_")


def celu(input: Tensor, alpha: float = 1.0, inplace: bool = False) -> Tensor:  # noqa: A002
    if alpha == 0:
        raise ops._err("celu", "ZeroDivisionError: alpha cannot be 0 for CELU", RuntimeError)
    return _maybe_inplace(lambda x: _elu_part(x, alpha, 1.0 / alpha, "celu"), input, inplace,
                          "celu_")


def glu(input: Tensor, dim: int = -1) -> Tensor:  # noqa: A002
    """a * sigmoid(b) of the two halves of `dim`."""
    x = ops.as_tensor(input)
    float_only("glu", x)
    if x.ndim == 0 or x.shape[dim] % 2:
        raise ops._err("glu", f"halving dimension must be even, but dimension {dim} of "
                       f"{ops._fmt(x)} is odd", RuntimeError)
    a, b = chunk(x, 2, dim)
    return ops.mul(a, C.sigmoid(b))


def softsign(input: Tensor) -> Tensor:  # noqa: A002
    x = ops.as_tensor(input)
    return ops.div(x, ops.add(ops.abs(x), 1.0))


def tanhshrink(input: Tensor) -> Tensor:  # noqa: A002
    x = ops.as_tensor(input)
    return ops.sub(x, ops.tanh(x))


def threshold(input: Tensor, threshold: float, value: float,  # noqa: A002
              inplace: bool = False) -> Tensor:
    return _maybe_inplace(lambda x: ops.where(ops.gt(x, threshold), x, ops.cast(value, x.dtype)),
                          input, inplace, "threshold_")


def prelu(input: Tensor, weight: Tensor) -> Tensor:  # noqa: A002
    """x where x > 0, else weight * x, one weight per channel (dim 1) or one for all."""
    x, w = ops.as_tensor(input), ops.as_tensor(weight)
    if w.numel() != 1:
        c = x.shape[1] if x.ndim >= 2 else 1         # torch: a 1-D input is one channel
        if w.ndim != 1 or w.shape[0] != c:
            raise ops._err("prelu", f"weight {ops._fmt(w)} must have one entry per channel "
                           f"({c}) of input {ops._fmt(x)}", RuntimeError)
        if x.ndim >= 2:
            w = ops.reshape(w, (1, c) + (1,) * (x.ndim - 2))
    return ops.where(ops.gt(x, 0), x, ops.mul(w, x))


def _channel_dropout(op: str, x: Tensor, p: float, training: bool, batched_ndim: int) -> Tensor:
    """Zero whole channels: one F.dropout mask entry per (sample, channel)."""
    if p < 0 or p > 1:
        raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
    if x.ndim not in (batched_ndim - 1, batched_ndim):
        raise ops._err(op, f"expects a {batched_ndim - 1}-D or {batched_ndim}-D input, got "
                       f"{ops._fmt(x)}", RuntimeError)
    if not training or p == 0:
        return x
    lead = x.ndim - (batched_ndim - 2)            # (N, C) or (C,)
    mask = _dropout(ones(*x.shape[:lead], *(1,) * (x.ndim - lead), dtype=x.dtype,
                         device=x.device), p, True)
    return ops.mul(x, mask)


def dropout1d(input: Tensor, p: float = 0.5, training: bool = True,  # noqa: A002
              inplace: bool = False) -> Tensor:
    return _channel_dropout("dropout1d", ops.as_tensor(input), p, training, 3)


def dropout2d(input: Tensor, p: float = 0.5, training: bool = True,  # noqa: A002
              inplace: bool = False) -> Tensor:
    return _channel_dropout("dropout2d", ops.as_tensor(input), p, training, 4)
