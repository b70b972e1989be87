"""Shared pieces of the distributions: parameters as broadcast tensors, probs <-> logits, sums
over the rightmost dims, and the standard draws from tracejit's generator."""
from __future__ import annotations

import numbers

import numpy as np

from ..ir import dtypes as dt
from ..ir.core import user_location
from ..ir.dtype_info import finfo
from ..tracer import composites as C
from ..tracer import rng
from ..tracer.creation import tensor as _tensor
from ..tracer.state import enable_grad
from ..tracer.tensor import Tensor


def is_number(x) -> bool:
    return isinstance(x, numbers.Number) and not isinstance(x, bool) or \
        isinstance(x, (bool, np.bool_))


def as_param(x, like: Tensor | None = None, name: str = "value") -> Tensor:
    """A parameter as a tensor: numbers take the dtype of `like` (float32 without one)."""
    if isinstance(x, Tensor):
        return x
    if isinstance(x, (numbers.Number, np.number, np.ndarray, list, tuple)):
        d = like.dtype if like is not None and like.dtype.is_float else None
        t = _tensor(x, dtype=d)
        return t if t.dtype.is_float or d is not None else t.float()
    raise TypeError(f"{name}: expected a tensor or a number, got {type(x).__name__} "
                    f"(at {user_location()})")


def broadcast_shape(*shapes, op: str = "broadcast") -> tuple[int, ...]:
    try:
        return tuple(int(n) for n in np.broadcast_shapes(*[tuple(s) for s in shapes]))
    except ValueError:
        raise ValueError(f"{op}: shapes {', '.join(str(list(s)) for s in shapes)} do not "
                         f"broadcast (at {user_location()})") from None


def broadcast_all(*values, op: str = "distribution") -> tuple[Tensor, ...]:
    """torch.distributions.utils.broadcast_all: tensors and numbers to tensors of one shape;
    numbers take the dtype of the first floating tensor."""
    like = next((v for v in values if isinstance(v, Tensor) and v.dtype.is_float), None)
    ts = [as_param(v, like, op) for v in values]
    shape = broadcast_shape(*[t.shape for t in ts], op=op)
    return tuple(t if tuple(t.shape) == shape else t.expand(shape) for t in ts)


def sum_rightmost(x: Tensor, n: int) -> Tensor:
    """Sum of the `n` rightmost dims."""
    return x if n <= 0 else x.reshape(*x.shape[:x.ndim - n], -1).sum(-1)


def clamp_probs(p: Tensor) -> Tensor:
    eps = finfo(p.dtype).eps
    return p.clamp(min=eps, max=1 - eps)


def probs_to_logits(probs: Tensor, is_binary: bool = False) -> Tensor:
    p = clamp_probs(probs)
    return p.log() - (-p).log1p() if is_binary else p.log()


def logits_to_probs(logits: Tensor, is_binary: bool = False) -> Tensor:
    return C.sigmoid(logits) if is_binary else C.softmax(logits, -1)


def draw(shape: tuple[int, ...], like: Tensor, normal: bool, generator=None) -> Tensor:
    """Standard normal or uniform [0, 1) numbers of `shape` in like's dtype, from the
    default generator (tj.manual_seed) or `generator`."""
    d = like.dtype if like.dtype.is_float else dt.f32
    make = rng.randn if normal else rng.rand
    dev = None if like._traced else like.device
    return make(tuple(shape), dtype=d, device=dev, generator=generator)


def tiny_uniform(shape, like: Tensor, generator=None) -> Tensor:
    """uniform numbers in (0, 1): 0 moved to the dtype's smallest normal number, so their
    logarithm is finite."""
    return draw(shape, like, False, generator).clamp(min=finfo(like.dtype).tiny)


class lazy_property:                       # noqa: N801  (torch's name)
    """computed on first use and then kept on the instance (probs from logits, ...); with
    gradients on, as the first use may be under no_grad (sample) and later ones not."""

    def __init__(self, fn) -> None:
        self.fn = fn
        self.__doc__ = fn.__doc__

    def __get__(self, obj, cls=None):
        if obj is None:
            return self
        with enable_grad():
            value = self.fn(obj)
        obj.__dict__[self.fn.__name__] = value
        return value
