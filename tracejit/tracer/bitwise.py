"""`&`, `|`, `^` and `~` on tensors, and `logical_xor`. On bools they are the logical ops (torch's
answer too). On integers torch computes them bit by bit; tracejit has no bitwise primitives yet,
so integer and float operands raise naming the op rather than give a logical answer silently
(`tj.tensor([6]) & 3` is 2 in torch, and was True here)."""
from __future__ import annotations

import numpy as np

from ..ir import dtypes as dt
from . import ops
from .operands import _err, _fmt
from .tensor_base import TensorBase as Tensor


def _is_bool(x) -> bool:
    return x.dtype is dt.bool_ if isinstance(x, Tensor) else isinstance(x, (bool, np.bool_))


def _bools(op: str, *xs) -> None:
    if all(_is_bool(x) for x in xs):
        return
    kinds = ", ".join(_fmt(x) for x in xs)
    if any(isinstance(x, Tensor) and x.dtype.is_float or isinstance(x, float) for x in xs):
        raise _err(op, f"is not defined for floating-point operands ({kinds}), as in torch",
                   TypeError)
    raise _err(op, f"on integer operands ({kinds}) would be bitwise, which tracejit does not "
               f"support yet; on bool tensors it is the logical op (compare first, e.g. "
               f"(x > 0) & (y > 0))", NotImplementedError)


def bitwise_and(a, b) -> Tensor:
    _bools("bitwise_and (&)", a, b)
    return ops.logical_and(a, b)


def bitwise_or(a, b) -> Tensor:
    _bools("bitwise_or (|)", a, b)
    return ops.logical_or(a, b)


def bitwise_xor(a, b) -> Tensor:
    _bools("bitwise_xor (^)", a, b)
    return logical_xor(a, b)


def bitwise_not(x) -> Tensor:
    _bools("bitwise_not (~)", x)
    return ops.logical_not(x)


def logical_xor(a, b) -> Tensor:
    """True where exactly one of a, b is nonzero (any dtypes, as torch)."""
    return ops.ne(ops.cast(ops.as_tensor(a), dt.bool_), ops.cast(ops.as_tensor(b), dt.bool_))
