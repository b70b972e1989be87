"""Straight-line double-precision algorithms for digamma, polygamma, erfinv and the modified
Bessel functions i0/i1 (and their exponentially scaled forms), written once against the
scalar-builder vocabulary (const, add, sub, mul, div, select, cmp, floor, log, exp, sqrt,
libm, erf, erfc) so that the same steps run on NumPy arrays (eager mode, the interpreter:
NumpyBuilder below) and lower to LLVM and CUDA through the code generators' scalar builders.
No loops and no data-dependent branches: every branch is computed and a select picks one, so
a kernel's loop stays vectorizable and eager and compiled results agree.

Every function takes and returns float64 values; prims_gamma.py widens float32 and the 16-bit
floats to float64 and rounds the result once (within an ulp of the true value, as torch's
float32 versions are within a few).

Methods (all standard, coefficients derived here at import time, nothing tabulated):
- digamma: reflection psi(x) = psi(1 - x) - pi / tan(pi * frac(x)) for x < 0; the recurrence
  psi(y) = psi(y + 1) - 1/y up to y >= 10; then the asymptotic series
  log y - 1/(2y) - sum B_2k / (2k y^2k) (eight terms: error < 1e-17 at y = 10).
- polygamma(n >= 1): (-1)^(n+1) n! zeta(n + 1, x) with the Hurwitz zeta summed directly up to
  y >= 10 + n and Euler-Maclaurin's tail (twelve Bernoulli terms) after; x < 0 through the
  reflection formula with the n-th derivative of pi cot(pi x) as a polynomial in cot.
- erfinv: Winitzki's closed-form estimate refined by three Halley steps on erf(x) = a (on
  erfc(x) = 1 - a for a > 0.5, where erf(x) - a would cancel); ndtri the same core as
  erfcinv(2p), so both tails keep their relative accuracy.
- erfcx: exp(x^2) erfc(x) with x^2 split exactly for x < 26, the asymptotic series beyond.
- i0, i1: the power series in x^2/4 (no cancellation: all terms positive) for |x| <= 20; the
  large-argument asymptotic series exp(x)/sqrt(2 pi x) * sum c_k / x^k beyond (its smallest
  term there is below 1e-17).
"""
from __future__ import annotations

import math
from fractions import Fraction

import numpy as np


def _bernoulli(count: int) -> list[Fraction]:
    """B_0 .. B_(count-1) (B_1 = -1/2) from the recurrence sum_j C(m+1, j) B_j = 0."""
    b = [Fraction(1)]
    for m in range(1, count):
        b.append(-sum(math.comb(m + 1, j) * b[j] for j in range(m)) / (m + 1))
    return b


_B = _bernoulli(32)
# digamma's asymptotic series: B_2k / (2k), k = 1..8, as a polynomial in z = 1/y^2
_PSI_ASYM = [float(_B[2 * k] / (2 * k)) for k in range(1, 9)]
# Euler-Maclaurin: B_2j / (2j)!, j = 1..12
_EM = [float(_B[2 * j] / math.factorial(2 * j)) for j in range(1, 13)]
# i0/i1 power series: 1 / (k! (k + nu)!), k = 0..40
_I_SERIES = {nu: [1.0 / (math.factorial(k) * math.factorial(k + nu)) for k in range(41)]
             for nu in (0, 1)}
_I_SPLIT = 20.0


def _i_asym(nu: int, terms: int = 30) -> list[float]:
    """c_k of I_nu(x) ~ exp(x)/sqrt(2 pi x) sum c_k / x^k: c_k = c_(k-1) ((2k-1)^2 - 4nu^2)/(8k)."""
    c, out = Fraction(1), [1.0]
    for k in range(1, terms):
        c = c * ((2 * k - 1) ** 2 - 4 * nu * nu) / (8 * k)
        out.append(float(c))
    return out


_I_ASYM = {nu: _i_asym(nu) for nu in (0, 1)}


def _cot_derivative(n: int) -> list[int]:
    """Coefficients (constant first) of P_n with d^n/dt^n cot(t) = P_n(cot t):
    P_0 = c, P_(k+1) = -(1 + c^2) P_k'."""
    p = [0, 1]
    for _ in range(n):
        d = [i * p[i] for i in range(1, len(p))] or [0]
        q = [0] * (len(d) + 2)
        for i, v in enumerate(d):
            q[i] -= v
            q[i + 2] -= v
        p = q
    return p


def _horner(b, t, coeffs, like):
    """sum coeffs[k] t^k (constant first)."""
    acc = b.const(coeffs[-1], like)
    for c in reversed(coeffs[:-1]):
        acc = b.add(b.mul(acc, t), b.const(c, like))
    return acc


def _and(b, p, q, like):
    """p and q for builder booleans (a select: every builder has one)."""
    return b.cmp("ne", b.select(p, b.select(q, b.const(1, like), b.const(0, like)),
                                b.const(0, like)), b.const(0, like))


def _ipow(b, w, k: int):
    """w^k for a static k >= 1 by squaring."""
    result, base = None, w
    while k:
        if k & 1:
            result = base if result is None else b.mul(result, base)
        k >>= 1
        if k:
            base = b.mul(base, base)
    return result


def digamma(b, x):
    c = lambda v: b.const(v, x)  # noqa: E731
    neg = b.lt(x, c(0.0))
    y = b.select(neg, b.sub(c(1.0), x), x)
    acc = c(0.0)
    for _ in range(10):         # y in (0, 1) reaches [10, 11) in ten steps
        small = b.lt(y, c(10.0))
        acc = b.sub(acc, b.select(small, b.div(c(1.0), y), c(0.0)))
        y = b.select(small, b.add(y, c(1.0)), y)
    z = b.div(c(1.0), b.mul(y, y))
    tail = b.mul(z, _horner(b, z, _PSI_ASYM, x))
    r = b.add(acc, b.sub(b.sub(b.log(y), b.div(c(0.5), y)), tail))
    frac = b.sub(x, b.floor(x))
    refl = b.sub(r, b.div(c(math.pi), b.libm("tan", b.mul(c(math.pi), frac))))
    out = b.select(neg, refl, r)
    pole = _and(b, neg, b.cmp("eq", frac, c(0.0)), x)      # negative integers (and -inf)
    return b.select(pole, c(math.nan), out)


def _zeta_pos(b, s: int, x):
    """Hurwitz zeta(s, x) for x > 0 (x <= 0 gives garbage the caller replaces)."""
    c = lambda v: b.const(v, x)  # noqa: E731
    top = 10.0 + s
    y, acc = x, c(0.0)
    for _ in range(int(top)):
        small = b.lt(y, c(top))
        acc = b.add(acc, b.select(small, _ipow(b, b.div(c(1.0), y), s), c(0.0)))
        y = b.select(small, b.add(y, c(1.0)), y)
    w = b.div(c(1.0), y)
    ws = _ipow(b, w, s)                                       # y^-s
    head = b.add(b.div(_ipow(b, w, s - 1), c(s - 1.0)), b.mul(ws, c(0.5)))
    # sum_j B_2j/(2j)! (s)_(2j-1) y^(-s-2j+1): term j is term j-1 * (s+2j-3)(s+2j-2) / y^2
    w2, coeffs, rising = b.mul(w, w), [], float(s)
    for j, e in enumerate(_EM, start=1):
        if j > 1:
            rising *= (s + 2 * j - 3) * (s + 2 * j - 2)
        coeffs.append(e * rising)
    tail = b.mul(b.mul(ws, w), _horner(b, w2, coeffs, x))
    return b.add(acc, b.add(head, tail))


def polygamma(b, n: int, x):
    """psi^(n)(x), n >= 1."""
    c = lambda v: b.const(v, x)  # noqa: E731
    s = n + 1
    fact = math.factorial(n) * (-1.0) ** (n + 1)
    neg = b.lt(x, c(0.0))
    xp = b.select(neg, b.sub(c(1.0), x), x)
    pos = b.mul(c(fact), _zeta_pos(b, s, xp))
    # x < 0: psi^(n)(x) = (-1)^n psi^(n)(1 - x) - pi^(n+1) P_n(cot(pi x))
    frac = b.sub(x, b.floor(x))
    cot = b.div(c(1.0), b.libm("tan", b.mul(c(math.pi), frac)))
    refl = b.sub(b.mul(c((-1.0) ** n), pos),
                 b.mul(c(math.pi ** (n + 1)), _horner(b, cot, [float(v) for v in
                                                             _cot_derivative(n)], x)))
    out = b.select(neg, refl, pos)
    pole = _and(b, b.cmp("le", x, c(0.0)), b.cmp("eq", b.floor(x), x), x)
    out = b.select(pole, c(math.copysign(math.inf, fact)), out)
    # -inf: no limit (torch's answers there vary with n)
    return b.select(b.cmp("eq", x, c(-math.inf)), c(math.nan), out)


def _erfinv_core(b, a, one_minus, like):
    """x >= 0 with erf(x) = a, given a in [0, 1] and one_minus = 1 - a (exact where a > 0.5,
    so that erfc's residual keeps the tail's relative accuracy)."""
    c = lambda v: b.const(v, like)  # noqa: E731
    # Winitzki's estimate (relative error ~2e-3); log((1-a)(1+a)) keeps 1-a exact
    ln = b.log(b.mul(one_minus, b.add(c(1.0), a)))
    k = 0.147
    t = b.add(c(2.0 / (math.pi * k)), b.mul(ln, c(0.5)))
    x = b.sqrt(b.max(b.sub(b.sqrt(b.sub(b.mul(t, t), b.div(ln, c(k)))), t), c(0.0)))
    x = b.select(b.gt(one_minus, c(0.0)), x, c(0.0))        # keep the steps finite
    upper = b.gt(a, c(0.5))
    for _ in range(3):
        # u = f / f' with f = erf(x) - a; Halley: x -= u / (1 + x u)
        f = b.select(upper, b.sub(one_minus, b.erfc(x)), b.sub(b.erf(x), a))
        fp = b.mul(c(2.0 / math.sqrt(math.pi)), b.exp(b.neg(b.mul(x, x))))
        u = b.div(f, fp)
        x = b.sub(x, b.div(u, b.add(c(1.0), b.mul(x, u))))
    return b.select(b.cmp("eq", one_minus, c(0.0)), c(math.inf), x)


def erfinv(b, y):
    c = lambda v: b.const(v, y)  # noqa: E731
    a = b.abs(y)
    x = _erfinv_core(b, a, b.sub(c(1.0), a), y)
    x = b.select(b.gt(a, c(1.0)), c(math.nan), x)
    x = b.select(b.cmp("ne", a, a), a, x)                   # NaN stays NaN
    # the sign of y (-0.0 too): x is >= 0 (or NaN) here
    return b.select(b.signbit(y), b.neg(x), x)


def ndtri(b, p):
    """The standard normal quantile: -sqrt(2) erfcinv(2p), with erfcinv(q) for q in (0, 2)
    from r = min(q, 2 - q) (2 - q exact) so both tails keep their relative accuracy."""
    c = lambda v: b.const(v, p)  # noqa: E731
    q = b.mul(p, c(2.0))
    lower = b.lt(q, c(1.0))
    r = b.select(lower, q, b.sub(c(2.0), q))
    x = _erfinv_core(b, b.sub(c(1.0), r), r, p)             # erfcinv(r) >= 0
    x = b.mul(x, c(math.sqrt(2.0)))
    x = b.select(lower, b.neg(x), x)
    bad = b.cmp("ne", b.select(b.lt(p, c(0.0)), c(1.0), b.select(b.gt(p, c(1.0)), c(1.0), p)),
                p)                                           # outside [0, 1], or NaN
    return b.select(bad, c(math.nan), x)


# erfcx's asymptotic series 1/(x sqrt(pi)) sum (-1)^k (2k-1)!! / (2x^2)^k, in t = 1/x^2
_ERFCX_ASYM = [(-1.0) ** k * math.prod(range(1, 2 * k, 2)) / 2.0 ** k for k in range(12)]
_ERFCX_SPLIT = 26.0


def erfcx(b, x):
    """exp(x^2) erfc(x): for x < 26 the product, x^2 split exactly (Dekker) into hi + lo so
    exp(x^2) = exp(hi)(1 + lo) carries no x^2-sized error; beyond, the asymptotic series."""
    c = lambda v: b.const(v, x)  # noqa: E731
    xs = b.select(b.lt(x, c(_ERFCX_SPLIT)), x, c(0.0))
    m = b.mul(xs, c(134217729.0))                          # 2^27 + 1
    xh = b.sub(m, b.sub(m, xs))
    xl = b.sub(xs, xh)
    hi = b.mul(xs, xs)
    lo = b.add(b.add(b.sub(b.mul(xh, xh), hi), b.mul(b.mul(xh, xl), c(2.0))), b.mul(xl, xl))
    near = b.mul(b.mul(b.exp(hi), b.add(c(1.0), lo)), b.erfc(xs))
    big = b.max(x, c(_ERFCX_SPLIT))
    far = b.div(_horner(b, b.div(c(1.0), b.mul(big, big)), _ERFCX_ASYM, x),
                b.mul(big, c(math.sqrt(math.pi))))
    r = b.select(b.lt(x, c(_ERFCX_SPLIT)), near, far)
    r = b.select(b.cmp("eq", x, c(-math.inf)), c(math.inf), r)
    return b.select(b.cmp("ne", x, x), x, r)


def bessel_i(b, nu: int, x, scaled: bool):
    """I_nu(x) (nu = 0 or 1), times exp(-|x|) when scaled."""
    c = lambda v: b.const(v, x)  # noqa: E731
    a = b.abs(x)
    small = b.cmp("le", a, c(_I_SPLIT))
    q = b.mul(b.mul(a, a), c(0.25))
    ser = _horner(b, q, _I_SERIES[nu], x)
    if nu == 1:
        ser = b.mul(ser, b.mul(a, c(0.5)))
    if scaled:
        ser = b.mul(ser, b.exp(b.neg(a)))
    big = b.max(a, c(_I_SPLIT))                              # the unused branch stays finite
    asym = b.div(_horner(b, b.div(c(1.0), big), _I_ASYM[nu], x),
                 b.sqrt(b.mul(big, c(2.0 * math.pi))))
    if not scaled:
        # exp(a/2)^2: exp(a) alone overflows at 709.8, I_nu(a) itself near 713
        h = b.exp(b.mul(big, c(0.5)))
        asym = b.mul(b.mul(asym, h), h)
    r = b.select(small, ser, asym)
    r = b.select(b.cmp("ne", x, x), x, r)
    if nu == 1:                                              # odd
        r = b.select(b.signbit(x), b.neg(r), r)
    return r


def zeta(b, s, q):
    """Hurwitz zeta(s, q) for a tensor s (torch.special.zeta): sixteen direct terms
    (q + k)^-s, then Euler-Maclaurin at y = q + 16 (twelve Bernoulli terms, the rising
    factorials of s formed as it goes). Where s approaches 2 pi y and the series stops
    converging, the tail's weight against the direct terms, (q / y)^s, is below 1e-40.
    torch's domain: s = 1 gives inf, s < 1 NaN; q <= 0 gives inf at the integers and NaN for
    a non-integer s; q < -15 is outside the sixteen terms' reach and gives NaN."""
    c = lambda v: b.const(v, q)  # noqa: E731
    acc, y = c(0.0), q
    ns = b.neg(s)
    for _ in range(16):
        acc = b.add(acc, b.pow(y, ns))
        y = b.add(y, c(1.0))
    ws = b.pow(y, ns)
    w = b.div(c(1.0), y)
    head = b.add(b.div(b.mul(ws, y), b.sub(s, c(1.0))), b.mul(ws, c(0.5)))
    w2, term, rising, tail = b.mul(w, w), b.mul(ws, w), s, c(0.0)
    for j, e in enumerate(_EM, start=1):
        if j > 1:
            rising = b.mul(rising, b.mul(b.add(s, c(2 * j - 3.0)), b.add(s, c(2 * j - 2.0))))
            term = b.mul(term, w2)
        tail = b.add(tail, b.mul(b.mul(term, rising), c(e)))
    r = b.add(acc, b.add(head, tail))
    q_int = b.cmp("eq", b.floor(q), q)
    s_int = b.cmp("eq", b.floor(s), s)
    nonpos = b.cmp("le", q, c(0.0))
    # (s_int == q_int here: neither is an integer)
    r = b.select(_and(b, nonpos, b.cmp("eq", s_int, q_int), q), c(math.nan), r)
    r = b.select(_and(b, nonpos, q_int, q), c(math.inf), r)
    r = b.select(b.lt(q, c(-15.0)), c(math.nan), r)
    r = b.select(b.lt(s, c(1.0)), c(math.nan), r)
    return b.select(b.cmp("eq", s, c(1.0)), c(math.inf), r)


class NumpyBuilder:
    """The scalar-builder vocabulary on float64 NumPy arrays (or CuPy's, through their
    NumPy-compatible ufuncs): eager mode's and the interpreter's implementation."""

    def __init__(self, erf=None, erfc=None) -> None:
        self._erf, self._erfc = erf, erfc

    def const(self, value, like): return np.float64(value)
    def add(self, a, b): return a + b
    def sub(self, a, b): return a - b
    def mul(self, a, b): return a * b
    def div(self, a, b): return a / b
    def neg(self, a): return -a
    def abs(self, a): return abs(a)
    def floor(self, a): return np.floor(a)
    def log(self, a): return np.log(a)
    def exp(self, a): return np.exp(a)
    def sqrt(self, a): return np.sqrt(a)
    def max(self, a, b): return np.maximum(a, b)
    def pow(self, a, b): return np.power(a, b)
    def signbit(self, a): return np.signbit(a)
    def select(self, c, a, b): return np.where(c, a, b)
    def lt(self, a, b): return a < b
    def gt(self, a, b): return a > b
    def erf(self, a): return self._erf(a)
    def erfc(self, a): return self._erfc(a)

    def cmp(self, op: str, a, b):
        return {"lt": np.less, "le": np.less_equal, "gt": np.greater, "ge": np.greater_equal,
                "eq": np.equal, "ne": np.not_equal}[op](a, b)

    def libm(self, name: str, *a):
        return {"tan": np.tan}[name](*a)


__all__ = ["digamma", "polygamma", "erfinv", "ndtri", "erfcx", "bessel_i", "zeta",
           "NumpyBuilder"]
