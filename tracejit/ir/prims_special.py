"""erf and erfc: elementwise primitives with their derivatives (+-2/sqrt(pi) exp(-x^2)).

NumPy has no error function, so the NumPy implementation (eager mode, the interpreter) is:
for float32 and the 16-bit floats, the float32 approximation the LLVM code inlines
(codegen/llvm_special.py renders the same steps from the constants here), so eager and
compiled float32 results agree bit for bit; for float64, and for erfc at every width, Python's
math.erf/math.erfc element by element (correctly rounded in practice, but not vectorized).
On CuPy arrays, cupyx.scipy.special. The code generators lower the `erf`/`erfc` scalar rule:
CUDA's erff/erf/erfcf/erfc, LLVM's inlined tj_erff and the C library's erf/erfcf/erfc.

The float32 approximation, for a = |x| (within 1 ulp of the correctly rounded erf for every
float32, about 13% of results 1 ulp off; the sign copied from x, so erf(-0.0) = -0.0 and NaN
stays NaN):
- a < ERF_SPLIT: erf(a) = a + a * A(a^2), A of degree 5 (A(0) = 2/sqrt(pi) - 1), so the last
  step adds a small correction to a and rounds once;
- otherwise: erf(a) = 1 - exp(B(min(a, ERF_CLAMP))), B of degree 7 approximating
  log(erfc(a)); exp of B's values (in [-16.5, -1.6]) by a Cody-Waite reduction and Cephes'
  polynomial. Beyond ERF_CLAMP, erfc(a) < 2^-25 and the result is exactly 1.0.
Every step is one float32 multiply or add (no fused multiply-add, which NumPy cannot
reproduce), so NumPy's float32 ufuncs give the same bits; both branches are straight-line
code and a select picks one, so the loop vectorizes 16 lanes wide. The coefficients were
fitted once (Lawson's iteratively reweighted least squares against math.erf/math.erfc) and
checked over every float32 in [0, 4.5] and a sweep of the rest. This replaced a double-
precision version (degree 10 and a degree-20 Chebyshev series, 8 lanes): GELU's kernels in a
nanoGPT step spent about 15% of the step there.
"""
from __future__ import annotations

import math

import numpy as np

from .prims_elementwise import _elementwise
from .primitives import exp, mul, neg

ERF_SPLIT = "0x1.d8p-1"                 # 0.921875
ERF_CLAMP = "0x1.f6p+1"                 # 3.921875
# A: erf(a) / a - 1 as a polynomial in s = a^2 on [0, ERF_SPLIT), constant term first
ERF_SMALL = ["0x1.06eba6p-3", "-0x1.8126e6p-2", "0x1.ce1a6ap-4", "-0x1.b68b5p-6",
             "0x1.473b94p-8", "-0x1.3a1774p-11"]
# B: log(erfc(a)) as a polynomial in a on [ERF_SPLIT, ERF_CLAMP], constant term first
ERFC_LOG = ["0x1.71d73ap-13", "-0x1.21286ep+0", "-0x1.4443d6p-1", "-0x1.bb97c2p-4",
            "0x1.9bc2d2p-6", "-0x1.11abaep-8", "0x1.c8a0a8p-12", "-0x1.636838p-16"]
# exp(r) = 1 + r + r^2 * P(r) for |r| <= ln(2)/2 (Cephes expf), highest coefficient first;
# r = q - n*ln2 with ln2 in two parts, the first exact in 9 bits so n * EXP_LN2_HI is exact
EXP_P = ["0x1.a0d2cep-13", "0x1.6e879cp-10", "0x1.11121p-7", "0x1.555382p-5",
         "0x1.555554p-3", "0x1p-1"]
EXP_LOG2E, EXP_LN2_HI, EXP_LN2_LO = "0x1.715476p+0", "0x1.63p-1", "-0x1.bd0106p-13"
EXP_SHIFTER = "0x1.8p+23"
_F = np.float32
_SPLIT, _CLAMP = _F(float.fromhex(ERF_SPLIT)), _F(float.fromhex(ERF_CLAMP))
_SMALL = [_F(float.fromhex(c)) for c in ERF_SMALL]
_LOG = [_F(float.fromhex(c)) for c in ERFC_LOG]
_EXP = [_F(float.fromhex(c)) for c in EXP_P]
_LOG2E, _LN2_HI, _LN2_LO, _SHIFTER = (_F(float.fromhex(c)) for c in (
    EXP_LOG2E, EXP_LN2_HI, EXP_LN2_LO, EXP_SHIFTER))
_TWO_OVER_SQRT_PI = 2.0 / math.sqrt(math.pi)


def _erf_small(a):
    """erf(a) for float32 a = |x| < ERF_SPLIT (A of the module doc)."""
    s = a * a
    p = _SMALL[-1]
    for c in reversed(_SMALL[:-1]):
        p = p * s + c
    return p * a + a


def _erf_large(a):
    """erf(a) for float32 a = |x| >= ERF_SPLIT, NaN included (B of the module doc)."""
    t = np.minimum(a, _CLAMP)                  # np.minimum keeps NaN
    q = _LOG[-1]
    for c in reversed(_LOG[:-1]):
        q = q * t + c
    n = np.rint(q * _LOG2E)
    r = q - n * _LN2_HI
    r = r - n * _LN2_LO
    p = _EXP[0]
    for c in _EXP[1:]:
        p = p * r + c
    y = (p * (r * r) + r) + _F(1.0)
    # 2^n for n in [-24, -2]: n + 1.5 * 2^23 holds n in its low mantissa bits, and the
    # exponent field's bits shift out (NaN gives some scale, and y is NaN anyway)
    m = n + _SHIFTER
    scale = ((m.view(np.uint32) + np.uint32(127)) << np.uint32(23)).view(np.float32)
    return _F(1.0) - y * scale


def erf_narrow(x):
    """erf of float32 (or 16-bit) values through the float32 approximation, in x's dtype.
    Works on any array type whose ufuncs NumPy dispatches (the fallback for device arrays
    without a special-function library)."""
    a = abs(x.astype(np.float32))
    with np.errstate(over="ignore"):           # the unused branch: a * a of a large a
        r = np.where(a < _SPLIT, _erf_small(a), _erf_large(a))
    return np.copysign(r, x.astype(np.float32)).astype(x.dtype)


def _erf_narrow_numpy(x: np.ndarray) -> np.ndarray:
    """erf_narrow for NumPy arrays, bit for bit: each element evaluates only its own
    branch."""
    xf = x.astype(np.float32)
    a = np.abs(xf)
    out = np.empty_like(a)
    lo = a < _SPLIT
    out[lo] = _erf_small(a[lo])
    hi = ~lo                                    # NaN included: NaN out
    out[hi] = _erf_large(a[hi])
    np.copysign(out, xf, out=out)
    return out.astype(x.dtype)


def _is_numpy(x) -> bool:
    return isinstance(x, (np.ndarray, np.generic))


def _by_element(fn, x):
    out = np.frompyfunc(fn, 1, 1)(np.asarray(x, np.float64))
    return np.asarray(out, np.float64).astype(np.asarray(x).dtype)


def _impl_erf(x):
    if not _is_numpy(x):
        try:
            import cupyx.scipy.special as sp      # a CuPy array: its own kernel
            return sp.erf(x)
        except ImportError:                       # an array type without one
            return erf_narrow(x)
    x = np.asarray(x)
    if x.dtype == np.float64:
        return _by_element(math.erf, x)
    return _erf_narrow_numpy(x)


def _impl_erfc(x):
    if not _is_numpy(x):
        import cupyx.scipy.special as sp
        return sp.erfc(x)
    return _by_element(math.erfc, x)


def _vjp_erf(sign: float):
    def vjp(g, ins, out, params, need):
        x = ins[0]
        return [mul(g, mul(exp(neg(mul(x, x))), sign * _TWO_OVER_SQRT_PI))]
    return vjp


def _jvp_erf(sign: float):
    def jvp(t, ins, out, params):
        x = ins[0]
        return mul(t[0], mul(exp(neg(mul(x, x))), sign * _TWO_OVER_SQRT_PI))
    return jvp


_elementwise("erf", _impl_erf, _vjp_erf(1.0), jvp=_jvp_erf(1.0), saves=(0,), float_only=True,
             arity=1)
_elementwise("erfc", _impl_erfc, _vjp_erf(-1.0), jvp=_jvp_erf(-1.0), saves=(0,),
             float_only=True, arity=1)

__all__ = ["ERF_SPLIT", "ERF_CLAMP", "ERF_SMALL", "ERFC_LOG", "EXP_P", "EXP_LOG2E",
           "EXP_LN2_HI", "EXP_LN2_LO", "EXP_SHIFTER", "erf_narrow"]
