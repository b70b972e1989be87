"""C-library transcendentals as elementwise primitives: tan, atan, asin, acos, sinh, cosh,
asinh, acosh, atanh, log2, log10, exp2, lgamma (unary) and atan2 (binary);
signbit, the sign bit (a bit test, not a C-library call). Each is a call to the C
math function of the same name in every backend (NumPy's ufunc eagerly, libm's tanf/tan ...
in LLVM code, CUDA's tanf/tan ...), so it is as accurate as the C library (within an ulp or
two) with no cancellation of a composition. float16/bfloat16 compute in float32 (codegen's
compute dtype; NumPy's half loops call the float32 function).

Derivatives are torch's formulas; atan2's is 0 at (0, 0) (torch masks that point)."""
from __future__ import annotations

import math

import numpy as np

from . import dtypes as dt
from .core import Aval
from .primitives import P, op_error, add, bind, div, eq, mul, neg, sqrt, sub, tangent_sum, where
from .prims_elementwise import _elementwise


def _u(name: str):
    return lambda x: bind(P.get(name), x)


def _d_tan(x, o): return add(mul(o, o), 1.0)                       # 1 + tan^2
def _d_atan(x, o): return div(1.0, add(mul(x, x), 1.0))
def _d_asin(x, o): return div(1.0, sqrt(sub(1.0, mul(x, x))))
def _d_acos(x, o): return neg(div(1.0, sqrt(sub(1.0, mul(x, x)))))
def _d_sinh(x, o): return _u("cosh")(x)
def _d_cosh(x, o): return _u("sinh")(x)
def _d_asinh(x, o): return div(1.0, sqrt(add(mul(x, x), 1.0)))
def _d_acosh(x, o): return div(1.0, sqrt(sub(mul(x, x), 1.0)))
def _d_atanh(x, o): return div(1.0, sub(1.0, mul(x, x)))
def _d_log2(x, o): return div(1.0, mul(x, math.log(2.0)))
def _d_log10(x, o): return div(1.0, mul(x, math.log(10.0)))
def _d_exp2(x, o): return mul(o, math.log(2.0))
def _d_lgamma(x, o): return bind(P.get("digamma"), x)     # ir/prims_gamma.py


def _lgamma_one(v: float) -> float:
    try:
        return math.lgamma(v)
    except ValueError:                     # the poles: 0 and the negative integers
        return math.inf


def _lgamma(x):
    """The C library's lgamma (log |gamma(x)|, +inf at the poles) element by element (NumPy
    has none; float32 arrive widened by _wide); CuPy arrays through cupyx."""
    if not isinstance(x, (np.ndarray, np.generic)):
        import cupyx.scipy.special as sp
        return sp.gammaln(x)
    x = np.asarray(x)
    return np.asarray(np.frompyfunc(_lgamma_one, 1, 1)(x), np.float64).astype(x.dtype)


# name -> (NumPy ufunc, derivative from (input, output), whether the derivative reads out)
UNARY = {"tan": (np.tan, _d_tan, True), "atan": (np.arctan, _d_atan, False),
         "asin": (np.arcsin, _d_asin, False), "acos": (np.arccos, _d_acos, False),
         "sinh": (np.sinh, _d_sinh, False), "cosh": (np.cosh, _d_cosh, False),
         "asinh": (np.arcsinh, _d_asinh, False), "acosh": (np.arccosh, _d_acosh, False),
         "atanh": (np.arctanh, _d_atanh, False), "log2": (np.log2, _d_log2, False),
         "log10": (np.log10, _d_log10, False), "exp2": (np.exp2, _d_exp2, True),
         "lgamma": (_lgamma, _d_lgamma, False)}


def _wide(f):
    """f on NumPy float32/16-bit arrays computed in float64 and rounded once: NumPy's own
    float32 loops (SIMD tan, asin) are up to 3 ulp off, this is within half an ulp (torch's and
    the compiled code's libm are within 1). Other arrays (float64, CuPy's) go to f as they are."""
    def impl(*xs):
        d = getattr(xs[0], "dtype", None)
        if type(xs[0]) is np.ndarray and d is not None and d != np.float64:
            return f(*(x.astype(np.float64) for x in xs)).astype(d)
        return f(*xs)
    impl.__name__ = f.__name__
    return impl


def _register_unary(name: str, impl, d, uses_out: bool) -> None:
    _elementwise(name, _wide(impl),
                 lambda g, i, o, p, n: [mul(g, d(i[0], o))],
                 jvp=lambda t, i, o, p: mul(t[0], d(i[0], o)),
                 saves=() if uses_out else (0,), save_out=uses_out, float_only=True, arity=1,
                 scalar=lambda sb, x: sb.libm(name, x))


for _n, (_f, _d, _o) in UNARY.items():
    _register_unary(_n, _f, _d, _o)


def _atan2_parts(y, x):
    """(x / r, y / r) with r = x^2 + y^2; both 0 where x = y = 0 (torch's mask)."""
    r = add(mul(x, x), mul(y, y))
    # |x| + |y| == 0 exactly when both are 0 (r itself underflows to 0 for tiny x, y)
    zero = eq(add(bind(P.abs, x), bind(P.abs, y)), 0.0)
    den = where(zero, 1.0, r)
    return where(zero, 0.0, div(x, den)), where(zero, 0.0, div(y, den))


def _vjp_atan2(g, ins, out, params, need):
    a, b = _atan2_parts(*ins)
    return [mul(g, a) if need[0] else None, neg(mul(g, b)) if need[1] else None]


def _jvp_atan2(t, ins, out, params):
    a, b = _atan2_parts(*ins)
    return tangent_sum(None if t[0] is None else mul(t[0], a),
                       None if t[1] is None else neg(mul(t[1], b)))


_elementwise("atan2", _wide(np.arctan2), _vjp_atan2, jvp=_jvp_atan2, saves=(0, 1), float_only=True,
             arity=2, scalar=lambda sb, y, x: sb.libm("atan2", y, x))



def _infer_signbit(name, avals):
    a = avals[0]
    if not a.dtype.is_float:
        raise op_error(name, f"needs a floating-point operand, got {a}", TypeError)
    return Aval(a.shape, dt.bool_)


# signbit: the IEEE sign bit (set for -0.0 and a negative NaN, which no comparison sees); no
# gradient, as a comparison
_elementwise("signbit", np.signbit, lambda g, i, o, p, n: [None], jvp=lambda t, i, o, p: None,
             infer=_infer_signbit, arity=1, scalar=lambda sb, x: sb.signbit(x))

# nextafter: the C library's nextafterf/nextafter (exact at each width: the tracer admits
# float32 and float64 only). Its derivative is 1 in x and 0 in y (a step of one ulp); the
# tracer's nextafter does not differentiate (torch has no derivative for it)
_elementwise("nextafter", np.nextafter, lambda g, i, o, p, n: [g, None],
             jvp=lambda t, i, o, p: t[0], float_only=True, arity=2,
             scalar=lambda sb, x, y: sb.libm("nextafter", x, y))

NAMES = (*UNARY, "atan2", "nextafter")
__all__ = ["UNARY", "NAMES"]
