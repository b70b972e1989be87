"""Elementwise primitives. Operands agree exactly in shape and dtype (the tracer inserts
broadcasts and casts), so every rule here is shape-preserving.

Subgradients at kinks (documented in the README): abs'(0) = 0, sign' = 0, maximum/minimum
split the gradient evenly on ties (and give it whole to both operands where one is NaN, as
PyTorch), sqrt'(0) = inf (as PyTorch), where sends the gradient to the chosen branch only,
comparisons have no gradient. NaN propagates through maximum/minimum (NumPy's rule); sign(NaN)
is 0 (PyTorch's).
"""
from __future__ import annotations

import numpy as np

from . import dtypes as dt
from .batching import batch_elementwise
from .core import Aval
from .primitives import (P, Primitive, cast, cos, div, eq, ge, gt, log, lt, mul, neg,
                         op_error, pow_, sign, sin, sub, tangent_or_zeros, tangent_sum, where,
                         zeros_like)


def _same(name: str, avals: list[Aval], float_only: bool = False) -> Aval:
    a0 = avals[0]
    for a in avals[1:]:
        if a.shape != a0.shape:
            raise op_error(name, "operand shapes differ: " + ", ".join(map(str, avals)))
        if a.dtype is not a0.dtype:
            raise op_error(name, "operand dtypes differ: " + ", ".join(map(str, avals)), TypeError)
    if float_only and not a0.dtype.is_float:
        raise op_error(name, f"needs a floating-point operand, got {a0}", TypeError)
    if a0.dtype is dt.bool_ and name not in ("eq", "ne", "where", "maximum", "minimum"):
        raise op_error(name, f"does not take bool operands, got {a0}", TypeError)
    return a0


def _infer(float_only: bool = False):
    return lambda name, avals: _same(name, avals, float_only)


def _infer_cmp(name, avals):
    a = _same(name, avals)
    return Aval(a.shape, dt.bool_)


def _elementwise(name: str, impl, vjp=None, *, jvp=None, saves=(), save_out=False,
                 float_only=False, infer=None, arity=None, scalar=None,
                 params=None) -> Primitive:
    def default_scalar(sb, *xs, **p):
        return getattr(sb, name)(*xs)
    return P.register(Primitive(
        name, "elementwise", infer or _infer(float_only), impl, vjp=vjp, jvp=jvp, saves=saves,
        save_out=save_out, scalar=scalar or default_scalar, params=params,
        batch=batch_elementwise,
        arity=arity if arity is not None else impl.nin if isinstance(impl, np.ufunc)
        else impl.__code__.co_argcount if hasattr(impl, "__code__") else None))


# -- unary ------------------------------------------------------------------------------------
_elementwise("neg", np.negative, lambda g, i, o, p, n: [neg(g)],
             jvp=lambda t, i, o, p: neg(t[0]), arity=1)
_elementwise("exp", np.exp, lambda g, i, o, p, n: [mul(g, o)],
             jvp=lambda t, i, o, p: mul(t[0], o), save_out=True, float_only=True, arity=1)
_elementwise("log", np.log, lambda g, i, o, p, n: [div(g, i[0])],
             jvp=lambda t, i, o, p: div(t[0], i[0]), saves=(0,), float_only=True, arity=1)
_elementwise("sin", np.sin, lambda g, i, o, p, n: [mul(g, cos(i[0]))],
             jvp=lambda t, i, o, p: mul(t[0], cos(i[0])), saves=(0,), float_only=True, arity=1)
_elementwise("cos", np.cos, lambda g, i, o, p, n: [neg(mul(g, sin(i[0])))],
             jvp=lambda t, i, o, p: neg(mul(t[0], sin(i[0]))), saves=(0,), float_only=True, arity=1)
_elementwise("tanh", np.tanh,
             lambda g, i, o, p, n: [mul(g, sub(1.0, mul(o, o)))],
             jvp=lambda t, i, o, p: mul(t[0], sub(1.0, mul(o, o))), save_out=True, float_only=True,
             arity=1)
_elementwise("sqrt", np.sqrt, lambda g, i, o, p, n: [div(mul(g, 0.5), o)],
             jvp=lambda t, i, o, p: div(mul(t[0], 0.5), o), save_out=True, float_only=True, arity=1)
_elementwise("abs", np.abs, lambda g, i, o, p, n: [mul(g, sign(i[0]))],
             jvp=lambda t, i, o, p: mul(t[0], sign(i[0])), saves=(0,), arity=1)
def _impl_sign(x):
    """PyTorch's sign: NaN and -0.0 give +0.0 (NumPy's gives NaN and -0.0), so abs'(NaN) = 0."""
    x = np.asarray(x)
    if x.dtype.kind != "f" and x.dtype not in dt.HALF_NP:
        return np.sign(x)
    return (x > 0).astype(x.dtype) - (x < 0).astype(x.dtype)


# (a zero gradient, not none: torch's sign gives x.grad zeros, which an optimizer's weight decay
# and momentum then act on, as for floor)
_elementwise("sign", _impl_sign, lambda g, i, o, p, n: [zeros_like(g)],
             jvp=lambda t, i, o, p: None, arity=1,
             scalar=lambda sb, x: sb.select(sb.gt(x, sb.const(0, x)), sb.const(1, x),
                                            sb.select(sb.lt(x, sb.const(0, x)),
                                                      sb.const(-1, x), sb.const(0, x))))


# no_grad=True: an op traced under no_grad (tracer/dispatch.py): no reverse-mode gradient, but
# forward mode passes the tangent through, as PyTorch's forward AD ignores no_grad
_elementwise("stop_gradient", lambda x, no_grad=False: x, lambda g, i, o, p, n: [None],
             jvp=lambda t, i, o, p: t[0] if p.get("no_grad") else None, arity=1,
             scalar=lambda sb, x, no_grad=False: x, params={"no_grad": "bool"},
             infer=lambda name, avals, no_grad=False: _same(name, avals))


def _infer_cast(name, avals, dtype):
    return Aval(avals[0].shape, dtype)


def _vjp_cast(g, ins, out, params, need):
    src = ins[0].dtype
    return [cast(g, src) if src.is_float else None]


def _jvp_cast(t, ins, out, params):
    # float -> float carries the tangent over; to an integer or bool there is none
    return cast(t[0], out.dtype) if out.dtype.is_float and t[0] is not None else None


def _impl_cast(x, dtype):
    """Float to int32/int64 saturates and maps NaN to 0 (defined behaviour on every backend);
    to uint8, int8, int16 through int32, keeping the low bits as torch (0 outside int32)."""
    x = x if hasattr(x, "astype") else np.asarray(x)
    if dtype in dt.SMALL_INT and (x.dtype.kind == "f" or x.dtype in dt.HALF_NP):
        # torch converts through int32 and keeps the low bits (-1.0 -> uint8 255, 300.0 ->
        # 44); outside int32's range (and NaN) x86 gives int32's min: low bits 0
        i = _impl_cast(x, dt.i64)
        return np.where((i >= -2 ** 31) & (i < 2 ** 31), i, 0).astype(dtype.np)
    if x.dtype in dt.HALF_NP and dtype.is_int:
        x = x.astype(np.float32)
    if x.dtype.kind == "f" and dtype.is_int:
        # the int range is [-2**(b-1), 2**(b-1)): both bounds are exact in float64, while
        # float(info.max) rounds up to 2**63 and would overflow the final conversion
        info, f = np.iinfo(dtype.np), x.astype(np.float64)
        high, low = f >= -float(info.min), f < float(info.min)
        out = np.where(high | low | np.isnan(f), 0.0, f).astype(dtype.np)
        out[high] = info.max
        out[low] = info.min
        return out
    return x.astype(dtype.np)


_elementwise("cast", _impl_cast, _vjp_cast, jvp=_jvp_cast, infer=_infer_cast,
             arity=1, params={"dtype": "dtype"},
             scalar=lambda sb, x, dtype: sb.cast(x, dtype))

# -- binary -----------------------------------------------------------------------------------
_elementwise("add", np.add, lambda g, i, o, p, n: [g, g],
             jvp=lambda t, i, o, p: tangent_sum(t[0], t[1]))
_elementwise("sub", np.subtract,
             lambda g, i, o, p, n: [g, neg(g) if n[1] else None],
             jvp=lambda t, i, o, p: tangent_sum(t[0], None if t[1] is None else neg(t[1])))


def _saves_other(need):
    """Binary rules where each operand's gradient reads only the other operand."""
    return (1,) * need[0] + (0,) * need[1]


_elementwise("mul", np.multiply,
             lambda g, i, o, p, n: [mul(g, i[1]) if n[0] else None,
                                    mul(g, i[0]) if n[1] else None], saves=_saves_other,
             jvp=lambda t, i, o, p: tangent_sum(None if t[0] is None else mul(t[0], i[1]),
                                                None if t[1] is None else mul(i[0], t[1])))


def _vjp_div(g, ins, out, params, need):
    # the divisor's gradient is -g x / y^2 from the inputs, as PyTorch's, not -g out / y: the
    # quotient is not saved, so `q = x / y; q += 1` is legal before backward
    x, y = ins
    gx = div(g, y) if need[0] else None
    gy = neg(mul(g, div(div(x, y), y))) if need[1] else None
    return [gx, gy]


def _jvp_div(t, ins, out, params):
    tx, ty = t
    num = tangent_sum(tx, None if ty is None else neg(mul(out, ty)))
    return div(num, ins[1])


_elementwise("div", np.divide, _vjp_div, jvp=_jvp_div,
             saves=lambda need: (0, 1) if need[1] else (1,), float_only=True)
# 1 / x; `s / t` for a Python number s is reciprocal(t) * s, PyTorch's spelling (and rounding)
_elementwise("reciprocal", np.reciprocal,
             lambda g, i, o, p, n: [neg(mul(g, mul(o, o)))], save_out=True, float_only=True,
             jvp=lambda t, i, o, p: neg(mul(t[0], mul(o, o))),
             arity=1, scalar=lambda sb, x: sb.div(sb.const(1, x), x))


def _vjp_pow(g, ins, out, params, need):
    x, y = ins
    gx = gy = None
    if need[0]:   # PyTorch's convention: zero where the exponent is zero
        gx = where(eq(y, 0.0), 0.0, mul(g, mul(y, pow_(x, sub(y, 1.0)))))
    if need[1]:   # and zero where the base is zero and the exponent non-negative; a zero
        # base with a negative exponent gives out * log(0) = -inf (or +inf for -0.0 and odd
        # exponents), as PyTorch
        zero = eq(x, 0.0)
        masked = where(zero, ge(y, 0.0), zero)
        safe = where(masked, 1.0, x)      # keeps log's own gradient finite where masked
        gy = where(masked, 0.0, mul(g, mul(out, log(safe))))
    return [gx, gy]


def _jvp_pow(t, ins, out, params):
    # the VJP's conventions: no x-term where y == 0, no y-term where x == 0 and y >= 0
    x, y = ins
    tx, ty = t
    if tx is not None:
        tx = where(eq(y, 0.0), 0.0, mul(tx, mul(y, pow_(x, sub(y, 1.0)))))
    if ty is not None:
        zero = eq(x, 0.0)
        masked = where(zero, ge(y, 0.0), zero)
        ty = where(masked, 0.0, mul(ty, mul(out, log(where(masked, 1.0, x)))))
    return tangent_sum(tx, ty)


def _impl_pow(x, y):
    """Floats: NumPy's power. Integers: PyTorch's integer power, which wraps on overflow (as
    NumPy's), gives 0 ** 0 = 1, and for a negative exponent gives 0 except for bases 1 and -1
    (NumPy refuses negative integer exponents)."""
    if x.dtype.kind == "f" or x.dtype in dt.HALF_NP:
        return np.power(x, y)
    negative = y < 0
    out = np.power(x, np.where(negative, 0, y).astype(y.dtype))
    odd = (y & 1).astype(bool)
    small = np.where(x == 1, 1, np.where(x == -1, np.where(odd, -1, 1), 0)).astype(x.dtype)
    return np.where(negative, small, out).astype(x.dtype)


_elementwise("pow", _impl_pow, _vjp_pow, jvp=_jvp_pow, saves=(0, 1),
             save_out=lambda need: need[1], arity=2)


def _vjp_minmax(loses):
    # PyTorch's rule: an operand gets nothing where it loses, half on a tie and all of the
    # gradient otherwise, so where either operand is NaN (the NaN wins) both get all of it
    def vjp(g, ins, out, params, need):
        x, y = ins
        half = mul(g, 0.5)
        gx = where(loses(x, y), 0.0, where(eq(x, y), half, g))
        gy = where(loses(y, x), 0.0, where(eq(x, y), half, g))
        return [gx, gy]
    return vjp


def _jvp_minmax(loses):
    # the VJP's split, applied forward: all of a winner's tangent, half of each on a tie
    def jvp(t, ins, out, params):
        x, y = ins
        tie = eq(x, y)
        tx, ty = t
        if tx is not None:
            tx = where(loses(x, y), 0.0, where(tie, mul(tx, 0.5), tx))
        if ty is not None:
            ty = where(loses(y, x), 0.0, where(tie, mul(ty, 0.5), ty))
        return tangent_sum(tx, ty)
    return jvp


_elementwise("maximum", np.maximum, _vjp_minmax(lt), jvp=_jvp_minmax(lt),
             saves=(0, 1),
             scalar=lambda sb, x, y: sb.max(x, y))
_elementwise("minimum", np.minimum, _vjp_minmax(gt), jvp=_jvp_minmax(gt),
             saves=(0, 1),
             scalar=lambda sb, x, y: sb.min(x, y))

for _name, _fn in (("lt", np.less), ("le", np.less_equal), ("gt", np.greater),
                   ("ge", np.greater_equal), ("eq", np.equal), ("ne", np.not_equal)):
    _elementwise(_name, (lambda f: lambda x, y: f(x, y))(_fn), lambda g, i, o, p, n: [None, None],
                 jvp=lambda t, i, o, p: None, infer=_infer_cmp, arity=2,
                 scalar=(lambda op: lambda sb, x, y: sb.cmp(op, x, y))(_name))


# -- ternary ----------------------------------------------------------------------------------
def _infer_where(name, avals):
    c, a, b = avals
    if c.dtype is not dt.bool_:
        raise op_error(name, f"condition must be bool, got {c}", TypeError)
    if not (c.shape == a.shape == b.shape):
        raise op_error(name, f"operand shapes differ: {c}, {a}, {b}")
    if a.dtype is not b.dtype:
        raise op_error(name, f"branch dtypes differ: {a}, {b}", TypeError)
    return a


_elementwise("where", lambda c, x, y: np.where(c, x, y),
             lambda g, i, o, p, n: [None, where(i[0], g, 0.0) if n[1] else None,
                                    where(i[0], 0.0, g) if n[2] else None],
             jvp=lambda t, i, o, p: None if t[1] is None and t[2] is None else
             where(i[0], tangent_or_zeros(t[1], o), tangent_or_zeros(t[2], o)),
             saves=(0,), infer=_infer_where, arity=3,
             scalar=lambda sb, c, x, y: sb.select(c, x, y))

del _name, _fn
