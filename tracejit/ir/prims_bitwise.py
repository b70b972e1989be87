"""Bitwise and, or, xor and not of integer and bool tensors: torch's `&`, `|`, `^` and `~`
(on bools they are the logical ops). Two's complement, as NumPy and torch; floats are refused.
Each lowers to one instruction (LLVM `and`/`or`/`xor`, C's `& | ^ ~`, `!` for a C bool). No
gradients: their operands are never floats."""
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


def _register(name: str, impl, arity: int) -> None:
    P.register(Primitive(name, "elementwise", _infer, impl,
                         vjp=lambda g, i, o, p, n: [None] * arity, jvp=lambda t, i, o, p: None,
                         scalar=lambda sb, *xs: sb.bitwise(name[8:], *xs), arity=arity,
                         batch=batch_elementwise))


_register("bitwise_and", lambda a, b: np.bitwise_and(a, b), 2)
_register("bitwise_or", lambda a, b: np.bitwise_or(a, b), 2)
_register("bitwise_xor", lambda a, b: np.bitwise_xor(a, b), 2)
_register("bitwise_not", lambda a: np.invert(a), 1)
