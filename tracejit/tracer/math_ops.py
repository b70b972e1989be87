"""Everyday elementwise math of torch composed from primitives: rounding (round half to even,
floor, ceil, trunc, frac), log1p/expm1 (exact-compensation formulas), hypot, lerp,
addcmul/addcdiv, nan_to_num, fmax/fmin, logit, xlogy, sinc, deg2rad/rad2deg, clamp_min/max,
float_power, true_divide, heaviside; aminmax and diag_embed.

Rounding is exact: fmod(x, 1) is exact in IEEE arithmetic, so trunc(x) = x - fmod(x, 1) is
too, and the other roundings step from it by one. Where a composition's own derivative would
be inexact or NaN (log1p's x log(u) / (u - 1)), `_grad_as` gives the value computed without
gradient the derivative torch's formula states."""
from __future__ import annotations

import functools
import math
from collections import namedtuple

import numpy as np

from ..ir import dtypes as dt
from . import ops, selection
from .composites import composite, log1p_value
from .series_ops import isfinite, isnan
from .tensor_base import TensorBase as Tensor

__all__ = ["round", "floor", "ceil", "trunc", "fix", "frac", "log1p", "expm1", "hypot", "lerp",
           "addcmul", "addcdiv", "nan_to_num", "fmax", "fmin", "aminmax", "diag_embed",
           "logit", "xlogy", "sinc", "deg2rad", "rad2deg", "clamp_min", "clamp_max",
           "float_power", "true_divide", "heaviside"]

sg = ops.stop_gradient


def _float(x, op: str) -> Tensor:
    """x as a float tensor: integers and bools give float32, as torch's unary float ops."""
    x = ops.as_tensor(x)
    return x if x.dtype.is_float else ops.cast(x, dt.f32)


def _opmath(fn=None, *, wide: bool = False):
    """Compute float16/bfloat16 inputs in float32 and round the result once (torch's opmath:
    sinc(f16 60000) would overflow pi x, hypot lose a bit). wide=True: float32 too, in
    float64 (log1p/expm1's compensated formulas are ~2 ulp; rounded from float64 they are
    within half an ulp, as torch's float32 kernels)."""
    if fn is None:
        return functools.partial(_opmath, wide=wide)
    narrow = (*dt.HALF, dt.f32) if wide else dt.HALF
    to = dt.f64 if wide else dt.f32

    def low_of(a):      # (wide: integer inputs give float32, computed in float64 too)
        return a.dtype if a.dtype in narrow else dt.f32 if wide and not a.dtype.is_float \
            else None

    @functools.wraps(fn)
    def f(*args, **kwargs):
        low = next((low_of(a) for a in args if isinstance(a, Tensor) and low_of(a)), None)
        if low is None:
            return fn(*args, **kwargs)
        up = [ops.cast(a, to) if isinstance(a, Tensor) and low_of(a) else a for a in args]
        return ops.cast(fn(*up, **kwargs), low)
    return f


def _grad_as(value: Tensor, xs, dfn=None) -> Tensor:
    """`value` (computed from stop_gradient inputs) with the gradient g * d_i to each xs[i],
    where (d_1, ...) = dfn(y_1, ...) are torch's derivative formulas (dfn None: 0).

    value - t_i d_i(y) with t_i = sx_i - x_i: forward t_i is exactly +0 (so value keeps its
    sign of zero) and dF/dx_i = d_i. The d_i read y_i = x_i + t_i / 2 (= x_i), not x_i: the
    product's own term t d'(y) then adds half of d' to the second derivative and the chain
    through y the other half, so double backward and hessians are right too. Where x_i or d_i
    is not finite the term is masked: the gradient there is 0 (torch's is inf or NaN at such
    poles)."""
    if dfn is None:
        return value
    ts, ys = [], []
    for x in xs:
        sx = sg(x)
        ok = isfinite(sx)
        t = ops.sub(ops.where(ok, sx, 0.0), ops.where(ok, x, 0.0))    # +0, gradient -g
        ts.append(t)
        ys.append(ops.add(x, ops.mul(t, 0.5)))
    out = value
    for t, d in zip(ts, dfn(*ys)):
        if isinstance(d, Tensor):
            d = ops.where(isfinite(sg(d)), d, 0.0)
        z = ops.add(ops.mul(t, d), 0.0)                               # +0, even when d < 0
        out = ops.sub(out, z)
    return out


def _ZERO(*ys) -> list:
    return [0.0] * len(ys)


# -- rounding -----------------------------------------------------------------------------------
def _keep_zero_sign(r: Tensor, x: Tensor) -> Tensor:
    """A zero result with x's sign (torch: round(-0.4) = -0.0), from x * 0."""
    return ops.where(ops.eq(r, 0), ops.mul(x, 0.0), r)


def _round_core(x: Tensor, mode: str) -> Tensor:
    """floor/ceil/trunc/round (half to even) of a float tensor without gradient, exactly."""
    f = ops.fmod(x, 1.0)                  # exact; the sign of x
    t = ops.sub(x, f)                     # trunc(x), exact
    if mode == "floor":
        r = ops.sub(t, ops.cast(ops.lt(f, 0), x.dtype))
    elif mode == "ceil":
        r = ops.add(t, ops.cast(ops.gt(f, 0), x.dtype))
    elif mode == "round":
        a = ops.abs(f)
        odd = ops.ne(ops.fmod(t, 2.0), 0)
        up = ops.logical_or(ops.gt(a, 0.5), ops.logical_and(ops.eq(a, 0.5), odd))
        r = ops.where(up, ops.add(t, ops.sign(x)), t)
    else:
        r = t
    return ops.where(isfinite(x), _keep_zero_sign(r, x), x)     # inf and NaN unchanged


def _rounding(mode: str, node: str):
    @composite(node)
    def op(input):  # noqa: A002
        x = ops.as_tensor(input)
        if x.dtype is dt.bool_:
            raise ops._err(mode, f"not implemented for bool input {ops._fmt(x)}",
                           NotImplementedError)
        if not x.dtype.is_float:          # integers round to themselves (a copy, as torch)
            return ops.add(x, 0)
        return _grad_as(_round_core(sg(x), mode), [x], _ZERO)
    op.__name__ = op.__qualname__ = mode
    op.__doc__ = f"torch.{mode}: exact, with a zero gradient."
    return op


floor = _rounding("floor", "FloorBackward0")
ceil = _rounding("ceil", "CeilBackward0")
trunc = _rounding("trunc", "TruncBackward0")


def _trunc_division(a, b) -> Tensor:
    """torch.div(a, b, rounding_mode="trunc") with a float result: trunc(a / b) from the
    values, zero gradients to both operands (torch's; a chain through a / b would give
    0 * inf = NaN where b is 0)."""
    q = ops.div(*(sg(v) if isinstance(v, Tensor) else v for v in (a, b)))
    return _grad_as(_round_core(q, "trunc"),
                    [v for v in (a, b) if isinstance(v, Tensor) and v.dtype.is_float], _ZERO)


ops.trunc_division = _trunc_division
fix = trunc
_round0 = _rounding("round", "RoundBackward0")


def round(input, *, decimals: int = 0) -> Tensor:  # noqa: A001, A002
    """torch.round: half to even (as NumPy); decimals=d rounds x * 10^d (x / 10^-d for d < 0)
    in x's dtype, float16/bfloat16 in float32, as torch's kernel."""
    if decimals == 0:
        return _round0(input)
    x = ops.as_tensor(input)
    if not x.dtype.is_float:
        raise ops._err("round", f"decimals= is not implemented for integer input {ops._fmt(x)}",
                       NotImplementedError)
    return _round_decimals(x, int(decimals))


@_opmath       # (in float16, 1.6504 * 10 rounded to 16.5 and then to 1.6; torch: 1.7)
@composite("RoundBackward1")
def _round_decimals(x, decimals: int):
    p = float(10.0 ** abs(decimals))
    s = sg(x)
    r = ops.div(_round_core(ops.mul(s, p), "round"), p) if decimals > 0 else \
        ops.mul(_round_core(ops.div(s, p), "round"), p)
    return _grad_as(r, [x], _ZERO)


@composite("FracBackward0")
def frac(input) -> Tensor:  # noqa: A002
    """x - trunc(x), with x's sign; the gradient passes (as torch)."""
    x = ops.as_tensor(input)
    if not x.dtype.is_float:
        raise ops._err("frac", f"not implemented for integer input {ops._fmt(x)}",
                       NotImplementedError)
    return ops.sub(x, trunc(x))


# -- log1p, expm1 -------------------------------------------------------------------------------
@_opmath(wide=True)
@composite("Log1PBackward0")
def log1p(input) -> Tensor:  # noqa: A002
    """log(1 + x), accurate for tiny x: with u = 1 + x rounded, log(u) * (x / (u - 1)) (exact
    compensation; x where u == 1). Gradient g / (1 + x), as torch."""
    x = _float(input, "log1p")
    s = sg(x)
    v = ops.where(ops.eq(s, np.inf), s, log1p_value(s))       # inf * inf / inf
    return _grad_as(v, [x], lambda y: [ops.div(1.0, ops.add(y, 1.0))])


@_opmath(wide=True)
@composite("Expm1Backward0")
def expm1(input) -> Tensor:  # noqa: A002
    """exp(x) - 1, accurate for tiny x: with u = exp(x), (u - 1) * (x / log(u)) (x where
    u == 1, -1 where u - 1 == -1). Gradient g * (result + 1), as torch."""
    x = _float(input, "expm1")
    s = sg(x)
    u = ops.exp(s)
    um1 = ops.sub(u, 1.0)
    one = ops.eq(u, 1.0)
    lu = ops.log(ops.where(one, 2.0, u))
    v = ops.mul(um1, ops.div(s, ops.where(one, 1.0, lu)))
    v = ops.where(one, s, ops.where(ops.eq(um1, -1.0), -1.0, v))
    v = ops.where(ops.eq(u, np.inf), u, v)            # inf * x / inf
    return _grad_as(v, [x], lambda y: [ops.exp(y)])      # = result + 1


# -- binary math --------------------------------------------------------------------------------
def _promote_float(op: str, *xs) -> list:
    d = ops.result_dtype(*xs)
    if not d.is_float:
        d = dt.f32
    like = next((x for x in xs if isinstance(x, Tensor)), None)
    return [ops.as_tensor(x, d, like) if not isinstance(x, Tensor) else ops.cast(x, d)
            for x in xs]


@_opmath
@composite("HypotBackward0")
def hypot(input, other) -> Tensor:  # noqa: A002
    """sqrt(a^2 + b^2) without overflow or underflow: m sqrt(1 + (n/m)^2), m = max(|a|, |b|);
    inf if either is inf (even with a NaN). Gradients g a / r and g b / r, as torch."""
    a, b = ops.as_tensor(input), ops.as_tensor(other)
    if not (a.dtype.is_float and b.dtype.is_float):
        raise ops._err("hypot", f"expects floating point inputs, got {ops._fmt(a)} and "
                       f"{ops._fmt(b)}", NotImplementedError)
    a, b = _promote_float("hypot", a, b)
    r = _hypot_value(sg(a), sg(b))
    return _grad_as(r, [a, b], lambda ya, yb: [ops.div(ya, _hypot_value(ya, yb)),
                                               ops.div(yb, _hypot_value(ya, yb))])


def _hypot_value(a: Tensor, b: Tensor) -> Tensor:
    sa, sb = ops.abs(a), ops.abs(b)
    m, n = ops.maximum(sa, sb), ops.minimum(sa, sb)
    big = ops.logical_and(ops.gt(m, 0), isfinite(m))
    q = ops.div(n, ops.where(big, m, 1.0))
    r = ops.where(big, ops.mul(m, ops.sqrt(ops.add(ops.mul(q, q), 1.0))), ops.add(m, n))
    return ops.where(ops.logical_or(ops.eq(sa, np.inf), ops.eq(sb, np.inf)), np.inf, r)


def _lerp_name(start, end, weight):
    return "LerpBackward1" if isinstance(weight, Tensor) else "LerpBackward0"


@composite(_lerp_name)
def lerp(input, end, weight) -> Tensor:  # noqa: A002
    """start + w (end - start) for w < 0.5, end - (end - start)(1 - w) otherwise (torch's
    formula, exact at w = 0 and 1)."""
    s, e = ops.as_tensor(input), ops.as_tensor(end)
    if s.dtype is not e.dtype:
        raise ops._err("lerp", f"expected dtype {s.dtype.name} for `end` but got dtype "
                       f"{e.dtype.name}", RuntimeError)
    if not s.dtype.is_float:
        raise ops._err("lerp", f"not implemented for {ops._fmt(s)}", NotImplementedError)
    if isinstance(weight, Tensor) and weight.dtype is not s.dtype:
        raise ops._err("lerp", f"expected dtype {s.dtype.name} for `weight` but got dtype "
                       f"{weight.dtype.name}", RuntimeError)
    w = weight if isinstance(weight, Tensor) else ops.as_tensor(float(weight), s.dtype, s)
    d = ops.sub(e, s)
    lo = ops.add(s, ops.mul(w, d))
    hi = ops.sub(e, ops.mul(d, ops.sub(1.0, w)))
    # |w| < 0.5 as torch's kernel (NaN weights take the second branch)
    return ops.where(ops.lt(ops.abs(w), 0.5), lo, hi)


def addcmul(input, tensor1, tensor2, *, value=1) -> Tensor:  # noqa: A002
    """input + value * tensor1 * tensor2 (torch's order: (value * t1) * t2)."""
    return ops.add(input, ops.mul(ops.mul(tensor1, value) if value != 1 else tensor1, tensor2))


def addcdiv(input, tensor1, tensor2, *, value=1) -> Tensor:  # noqa: A002
    """input + value * tensor1 / tensor2; integer tensor1/tensor2 raise, as torch."""
    t1, t2 = ops.as_tensor(tensor1), ops.as_tensor(tensor2)
    if not t1.dtype.is_float and not t2.dtype.is_float:
        raise ops._err("addcdiv", f"integer division of {ops._fmt(t1)} by {ops._fmt(t2)} is "
                       "not supported; use true_divide or floor_divide", RuntimeError)
    return ops.add(input, ops.div(ops.mul(t1, value) if value != 1 else t1, t2))


def nan_to_num(input, nan=0.0, posinf=None, neginf=None) -> Tensor:  # noqa: A002
    """NaN -> nan, inf -> posinf, -inf -> neginf (defaults: the dtype's largest and smallest
    finite values); integers unchanged. The gradient passes where x is finite."""
    x = ops.as_tensor(input)
    if not x.dtype.is_float:
        return ops.add(x, 0) if x.dtype is not dt.bool_ else ops.eq(x, True)
    fi = np.finfo(np.float32 if x.dtype is dt.bf16 else x.dtype.np)
    if x.dtype is dt.bf16:          # bfloat16's range: float32's exponent, 8 mantissa bits
        fi = type("bf16", (), {"max": 3.3895313892515355e38, "min": -3.3895313892515355e38})
    hi = float(fi.max) if posinf is None else posinf
    lo = float(fi.min) if neginf is None else neginf
    y = ops.where(isnan(x), 0.0 if nan is None else float(nan), x)
    y = ops.where(ops.eq(x, np.inf), hi, y)
    return ops.where(ops.eq(x, -np.inf), lo, y)


def _fminmax(op: str, wins):
    def f(input, other) -> Tensor:  # noqa: A002
        a, b = ops.as_tensor(input), ops.as_tensor(other)
        d = ops.result_dtype(a, b)
        a, b = ops.cast(a, d), ops.cast(b, d)
        take_a = ops.logical_or(wins(a, b), isnan(b))   # ties to a, as torch's gradient
        return ops.where(take_a, a, b)
    f.__name__ = f.__qualname__ = op
    f.__doc__ = f"torch.{op}: NaN-ignoring elementwise {op[1:]}imum (NaN only if both are)."
    return f


fmax = _fminmax("fmax", ops.ge)
fmin = _fminmax("fmin", ops.le)

_AMinMax = namedtuple("aminmax", ["min", "max"])


def aminmax(input, *, dim=None, keepdim: bool = False):  # noqa: A002
    """(amin, amax) over dim (all elements when None), as torch.return_types.aminmax."""
    x = ops.as_tensor(input)
    if x.numel() == 0 and (dim is None or x.shape[dim] == 0):
        raise ops._err("aminmax", f"cannot compute aminmax of an empty {ops._fmt(x)}",
                       RuntimeError)
    return _AMinMax(selection.amin(x, dim, keepdim), selection.amax(x, dim, keepdim))


def diag_embed(input, offset: int = 0, dim1: int = -2, dim2: int = -1) -> Tensor:  # noqa: A002
    """The last dim of input as the diagonal `offset` of new dims dim1, dim2 (torch's)."""
    x = ops.as_tensor(input)
    nd = x.ndim + 1
    d1, d2 = (d + nd if d < 0 else d for d in (dim1, dim2))
    if not (0 <= d1 < nd and 0 <= d2 < nd) or d1 == d2:
        raise ops._err("diag_embed", f"dim1={dim1}, dim2={dim2} are not two distinct dims of "
                       f"the {nd}-d result for {ops._fmt(x)}", IndexError if d1 != d2 else
                       RuntimeError)
    k = abs(offset)
    length = x.shape[-1] if x.ndim else 1
    n = length + k
    xp = ops.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, k)])        # (..., n)
    i, j = np.arange(n)[:, None], np.arange(n)[None, :]
    if offset >= 0:
        mask, vals = (j == i + k), ops.unsqueeze(xp, -1)        # value x[i] at (i, i + k)
    else:
        mask, vals = (i == j + k), ops.unsqueeze(xp, -2)        # value x[j] at (j + k, j)
    out = ops.where(ops.as_tensor(mask, like=x, const=True), vals, ops.as_tensor(0, x.dtype, x))
    from .views import movedim
    return movedim(out, (nd - 2, nd - 1), (d1, d2))


# -- one-liners ---------------------------------------------------------------------------------
@_opmath
@composite("LogitBackward0")
def logit(input, eps=None) -> Tensor:  # noqa: A002
    """log(x / (1 - x)), x clamped to [eps, 1 - eps] first when eps is given (gradient 0
    outside, as torch)."""
    x = _float(input, "logit")
    if eps is not None:
        lo, hi = float(eps), 1.0 - float(eps)
        inside = ops.logical_and(ops.ge(x, lo), ops.le(x, hi))
        z = ops.where(inside, x, ops.where(ops.lt(x, lo), lo, ops.where(ops.gt(x, hi), hi, x)))
    else:
        z = x
    return ops.log(ops.div(z, ops.sub(1.0, z)))


def xlogy(input, other) -> Tensor:  # noqa: A002
    """x * log(y), 0 where x == 0 (NaN where y is NaN), as torch; torch's gradients: log(y) to
    x (0 where x and y are 0; 0, not -inf, where only y is), x / y to y."""
    x, y = _promote_float("xlogy", input, other)
    sx = sg(x)
    zero = ops.eq(sx, 0)
    ys = ops.where(zero, 1.0, y)              # no -inf * 0 in the unused branch's gradient
    r = ops.where(zero, 0.0, ops.mul(sx, ops.log(ys)))
    r = ops.where(isnan(y), float("nan"), r)
    return _grad_as(r, [x], lambda yx: [_xlogy_dx(yx, y)])


def _xlogy_dx(x: Tensor, y: Tensor) -> Tensor:
    """torch's d/dx xlogy: log(y), 0 where x and y are both 0."""
    both = ops.logical_and(ops.eq(sg(x), 0), ops.eq(sg(y), 0))
    return ops.where(both, 0.0, ops.log(ops.where(both, 1.0, y)))


@_opmath
@composite("SincBackward0")
def sinc(input) -> Tensor:  # noqa: A002
    """sin(pi x) / (pi x), 1 at 0; torch's gradient formula (pi x cos(pi x) - sin(pi x)) /
    (pi x^2), 0 at 0 (autodiff of the quotient cancels badly for tiny x)."""
    x = _float(input, "sinc")
    s = sg(x)
    zero = ops.eq(s, 0)
    px = ops.mul(ops.where(zero, 1.0, s), math.pi)
    v = ops.where(zero, 1.0, ops.div(ops.sin(px), px))
    return _grad_as(v, [x], lambda y: [_sinc_dx(y)])


def _sinc_dx(x: Tensor) -> Tensor:
    """torch's formula, (pi x cos(pi x) - sin(pi x)) / (pi x^2), 0 at 0."""
    zero = ops.eq(sg(x), 0)
    xs = ops.where(zero, 1.0, x)
    px = ops.mul(xs, math.pi)
    d = ops.div(ops.sub(ops.mul(px, ops.cos(px)), ops.sin(px)), ops.mul(px, xs))
    return ops.where(zero, 0.0, d)


def deg2rad(input) -> Tensor:  # noqa: A002
    return ops.mul(_float(input, "deg2rad"), math.pi / 180.0)


def rad2deg(input) -> Tensor:  # noqa: A002
    return ops.mul(_float(input, "rad2deg"), 180.0 / math.pi)


def clamp_min(input, min) -> Tensor:  # noqa: A002
    return ops.clip(input, min=min)


def clamp_max(input, max) -> Tensor:  # noqa: A002
    return ops.clip(input, max=max)


def float_power(input, exponent) -> Tensor:  # noqa: A002
    """pow in float64 (torch's float_power)."""
    a = ops.cast(input, dt.f64) if isinstance(input, Tensor) else float(input)
    b = ops.cast(exponent, dt.f64) if isinstance(exponent, Tensor) else float(exponent)
    if not isinstance(a, Tensor) and not isinstance(b, Tensor):
        raise ops._err("float_power", "needs a tensor argument", TypeError)
    if not isinstance(a, Tensor):
        a = ops.as_tensor(a, dt.f64, b)
    return ops.pow(a, b)


def true_divide(input, other) -> Tensor:  # noqa: A002
    return ops.div(input, other)


def heaviside(input, values) -> Tensor:  # noqa: A002
    """1 where x > 0, values where x == 0, else 0 (NaN -> 0); same dtypes required, not
    differentiable (as torch)."""
    x, v = ops.as_tensor(input), ops.as_tensor(values)
    if x.dtype is not v.dtype:
        raise ops._err("heaviside", f"is not yet implemented for tensors with different dtypes "
                       f"({ops._fmt(x)}, {ops._fmt(v)})", RuntimeError)
    x, v = sg(x), sg(v)
    return ops.where(ops.eq(x, 0), v, ops.cast(ops.gt(x, 0), x.dtype))
