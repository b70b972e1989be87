"""Bitwise and, or, xor and not of integer and bool tensors: torch's `&`, `|`, `^` and `~`
(on bools they are the logical ops). Two's complement, as NumPy and torch; floats are refused.
Each lowers to one instruction (LLVM `and`/`or`/`xor`, C's `& | ^ ~`, `!` for a C bool). No
gradients: their operands are never floats.

And the shifts of integer tensors, torch's `<<` and `>>`: arithmetic to the right for signed
dtypes, logical for uint8; a count outside [0, bits) (negative ones too) gives 0 to the left
and the sign fill to the right, as torch's CPU kernels (LLVM and C leave those undefined, so
the scalar rules select them)."""
from __future__ import annotations

import numpy as np

from .batching import batch_elementwise
from .core import Aval
from .primitives import P, Primitive, op_error


def _infer(name: str, avals: list[Aval]) -> Aval:
    a0 = avals[0]
    for a in avals:
        if a.shape != a0.shape:
            raise op_error(name, "operand shapes differ: " + ", ".join(map(str, avals)))
        if a.dtype is not a0.dtype:
            raise op_error(name, "operand dtypes differ: " + ", ".join(map(str, avals)), TypeError)
    if a0.dtype.is_float:
        raise op_error(name, f"needs integer or bool operands, got {a0}", TypeError)
    return a0


def _infer_shift(name: str, avals: list[Aval]) -> Aval:
    a = _infer(name, avals)
    if not a.dtype.is_int:
        raise op_error(name, f"needs integer operands, got {a}", TypeError)
    return a


def _shift_impl(left: bool):
    def impl(a, b):
        a, b = np.asarray(a), np.asarray(b)
        w = a.dtype.itemsize * 8
        ok = (b >= 0) & (b < w)
        cnt = np.where(ok, b, w - 1).astype(a.dtype)
        if left:
            return np.where(ok, np.left_shift(a, cnt), 0).astype(a.dtype)
        # (NumPy's right shift is arithmetic for signed dtypes: by bits-1 it is the sign fill)
        out = np.right_shift(a, cnt)
        return out if a.dtype.kind == "i" else np.where(ok, out, 0).astype(a.dtype)
    return impl


def _register(name: str, impl, arity: int) -> None:
    P.register(Primitive(name, "elementwise", _infer, impl,
                         vjp=lambda g, i, o, p, n: [None] * arity, jvp=lambda t, i, o, p: None,
                         scalar=lambda sb, *xs: sb.bitwise(name[8:], *xs), arity=arity,
                         batch=batch_elementwise))


_register("bitwise_and", lambda a, b: np.bitwise_and(a, b), 2)
_register("bitwise_or", lambda a, b: np.bitwise_or(a, b), 2)
_register("bitwise_xor", lambda a, b: np.bitwise_xor(a, b), 2)
_register("bitwise_not", lambda a: np.invert(a), 1)

for _name, _left in (("bitwise_left_shift", True), ("bitwise_right_shift", False)):
    P.register(Primitive(_name, "elementwise", _infer_shift, _shift_impl(_left),
                         vjp=lambda g, i, o, p, n: [None, None], jvp=lambda t, i, o, p: None,
                         scalar=(lambda sb, a, b, _d="left" if _left else "right":
                                 sb.shift(_d, a, b)),
                         arity=2, batch=batch_elementwise))
