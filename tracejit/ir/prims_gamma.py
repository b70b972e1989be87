"""torch.special's gamma-family and Bessel functions as elementwise primitives: digamma,
polygamma (param n >= 1), erfinv, ndtri, erfcx, i0, i0e, i1, i1e and the binary Hurwitz
zeta(s, q). (lgamma is prims_libm.py's: a call to the C library's lgamma.)

Each computes in float64 (float32 and the 16-bit floats widen and round once at the end) by
special_series.py's straight-line algorithms, which the same code runs on NumPy arrays for
eager mode and the interpreter and renders through the LLVM and CUDA scalar builders, so
compiled and eager results agree. Derivatives are torch's:
digamma' = polygamma(1), polygamma(n)' = polygamma(n + 1), erfinv' = sqrt(pi)/2 exp(erfinv^2),
ndtri' = sqrt(2 pi) exp(ndtri^2 / 2), erfcx' = 2 x erfcx - 2/sqrt(pi),
i0' = i1, i0e' = i1e - sign(x) i0e, i1' = i0 - i1/x, i1e' = i0e - i1e (sign(x) + 1/x)
(i1' and i1e' are 0.5 at x = 0)."""
from __future__ import annotations

import math

import numpy as np

from . import dtypes as dt
from . import special_series as S
from .primitives import P, add, bind, div, eq, exp, mul, neg, sign, sub, where
from .prims_elementwise import _elementwise, _same
from .prims_special import _impl_erf, _impl_erfc

_NP = S.NumpyBuilder(_impl_erf, _impl_erfc)


def _numpy(algo):
    """algo on NumPy/CuPy arrays: widened to float64, the result in the input's dtype."""
    def impl(x, **params):
        d = x.dtype
        with np.errstate(all="ignore"):     # every branch is evaluated; selects drop the rest
            r = algo(_NP, x.astype(np.float64), **params)
        return r.astype(d)
    return impl


def _numpy2(algo):
    """A binary algo on NumPy/CuPy arrays, as _numpy."""
    def impl(a, b):
        with np.errstate(all="ignore"):
            return algo(_NP, a.astype(np.float64), b.astype(np.float64)).astype(a.dtype)
    return impl


def _scalar(algo):
    """algo through a code generator's scalar builder, in float64."""
    def scalar(sb, x, **params):
        r = algo(sb, sb.cast(x, dt.f64), **params)
        return sb.cast(r, x.dtype)
    return scalar


def _register(name: str, algo, d, *, uses_out=False, params=None) -> None:
    """d(x, out, params) -> the derivative."""
    infer = None if params is None else lambda nm, avals, **p: _same(nm, avals, True)
    _elementwise(name, _numpy(algo), lambda g, i, o, p, n: [mul(g, d(i[0], o, p))],
                 jvp=lambda t, i, o, p: mul(t[0], d(i[0], o, p)),
                 saves=() if uses_out else (0,), save_out=uses_out, float_only=True,
                 arity=1, scalar=_scalar(algo), params=params, infer=infer)


def _u(name, x, **p):
    return bind(P.get(name), x, **p)


def _digamma(b, x):
    return S.digamma(b, x)


def _polygamma(b, x, n):
    return S.polygamma(b, n, x)


def _bessel(nu: int, scaled: bool):
    return lambda b, x: S.bessel_i(b, nu, x, scaled)


def _d_i1(x, o, p):
    # i0 - i1/x, 0.5 at x = 0
    z = eq(x, 0.0)
    return where(z, 0.5, sub(_u("i0", x), div(_u("i1", x), where(z, 1.0, x))))


def _d_i1e(x, o, p):
    # i0e - i1e (sign(x) + 1/x), 0.5 at x = 0
    z = eq(x, 0.0)
    return where(z, 0.5, sub(_u("i0e", x), mul(_u("i1e", x),
                                               add(sign(x), div(1.0, where(z, 1.0, x))))))


_register("digamma", _digamma, lambda x, o, p: _u("polygamma", x, n=1))
_register("polygamma", _polygamma, lambda x, o, p: _u("polygamma", x, n=p["n"] + 1),
          params={"n": "int"})
_register("erfinv", S.erfinv, lambda x, o, p: mul(exp(mul(o, o)), math.sqrt(math.pi) / 2),
          uses_out=True)
_register("ndtri", S.ndtri, lambda x, o, p: mul(exp(mul(mul(o, o), 0.5)),
                                                 math.sqrt(2.0 * math.pi)), uses_out=True)
_register("erfcx", S.erfcx, lambda x, o, p: sub(mul(mul(x, _u("erfcx", x)), 2.0),
                                                2.0 / math.sqrt(math.pi)))
_register("i0", _bessel(0, False), lambda x, o, p: _u("i1", x))
_register("i0e", _bessel(0, True), lambda x, o, p: sub(_u("i1e", x), mul(sign(x), _u("i0e", x))))
_register("i1", _bessel(1, False), _d_i1)
_register("i1e", _bessel(1, True), _d_i1e)

def _vjp_zeta(g, ins, out, params, need):
    # d/dq zeta(s, q) = -s zeta(s + 1, q); none in s (torch has none; the tracer refuses it)
    s, q = ins
    return [None, mul(g, mul(neg(s), bind(P.zeta, add(s, 1.0), q))) if need[1] else None]


_elementwise("zeta", lambda s, q: _numpy2(S.zeta)(s, q), _vjp_zeta,
             jvp=lambda t, i, o, p: None if t[1] is None else
             mul(t[1], mul(neg(i[0]), bind(P.zeta, add(i[0], 1.0), i[1]))),
             saves=(0, 1), float_only=True, arity=2,
             scalar=lambda sb, s, q: sb.cast(S.zeta(sb, sb.cast(s, dt.f64), sb.cast(q, dt.f64)),
                                             s.dtype))

NAMES = ("digamma", "polygamma", "erfinv", "ndtri", "erfcx", "i0", "i0e", "i1", "i1e", "zeta")
__all__ = ["NAMES"]
