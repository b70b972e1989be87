"""`&`, `|`, `^` and `~` on tensors (torch's bitwise_and/or/xor/not), and `logical_xor`.

Integer operands are computed bit by bit (two's complement), bool ones logically, by the
bitwise primitives (ir/prims_bitwise.py); operands promote as torch's (`bool & int64` is int64,
`int32 & int64` int64, a Python int keeps the tensor's dtype). Floats raise, as in torch.

`<<` and `>>` (bitwise_left_shift / bitwise_right_shift) promote the same way (a bool shifts
as int64; two bools, and floats, raise as in torch); see ir/prims_bitwise.py for the rule on
counts outside [0, bits)."""
from __future__ import annotations

from ..ir import dtypes as dt
from ..ir.primitives import P, bind
from . import ops
from .operands import _err, _fmt, as_tensor
from .tensor_base import TensorBase as Tensor


def _no_floats(op: str, *xs) -> None:
    if any(isinstance(x, Tensor) and x.dtype.is_float or isinstance(x, float) for x in xs):
        raise _err(op, "is not defined for floating-point operands ("
                   + ", ".join(_fmt(x) for x in xs) + "), as in torch", TypeError)


def bitwise_and(a, b) -> Tensor:
    _no_floats("bitwise_and (&)", a, b)
    return ops._binary("bitwise_and", a, b, "any")


def bitwise_or(a, b) -> Tensor:
    _no_floats("bitwise_or (|)", a, b)
    return ops._binary("bitwise_or", a, b, "any")


def bitwise_xor(a, b) -> Tensor:
    _no_floats("bitwise_xor (^)", a, b)
    return ops._binary("bitwise_xor", a, b, "any")


def bitwise_not(x) -> Tensor:
    _no_floats("bitwise_not (~)", x)
    return bind(P.bitwise_not, as_tensor(x))


def _shift(name: str, sym: str, a, b) -> Tensor:
    op = f"{name} ({sym})"
    _no_floats(op, a, b)
    if ops._is_bool(a) and ops._is_bool(b):
        raise _err(op, f"is not defined for two bool operands ({_fmt(a)}, {_fmt(b)}), as in "
                   f"torch", TypeError)
    return ops._binary(name, a, b, "arith")


def bitwise_left_shift(a, b) -> Tensor:
    """a << b: bits shifted out are lost (wraps as torch); a count outside [0, bits) gives 0."""
    return _shift("bitwise_left_shift", "<<", a, b)


def bitwise_right_shift(a, b) -> Tensor:
    """a >> b: arithmetic (sign-filling) for signed dtypes, logical for uint8; a count
    outside [0, bits) gives the sign fill (0 or -1)."""
    return _shift("bitwise_right_shift", ">>", a, b)


def rlshift(a, b) -> Tensor:
    """b << a (Tensor.__rlshift__: `3 << t`)."""
    return bitwise_left_shift(b, a)


def rrshift(a, b) -> Tensor:
    return bitwise_right_shift(b, a)


def logical_xor(a, b) -> Tensor:
    """True where exactly one of a, b is nonzero (any dtypes, as torch)."""
    return ops.ne(ops.cast(as_tensor(a), dt.bool_), ops.cast(as_tensor(b), dt.bool_))
