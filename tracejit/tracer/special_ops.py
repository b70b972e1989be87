"""torch's gamma-family and Bessel functions and a few float-format helpers: lgamma, digamma,
polygamma, mvlgamma, erfinv, i0, i0e, i1, i1e, ndtri, erfcx (ir/prims_gamma.py's and
prims_libm.py's primitives), ndtr, log_ndtr, xlog1py, entr, ldexp, frexp, nextafter, and the
in-place forms torch has. Integer and bool inputs
compute in float32, as torch's."""
from __future__ import annotations

import math
from collections import namedtuple

from ..ir import dtypes as dt
from ..ir.primitives import P
from . import ops
from .math_ops import _grad_as, _opmath, _promote_float, floor, log1p
from .series_ops import isnan
from .trig_ops import exp2, log2
from .math_inplace import _method
from .state import STATE
from .tensor_base import TensorBase as Tensor

_UNARY = ("lgamma", "digamma", "erfinv", "i0", "i0e", "i1", "i1e", "ndtri", "erfcx")
_DOCS = {"lgamma": "log |gamma(x)| (the C library's lgamma; +inf at 0 and the negative "
                   "integers)",
         "digamma": "the logarithmic derivative of gamma (-inf at +0, NaN at the negative "
                    "integers)",
         "erfinv": "the inverse error function (+-inf at +-1, NaN outside [-1, 1])",
         "i0": "the modified Bessel function of the first kind, order 0",
         "i0e": "exp(-|x|) i0(x)",
         "i1": "the modified Bessel function of the first kind, order 1",
         "i1e": "exp(-|x|) i1(x)",
         "ndtri": "the standard normal quantile (inverse of ndtr; +-inf at 1 and 0)",
         "erfcx": "the scaled complementary error function exp(x^2) erfc(x)"}


def _unary(name: str):
    def f(input) -> Tensor:  # noqa: A002
        return ops._unary(name, input, True)
    f.__name__ = f.__qualname__ = name
    f.__doc__ = f"torch.{name}: {_DOCS[name]}."
    return f


lgamma, digamma, erfinv, i0, i0e, i1, i1e, ndtri, erfcx = (_unary(n) for n in _UNARY)


def ndtr(input) -> Tensor:  # noqa: A002
    """The standard normal CDF, erfc(-x / sqrt(2)) / 2."""
    x = _float(input)
    return ops.mul(ops.erfc(ops.mul(x, -math.sqrt(0.5))), 0.5)


@_opmath
def log_ndtr(input) -> Tensor:  # noqa: A002
    """log(ndtr(x)) without underflow: log(erfcx(-x/sqrt 2) / 2) - x^2/2 for x < -1 (torch's
    split), log1p(-erfc(x/sqrt 2) / 2) otherwise; each branch sees only its own inputs, so
    the other's gradient stays finite."""
    x = _float(input)
    left = ops.lt(x, -1.0)
    xa = ops.where(left, x, -1.0)          # (where, not minimum: a tie would halve the grad)
    a = ops.sub(ops.log(ops.mul(erfcx(ops.mul(xa, -math.sqrt(0.5))), 0.5)),
                ops.mul(ops.mul(xa, xa), 0.5))
    xb = ops.where(left, -1.0, x)
    bb = log1p(ops.mul(ops.erfc(ops.mul(xb, math.sqrt(0.5))), -0.5))
    return ops.where(left, a, bb)


def xlog1py(input, other) -> Tensor:  # noqa: A002
    """x * log1p(y), 0 where x == 0 (NaN where y is NaN), as torch; torch's gradients:
    log1p(y) to x (0 where x == 0), x / (1 + y) to y."""
    x, y = _promote_float("xlog1py", input, other)
    sx = ops.stop_gradient(x)
    zero = ops.eq(sx, 0)
    ys = ops.where(zero, 0.0, y)              # no -inf * 0 in the unused branch's gradient
    r = ops.where(zero, 0.0, ops.mul(sx, log1p(ys)))
    r = ops.where(isnan(y), math.nan, r)
    return _grad_as(r, [x], lambda yx: [ops.where(ops.eq(ops.stop_gradient(yx), 0), 0.0,
                                                  log1p(ys))])


@_opmath
def entr(input) -> Tensor:  # noqa: A002
    """-x log x for x > 0, 0 at 0, -inf for x < 0 (NaN stays); torch's gradient -(1 + log x)
    (0 where that is not finite, as this project's other poles)."""
    x = _float(input)
    sx = ops.stop_gradient(x)
    pos = ops.gt(sx, 0.0)
    v = ops.where(pos, ops.neg(ops.mul(sx, ops.log(ops.where(pos, sx, 1.0)))),
                  ops.where(ops.eq(sx, 0.0), 0.0, ops.where(isnan(sx), sx, -math.inf)))
    return _grad_as(v, [x], lambda y: [ops.neg(ops.add(ops.log(y), 1.0))])


def _float(x) -> Tensor:
    x = ops.as_tensor(x)
    return x if x.dtype.is_float else ops.cast(x, dt.f32)


def polygamma(n: int, input) -> Tensor:  # noqa: A002
    """torch.polygamma(n, input): the n-th derivative of digamma (n = 0: digamma)."""
    if isinstance(n, bool) or not isinstance(n, int):
        raise ops._err("polygamma", f"n must be a Python int, got {type(n).__name__}",
                       TypeError)
    if n < 0:
        raise ops._err("polygamma", f"polygamma(n, x) does not support negative n (got {n})")
    x = ops.as_tensor(input)
    x = x if x.dtype.is_float else ops.cast(x, dt.f32)
    if n == 0:
        return digamma(x)
    return ops.bind(P.polygamma, x, n=n)


def mvlgamma(input, p: int) -> Tensor:  # noqa: A002
    """The multivariate log-gamma of dimension p: p(p-1)/4 log(pi) + sum_j lgamma(x - j/2).
    torch refuses x <= (p-1)/2; where the values are known (eager) so does this; in a trace
    such elements give NaN."""
    if isinstance(p, bool) or not isinstance(p, int) or p < 1:
        raise ops._err("mvlgamma", f"p has to be greater than or equal to 1, got {p!r}")
    x = ops.as_tensor(input)
    if not x.dtype.is_float:
        raise ops._err("mvlgamma", f"needs a floating-point input, got {ops._fmt(x)}",
                       TypeError)
    ok = ops.gt(x, (p - 1) / 2)
    data = getattr(ok, "_data", None)
    if data is not None and hasattr(data, "all") and not bool(data.all()):
        raise ops._err("mvlgamma", "All elements must be greater than (p-1)/2")
    r = ops.add(lgamma(x), p * (p - 1) / 4 * math.log(math.pi))
    for j in range(1, p):
        r = ops.add(r, lgamma(ops.sub(x, j / 2)))
    return ops.where(ok, r, math.nan)


def zeta(input, other) -> Tensor:  # noqa: A002
    """torch.special.zeta(x, q): the Hurwitz zeta function sum_k (q + k)^-x, with torch's
    domain (inf at x = 1 and at integer q <= 0; NaN for x < 1) and its gradient in q,
    -x zeta(x + 1, q). torch has no derivative in x: an x that requires grad is refused here.
    q < -15 (reachable by torch's direct sum for integer x) gives NaN."""
    x, q = ops.as_tensor(input), ops.as_tensor(other)
    if STATE.grad_enabled and getattr(x, "_requires_grad", False):
        raise ops._err("zeta", f"the derivative in the first argument ({ops._fmt(x)}) is "
                       f"not implemented, as torch's; detach it", NotImplementedError)
    return ops._binary("zeta", x, q, "float")


def ldexp(input, other) -> Tensor:  # noqa: A002
    """input * 2^other (torch's formula, with its promotion: integers give float32)."""
    x, e = ops.as_tensor(input), ops.as_tensor(other)
    d = ops.result_dtype(x, e)
    d = d if d.is_float else dt.f32
    return ops.mul(ops.cast(x, d), ops.pow(2.0, ops.cast(e, d)))


Frexp = namedtuple("frexp", ["mantissa", "exponent"])


def frexp(input) -> Frexp:  # noqa: A002
    """(mantissa, exponent) with input = mantissa * 2^exponent, |mantissa| in [0.5, 1) (0,
    inf and NaN: themselves with exponent 0); exponent is int32. No gradient (torch has
    none)."""
    x = ops.stop_gradient(ops.as_tensor(input))
    if not x.dtype.is_float:
        raise ops._err("frexp", f"only supports floating-point dtypes, got {ops._fmt(x)}",
                       TypeError)
    w = ops.cast(x, dt.f64) if x.dtype is not dt.f64 else x
    a = ops.abs(w)
    regular = ops.logical_and(ops.gt(a, 0.0), ops.lt(a, math.inf))
    safe = ops.where(regular, a, 1.0)
    e = ops.add(floor(log2(safe)), 1.0)
    # two factors: 2^-e alone overflows for subnormal a (e down to -1073)
    h = floor(ops.mul(e, 0.5))
    m = ops.mul(ops.mul(safe, exp2(ops.neg(h))), exp2(ops.neg(ops.sub(e, h))))
    # log2's rounding can leave m just outside [0.5, 1): one step fixes it
    hi, lo = ops.ge(m, 1.0), ops.lt(m, 0.5)
    m = ops.where(hi, ops.mul(m, 0.5), ops.where(lo, ops.mul(m, 2.0), m))
    e = ops.where(hi, ops.add(e, 1.0), ops.where(lo, ops.sub(e, 1.0), e))
    m = ops.where(regular, ops.where(ops.lt(w, 0.0), ops.neg(m), m), w)
    e = ops.where(regular, e, 0.0)
    return Frexp(ops.cast(m, x.dtype), ops.cast(e, dt.i32))


def nextafter(input, other) -> Tensor:  # noqa: A002
    """The next representable value after input toward other (float32 and float64, as the
    C library's nextafterf/nextafter); no gradient."""
    x, y = ops.as_tensor(input), ops.as_tensor(other)
    d = ops.result_dtype(x, y)
    if d not in (dt.f32, dt.f64):
        raise ops._err("nextafter", f"supports float32 and float64, got {ops._fmt(x)} and "
                       f"{ops._fmt(y)}", TypeError)
    x, y = ops.stop_gradient(ops.cast(x, d)), ops.stop_gradient(ops.cast(y, d))
    return ops._binary("nextafter", x, y, "float")


_METHODS = ("lgamma", "digamma", "erfinv", "i0", "ldexp", "nextafter")
INPLACE = {n + "_": globals()[n] for n in _METHODS}
INPLACE["polygamma_"] = lambda x, n: polygamma(n, x)
INPLACE["mvlgamma_"] = mvlgamma
for _n, _f in INPLACE.items():
    globals()[_n] = _method(_n, _f)

__all__ = [*_UNARY, "ndtr", "log_ndtr", "xlog1py", "entr", "zeta", "polygamma", "mvlgamma", "ldexp",
           "frexp", "nextafter", *INPLACE]
