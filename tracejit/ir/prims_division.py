"""Floor division, remainder and fmod: Python's sign rule (as NumPy and PyTorch), the same on
every backend.

- floor_divide rounds the quotient toward -inf; remainder has the sign of the divisor
  (a == b * (a // b) + a % b); fmod truncates, so its result has the sign of the dividend.
- Floats follow NumPy's `npy_divmod` step for step (fmod, then an exact correction), so the
  generated code gives NumPy's bits, signed zeros included.
- Integer division by zero gives 0 (NumPy's answer; PyTorch's CPU kernel raises instead) and
  int_min // -1 wraps to int_min: a hardware division would trap (SIGFPE) on both, so the
  scalar rules never divide by 0 or -1.
- Gradients as PyTorch: floor_divide has none (zero), remainder passes g to a and
  -g * floor(a / b) to b, fmod passes g to a and -g * trunc(a / b) to b.
"""
from __future__ import annotations

import numpy as np

from . import dtypes as dt
from .batching import batch_elementwise
from .core import Aval
from .primitives import (P, Primitive, bind, div, mul, neg, op_error, sub, tangent_sum,
                         zeros_like)


def _infer(name: str, avals: list[Aval]) -> Aval:
    a, b = avals
    if a.shape != b.shape:
        raise op_error(name, f"operand shapes differ: {a}, {b}")
    if a.dtype is not b.dtype:
        raise op_error(name, f"operand dtypes differ: {a}, {b}", TypeError)
    if not (a.dtype.is_float or a.dtype.is_int):
        raise op_error(name, f"needs numeric operands, got {a}", TypeError)
    return a


# -- scalar rules (backend-neutral: they use the scalar builder's vocabulary) -----------------
def _and(sb, c1, c2):
    return sb.select(c1, c2, sb.literal(False, dt.bool_))


def _int_parts(sb, a, b):
    """Truncated quotient and remainder with a divisor that can never trap (0 and -1 become
    1), and whether Python's rule moves them (remainder nonzero, signs differ)."""
    zero, one = sb.const(0, b), sb.const(1, b)
    bad = sb.cmp("eq", b, zero)
    if b.dtype.signed:                  # (uint8 has no -1: its 255 divides as 255)
        bad = sb.select(bad, sb.literal(True, dt.bool_), sb.cmp("eq", b, sb.const(-1, b)))
    safe = sb.select(bad, one, b)
    q, r = sb.tdiv(a, safe), sb.trem(a, safe)
    fix = _and(sb, sb.cmp("ne", r, zero), sb.cmp("ne", sb.lt(r, zero), sb.lt(b, zero)))
    return q, r, fix


def _float_divmod(sb, a, b):
    """NumPy's npy_divmod: (floor quotient, remainder) for floats."""
    zero = sb.const(0, a)
    mod = sb.fmod(a, b)
    quo = sb.div(sb.sub(a, mod), b)
    fix = _and(sb, sb.cmp("ne", mod, zero), sb.cmp("ne", sb.lt(b, zero), sb.lt(mod, zero)))
    quo = sb.select(fix, sb.sub(quo, sb.const(1, a)), quo)
    # a zero remainder takes the sign of b
    mod = sb.select(sb.cmp("ne", mod, zero), sb.select(fix, sb.add(mod, b), mod),
                    sb.select(sb.lt(b, zero), sb.const(-0.0, a), zero))
    fl = sb.floor(quo)
    fl = sb.select(sb.gt(sb.sub(quo, fl), sb.const(0.5, a)), sb.add(fl, sb.const(1, a)), fl)
    # a zero quotient takes the sign of a / b (finite here: |a| < |b|), so multiplying by +0
    # gives the signed zero
    true_q = sb.div(a, b)
    fl = sb.select(sb.cmp("ne", quo, zero), fl, sb.mul(true_q, zero))
    by_zero = sb.cmp("eq", b, zero)
    return sb.select(by_zero, true_q, fl), sb.select(by_zero, sb.fmod(a, b), mod)


def _floor_divide_scalar(sb, a, b):
    if a.dtype.is_float:
        return _float_divmod(sb, a, b)[0]
    q, _, fix = _int_parts(sb, a, b)
    q = sb.select(fix, sb.sub(q, sb.const(1, a)), q)
    if a.dtype.signed:
        q = sb.select(sb.cmp("eq", b, sb.const(-1, b)), sb.neg(a), q)     # int_min wraps
    return sb.select(sb.cmp("eq", b, sb.const(0, b)), sb.const(0, a), q)


def _remainder_scalar(sb, a, b):
    if a.dtype.is_float:
        return _float_divmod(sb, a, b)[1]
    _, r, fix = _int_parts(sb, a, b)
    r = sb.select(fix, sb.add(r, b), r)
    return sb.select(sb.cmp("eq", b, sb.const(0, b)), sb.const(0, a), r)


def _fmod_scalar(sb, a, b):
    if a.dtype.is_float:
        return sb.fmod(a, b)
    _, r, _ = _int_parts(sb, a, b)
    return sb.select(sb.cmp("eq", b, sb.const(0, b)), sb.const(0, a), r)


# -- gradients --------------------------------------------------------------------------------
def floor_divide(a, b): return bind(P.floor_divide, a, b)
def fmod(a, b): return bind(P.fmod, a, b)


def _vjp_floor_divide(g, ins, out, params, need):
    return [zeros_like(g) if need[0] else None, zeros_like(g) if need[1] else None]


def _vjp_remainder(g, ins, out, params, need):
    a, b = ins
    return [g, neg(mul(g, floor_divide(a, b))) if need[1] else None]


def _vjp_fmod(g, ins, out, params, need):
    a, b = ins
    # trunc(a / b) == (a - fmod(a, b)) / b, exactly an integer up to rounding
    return [g, neg(mul(g, div(sub(a, fmod(a, b)), b))) if need[1] else None]


def _jvp_remainder(t, ins, out, params):
    a, b = ins
    return tangent_sum(t[0], None if t[1] is None else neg(mul(t[1], floor_divide(a, b))))


def _jvp_fmod(t, ins, out, params):
    a, b = ins
    return tangent_sum(t[0], None if t[1] is None else
                       neg(mul(t[1], div(sub(a, fmod(a, b)), b))))


def _register(name, impl, vjp, jvp, scalar, saves):
    P.register(Primitive(name, "elementwise", _infer, impl, vjp=vjp, jvp=jvp, saves=saves,
                         scalar=scalar, arity=2,
                         batch=batch_elementwise))


_register("floor_divide", lambda a, b: np.floor_divide(a, b), _vjp_floor_divide,
          lambda t, i, o, p: None,
          _floor_divide_scalar, ())
_register("remainder", lambda a, b: np.remainder(a, b), _vjp_remainder, _jvp_remainder,
          _remainder_scalar,
          (0, 1))
_register("fmod", lambda a, b: np.fmod(a, b), _vjp_fmod, _jvp_fmod, _fmod_scalar, (0, 1))
