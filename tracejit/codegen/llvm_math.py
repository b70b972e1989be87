"""Vectorizable float32 transcendentals written in LLVM IR.

Calls to expf/tanhf do not vectorize, so exp, log, tanh, sin, cos and pow for float32 are
polynomial implementations marked alwaysinline: the loop vectorizer sees plain arithmetic.
exp/log/tanh compute in float32 (Cephes' coefficients); sin, cos and pow compute in double and
round once. Each handles inf, nan, overflow, underflow and denormals explicitly. float64 calls
the C library, and so do sin, cos and pow in small modules built for compile speed."""
from __future__ import annotations

import functools
import math
import struct

from ..ir.prims_libm import NAMES as LIBM


def f64(v: float) -> str:
    return "0x%016X" % struct.unpack("<Q", struct.pack("<d", v))[0]


def f32(v: float) -> str:
    """An exact LLVM literal for the float32 nearest to v."""
    d = struct.unpack("<f", struct.pack("<f", v))[0]
    return "0x%016X" % struct.unpack("<Q", struct.pack("<d", d))[0]


def _poly(var: str, coeffs: list[float], prefix: str) -> tuple[list[str], str]:
    """Horner evaluation with FMAs; returns (lines, result name)."""
    lines = []
    acc = f32(coeffs[0])
    for i, c in enumerate(coeffs[1:]):
        name = f"%{prefix}{i}"
        lines.append(f"  {name} = call float @llvm.fma.f32(float {acc}, float {var}, float {f32(c)})")
        acc = name
    return lines, acc


def _expf() -> str:
    p, pr = _poly("%r", [1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2,
                         1.6666665459e-1, 5.0000001201e-1], "p")
    return "\n".join([
        "define internal float @tj_expf(float %x) alwaysinline {",
        f"  %big = fcmp ogt float %x, {f32(88.72283905206835)}",
        f"  %small = fcmp olt float %x, {f32(-103.97207708)}",
        # clamped so that 2^n splits into two normal scale factors; beyond: inf or 0
        f"  %lo = fcmp olt float %x, {f32(-104.0)}",
        f"  %x1 = select i1 %lo, float {f32(-104.0)}, float %x",
        f"  %hi = fcmp ogt float %x1, {f32(88.8)}",
        f"  %xc = select i1 %hi, float {f32(88.8)}, float %x1",
        f"  %t = fmul float %xc, {f32(1.44269504088896341)}",
        "  %n = call float @llvm.rint.f32(float %t)",
        "  %nn = fneg float %n",
        f"  %r0 = call float @llvm.fma.f32(float %nn, float {f32(0.693359375)}, float %xc)",
        f"  %r = call float @llvm.fma.f32(float %nn, float {f32(-2.12194440e-4)}, float %r0)",
        "  %r2 = fmul float %r, %r",
        *p,
        f"  %q = call float @llvm.fma.f32(float {pr}, float %r2, float %r)",
        "  %y = fadd float %q, 1.0",
        "  %ni = fptosi float %n to i32",
        "  %n1 = sdiv i32 %ni, 2",
        "  %n2 = sub i32 %ni, %n1",
        "  %e1 = add i32 %n1, 127",
        "  %e2 = add i32 %n2, 127",
        "  %b1 = shl i32 %e1, 23",
        "  %b2 = shl i32 %e2, 23",
        "  %s1 = bitcast i32 %b1 to float",
        "  %s2 = bitcast i32 %b2 to float",
        "  %y1 = fmul float %y, %s1",
        "  %y2 = fmul float %y1, %s2",
        "  %o1 = select i1 %big, float 0x7FF0000000000000, float %y2",
        "  %o2 = select i1 %small, float 0.0, float %o1",
        "  ret float %o2",
        "}"])


def _logf() -> str:
    p, pr = _poly("%m", [7.0376836292e-2, -1.1514610310e-1, 1.1676998740e-1, -1.2420140846e-1,
                         1.4249322787e-1, -1.6668057665e-1, 2.0000714765e-1, -2.4999993993e-1,
                         3.3333331174e-1], "p")
    return "\n".join([
        "define internal float @tj_logf(float %x) alwaysinline {",
        f"  %den = fcmp olt float %x, {f32(1.17549435e-38)}",
        f"  %xs0 = fmul float %x, {f32(8388608.0)}",
        "  %xs = select i1 %den, float %xs0, float %x",
        "  %eadj = select i1 %den, i32 -23, i32 0",
        "  %bits = bitcast float %xs to i32",
        "  %eb = lshr i32 %bits, 23",
        "  %eb2 = and i32 %eb, 255",
        "  %e0 = sub i32 %eb2, 126",
        "  %mb0 = and i32 %bits, 8388607",
        "  %mb = or i32 %mb0, 1056964608",
        "  %mf = bitcast i32 %mb to float",
        f"  %lt = fcmp olt float %mf, {f32(0.707106781186547524)}",
        "  %lti = zext i1 %lt to i32",
        "  %e1 = sub i32 %e0, %lti",
        "  %e = add i32 %e1, %eadj",
        "  %mm = fadd float %mf, %mf",
        "  %ma = fsub float %mm, 1.0",
        "  %mb1 = fsub float %mf, 1.0",
        "  %m = select i1 %lt, float %ma, float %mb1",
        "  %z = fmul float %m, %m",
        *p,
        f"  %y0 = fmul float {pr}, %m",
        "  %y1 = fmul float %y0, %z",
        "  %fe = sitofp i32 %e to float",
        f"  %y2 = call float @llvm.fma.f32(float %fe, float {f32(-2.12194440e-4)}, float %y1)",
        "  %y3 = call float @llvm.fma.f32(float %z, float -0.5, float %y2)",
        "  %r0 = fadd float %m, %y3",
        f"  %r = call float @llvm.fma.f32(float %fe, float {f32(0.693359375)}, float %r0)",
        "  %neg = fcmp olt float %x, 0.0",
        "  %zero = fcmp oeq float %x, 0.0",
        "  %inf = fcmp oeq float %x, 0x7FF0000000000000",
        "  %nan = fcmp uno float %x, 0.0",
        "  %o1 = select i1 %zero, float 0xFFF0000000000000, float %r",
        "  %o2 = select i1 %inf, float 0x7FF0000000000000, float %o1",
        "  %bad = or i1 %neg, %nan",
        "  %o3 = select i1 %bad, float 0x7FF8000000000000, float %o2",
        "  ret float %o3",
        "}"])


def _tanhf() -> str:
    p, pr = _poly("%z", [-5.70498872745e-3, 2.06390887954e-2, -5.37397155531e-2,
                         1.33314422036e-1, -3.33332819422e-1], "p")
    return "\n".join([
        "define internal float @tj_tanhf(float %x) alwaysinline {",
        "  %ax = call float @llvm.fabs.f32(float %x)",
        "  %z = fmul float %x, %x",
        *p,
        f"  %s0 = fmul float {pr}, %z",
        "  %small = call float @llvm.fma.f32(float %s0, float %x, float %x)",
        "  %a2 = fadd float %ax, %ax",
        "  %e = call float @tj_expf(float %a2)",
        "  %e1 = fadd float %e, 1.0",
        "  %q = fdiv float 2.0, %e1",
        "  %l = fsub float 1.0, %q",
        "  %big = call float @llvm.copysign.f32(float %l, float %x)",
        f"  %issmall = fcmp olt float %ax, {f32(0.625)}",
        "  %r = select i1 %issmall, float %small, float %big",
        "  ret float %r",
        "}"])


# -- sin and cos ------------------------------------------------------------------------------
# Both work in double precision, then round once to float32. The argument |x| is reduced to
# r in [-pi/4, pi/4] and a quadrant j: below 2**23 by x - j*pi/2 with pi/2 in three parts
# (Cody-Waite, each step one FMA); above, where a float32 is M * 2**k with an integer M < 2**24,
# by M * ((2**k * 2/pi) mod 4), with that constant from a table of 24-bit chunks so that every
# product is exact (Payne-Hanek in miniature). Both paths run for every lane and a select picks
# one, so the loop still vectorizes.
def _pi_scaled(bits: int) -> int:
    """floor(pi * 2**bits), by Machin's formula in integer arithmetic."""
    guard = bits + 64
    one = 1 << guard

    def arctan_inv(n: int) -> int:
        total, term, k, sign = 0, one // n, 1, 1
        while term:
            total += sign * (term // k)
            term //= n * n
            k += 2
            sign = -sign
        return total
    return (4 * (4 * arctan_inv(5) - arctan_inv(239))) >> 64


def _two_over_pi_bits(frac_bits: int) -> int:
    """floor(2/pi * 2**frac_bits)."""
    n = frac_bits + 8
    return (1 << (frac_bits + n + 1)) // _pi_scaled(n)


def _pi_over_2_parts() -> list[float]:
    """pi/2 as p1 + p2 + p3: each the double nearest to what the previous ones leave."""
    from fractions import Fraction
    rest = Fraction(_pi_scaled(300), 1 << 301)
    parts = []
    for _ in range(3):
        parts.append(float(rest))
        rest -= Fraction(parts[-1])
    return parts


TRIG_KMAX = 104          # float32 exponents above 2**23: x = M * 2**k with k in [0, 104]


def _trig_table() -> str:
    bits = _two_over_pi_bits(TRIG_KMAX + 96)
    vals = []
    for k in range(TRIG_KMAX + 1):
        v = (bits >> (TRIG_KMAX + 2 - k)) % (4 << 94)   # (2**k * 2/pi) mod 4, 94 fraction bits
        for c in range(4):
            chunk = (v >> (72 - 24 * c)) & 0xFFFFFF
            vals.append(f"double {f64(chunk * 2.0 ** (-22 - 24 * c))}")
    return (f"@tj_2opi = internal unnamed_addr constant [{4 * (TRIG_KMAX + 1)} x double] "
            f"[{', '.join(vals)}]")


def _dpoly(var: str, coeffs: list[float], prefix: str) -> tuple[list[str], str]:
    lines, acc = [], f64(coeffs[0])
    for i, c in enumerate(coeffs[1:]):
        name = f"%{prefix}{i}"
        lines.append(f"  {name} = call double @llvm.fma.f64(double {acc}, double {var}, "
                     f"double {f64(c)})")
        acc = name
    return lines, acc


def _trigf() -> str:
    """@tj_trigf(x, q0): sin(x) for q0 = 0, cos(x) for q0 = 1 (cos x = sin(x + pi/2))."""
    sp, spr = _dpoly("%z", [1 / math.factorial(n) * (-1) ** ((n - 1) // 2)
                            for n in (13, 11, 9, 7, 5, 3)], "sp")
    cp, cpr = _dpoly("%z", [1 / math.factorial(n) * (-1) ** (n // 2)
                            for n in (14, 12, 10, 8, 6, 4, 2)], "cp")
    p1, p2, p3 = _pi_over_2_parts()
    return "\n".join([
        "define internal float @tj_trigf(float %x, i32 %q0) alwaysinline {",
        "  %ax = call float @llvm.fabs.f32(float %x)",
        "  %xd = fpext float %ax to double",
        # |x| < 2**23: Cody-Waite
        f"  %t = fmul double %xd, {f64(2 / math.pi)}",
        "  %js = call double @llvm.rint.f64(double %t)",
        "  %njs = fneg double %js",
        f"  %rs1 = call double @llvm.fma.f64(double %njs, double {f64(p1)}, double %xd)",
        f"  %rs2 = call double @llvm.fma.f64(double %njs, double {f64(p2)}, double %rs1)",
        f"  %rs = call double @llvm.fma.f64(double %njs, double {f64(p3)}, double %rs2)",
        "  %jsi = fptosi double %js to i32",
        # |x| >= 2**23: M * table[k]
        "  %bits = bitcast float %ax to i32",
        "  %e = lshr i32 %bits, 23",
        "  %k0 = sub i32 %e, 150",
        "  %k1 = call i32 @llvm.smax.i32(i32 %k0, i32 0)",
        f"  %k = call i32 @llvm.smin.i32(i32 %k1, i32 {TRIG_KMAX})",
        "  %mb = and i32 %bits, 8388607",
        "  %mi = or i32 %mb, 8388608",
        "  %m = sitofp i32 %mi to double",
        "  %i0 = shl i32 %k, 2",
        *[line for c in range(4) for line in (
            f"  %i{c + 1} = add i32 %i0, {c}",
            f"  %g{c} = getelementptr inbounds [{4 * (TRIG_KMAX + 1)} x double], ptr @tj_2opi, "
            f"i32 0, i32 %i{c + 1}",
            f"  %c{c} = load double, ptr %g{c}")],
        "  %pa = fmul double %m, %c0",
        "  %pa4 = fmul double %pa, 0.25",
        "  %pf = call double @llvm.floor.f64(double %pa4)",
        "  %p0 = call double @llvm.fma.f64(double %pf, double -4.0, double %pa)",
        "  %s0 = call double @llvm.fma.f64(double %m, double %c1, double %p0)",
        "  %s04 = fmul double %s0, 0.25",
        "  %sf = call double @llvm.floor.f64(double %s04)",
        "  %s = call double @llvm.fma.f64(double %sf, double -4.0, double %s0)",
        "  %jl = call double @llvm.rint.f64(double %s)",
        "  %f0 = fsub double %s, %jl",
        "  %u0 = fmul double %m, %c3",
        "  %u = call double @llvm.fma.f64(double %m, double %c2, double %u0)",
        "  %f = fadd double %f0, %u",
        f"  %rl = fmul double %f, {f64(math.pi / 2)}",
        "  %jli = fptosi double %jl to i32",
        f"  %big = fcmp oge float %ax, {f32(8388608.0)}",
        "  %r = select i1 %big, double %rl, double %rs",
        "  %j = select i1 %big, i32 %jli, i32 %jsi",
        # polynomials on [-pi/4, pi/4], then the quadrant
        "  %z = fmul double %r, %r",
        *sp,
        f"  %sz = fmul double {spr}, %z",
        "  %sr = fmul double %sz, %r",
        "  %sn = fadd double %sr, %r",
        *cp,
        f"  %cn = call double @llvm.fma.f64(double {cpr}, double %z, double 1.0)",
        "  %jq = add i32 %j, %q0",
        "  %q = and i32 %jq, 3",
        "  %odd = trunc i32 %q to i1",
        "  %v = select i1 %odd, double %cn, double %sn",
        "  %q2 = and i32 %q, 2",
        "  %flip = icmp ne i32 %q2, 0",
        "  %nv = fneg double %v",
        "  %v1 = select i1 %flip, double %nv, double %v",
        # sin is odd: the sign of x; cos is even
        "  %neg = fcmp olt float %x, 0.0",
        "  %issin = icmp eq i32 %q0, 0",
        "  %sflip = and i1 %neg, %issin",
        "  %nv1 = fneg double %v1",
        "  %v2 = select i1 %sflip, double %nv1, double %v1",
        "  %y = fptrunc double %v2 to float",
        "  %bad = fcmp ueq float %ax, 0x7FF0000000000000",     # inf or nan
        "  %o = select i1 %bad, float 0x7FF8000000000000, float %y",
        "  ret float %o",
        "}",
        "define internal float @tj_sinf(float %x) alwaysinline {",
        "  %r = call float @tj_trigf(float %x, i32 0)",
        "  ret float %r",
        "}",
        "define internal float @tj_cosf(float %x) alwaysinline {",
        "  %r = call float @tj_trigf(float %x, i32 1)",
        "  ret float %r",
        "}"])


# -- pow ---------------------------------------------------------------------------------------
# exp(y * log|x|) in double precision (log by atanh series around the mantissa, exp by Taylor
# after a two-part ln2 reduction), rounded once to float32; IEEE's special cases by selects.
def _powf() -> str:
    lp, lpr = _dpoly("%s2", [2 / (2 * n + 1) for n in range(9, -1, -1)], "lp")
    ep, epr = _dpoly("%r", [1 / math.factorial(n) for n in range(13, -1, -1)], "ep")
    ln2_hi = float.fromhex("0x1.62e42fee00000p-1")       # few bits: n * ln2_hi is exact
    ln2_lo = math.log(2) - ln2_hi
    return "\n".join([
        "define internal float @tj_powf(float %x, float %y) alwaysinline {",
        "  %axf = call float @llvm.fabs.f32(float %x)",
        "  %ax = fpext float %axf to double",
        "  %yd = fpext float %y to double",
        # log|x| = e*ln2 + 2*atanh((m-1)/(m+1)), m in [sqrt(1/2), sqrt(2))
        "  %b = bitcast double %ax to i64",
        "  %eb = lshr i64 %b, 52",
        "  %e0 = sub i64 %eb, 1023",
        "  %mb = and i64 %b, 4503599627370495",
        "  %mb1 = or i64 %mb, 4607182418800017408",
        "  %m0 = bitcast i64 %mb1 to double",
        f"  %hi = fcmp ogt double %m0, {f64(math.sqrt(2))}",
        "  %mh = fmul double %m0, 0.5",
        "  %m = select i1 %hi, double %mh, double %m0",
        "  %e1 = add i64 %e0, 1",
        "  %e = select i1 %hi, i64 %e1, i64 %e0",
        "  %num = fsub double %m, 1.0",
        "  %den = fadd double %m, 1.0",
        "  %s = fdiv double %num, %den",
        "  %s2 = fmul double %s, %s",
        *lp,
        f"  %at = fmul double {lpr}, %s",
        "  %ed = sitofp i64 %e to double",
        f"  %lg0 = call double @llvm.fma.f64(double %ed, double {f64(math.log(2))}, double %at)",
        "  %xz = fcmp oeq double %ax, 0.0",
        "  %xi = fcmp oeq double %ax, 0x7FF0000000000000",
        "  %lg1 = select i1 %xz, double 0xFFF0000000000000, double %lg0",
        "  %lg = select i1 %xi, double 0x7FF0000000000000, double %lg1",
        # exp(y * log|x|), clamped to where float32 results are 0 or inf anyway
        "  %t0 = fmul double %yd, %lg",
        "  %tb = fcmp ogt double %t0, 200.0",
        "  %t1 = select i1 %tb, double 200.0, double %t0",
        "  %ts = fcmp olt double %t1, -200.0",
        "  %t2 = select i1 %ts, double -200.0, double %t1",
        "  %tn = fcmp uno double %t0, 0.0",
        "  %t = select i1 %tn, double 0.0, double %t2",
        f"  %nf0 = fmul double %t, {f64(1 / math.log(2))}",
        "  %nf = call double @llvm.rint.f64(double %nf0)",
        "  %nn = fneg double %nf",
        f"  %r0 = call double @llvm.fma.f64(double %nn, double {f64(ln2_hi)}, double %t)",
        f"  %r = call double @llvm.fma.f64(double %nn, double {f64(ln2_lo)}, double %r0)",
        *ep,
        "  %ni = fptosi double %nf to i64",
        "  %nb = add i64 %ni, 1023",
        "  %nsh = shl i64 %nb, 52",
        "  %sc = bitcast i64 %nsh to double",
        f"  %pw = fmul double {epr}, %sc",
        # the sign for a negative base and an odd integer exponent; NaN for a non-integer one
        "  %yf = call float @llvm.floor.f32(float %y)",
        "  %yint = fcmp oeq float %yf, %y",
        "  %yh = fmul float %y, 0.5",
        "  %yhf = call float @llvm.floor.f32(float %yh)",
        "  %yeven = fcmp oeq float %yhf, %yh",
        "  %notev = xor i1 %yeven, true",
        "  %yodd = and i1 %yint, %notev",
        "  %xneg = fcmp olt float %x, 0.0",
        "  %xsign = bitcast float %x to i32",
        "  %xsb = icmp slt i32 %xsign, 0",                      # includes -0.0
        "  %negodd = and i1 %xsb, %yodd",
        "  %npw = fneg double %pw",
        "  %v0 = select i1 %negodd, double %npw, double %pw",
        "  %v = fptrunc double %v0 to float",
        "  %ynint = xor i1 %yint, true",
        "  %xfin = fcmp one float %x, 0xFFF0000000000000",      # (-inf) ** y is +-inf or +-0
        "  %negfin = and i1 %xneg, %xfin",
        "  %badneg = and i1 %negfin, %ynint",
        "  %xnan = fcmp uno float %x, 0.0",
        "  %ynan = fcmp uno float %y, 0.0",
        "  %anynan = or i1 %xnan, %ynan",
        "  %isnan = or i1 %anynan, %badneg",
        "  %o1 = select i1 %isnan, float 0x7FF8000000000000, float %v",
        # 1 ** y = 1, x ** 0 = 1, (-1) ** +-inf = 1 (even for NaN operands)
        "  %x1 = fcmp oeq float %x, 1.0",
        "  %y0 = fcmp oeq float %y, 0.0",
        "  %xm1 = fcmp oeq float %x, -1.0",
        "  %ay = call float @llvm.fabs.f32(float %y)",
        "  %yinf = fcmp oeq float %ay, 0x7FF0000000000000",
        "  %m1inf = and i1 %xm1, %yinf",
        "  %one0 = or i1 %x1, %y0",
        "  %one = or i1 %one0, %m1inf",
        "  %o = select i1 %one, float 1.0, float %o1",
        "  ret float %o",
        "}"])


DECLS = """declare float @llvm.floor.f32(float)
declare double @llvm.fma.f64(double, double, double)
declare double @llvm.rint.f64(double)
declare double @llvm.floor.f64(double)
declare i32 @llvm.smax.i32(i32, i32)
declare i32 @llvm.smin.i32(i32, i32)
declare float @llvm.fma.f32(float, float, float)
declare float @llvm.rint.f32(float)
declare float @llvm.fabs.f32(float)
declare double @llvm.fabs.f64(double)
declare float @llvm.copysign.f32(float, float)
declare float @llvm.maximum.f32(float, float)
declare float @llvm.minimum.f32(float, float)
declare double @llvm.maximum.f64(double, double)
declare double @llvm.minimum.f64(double, double)
declare float @llvm.sqrt.f32(float)
declare double @llvm.sqrt.f64(double)
declare i32 @llvm.abs.i32(i32, i1)
declare i64 @llvm.abs.i64(i64, i1)
declare i32 @llvm.fptosi.sat.i32.f32(float)
declare i64 @llvm.fptosi.sat.i64.f32(float)
declare i32 @llvm.fptosi.sat.i32.f64(double)
declare i64 @llvm.fptosi.sat.i64.f64(double)
declare float @sinf(float)
declare float @cosf(float)
declare float @powf(float, float)
declare double @exp(double)
declare double @log(double)
declare double @tanh(double)
declare double @sin(double)
declare double @cos(double)
declare double @pow(double, double)
"""


@functools.lru_cache(maxsize=None)
def library(inline: bool = True) -> str:
    """The module prelude: intrinsic and libm declarations plus the float32 functions, inlined
    into loops (so they vectorize) or, for modules that favour compile time, called."""
    if inline:
        return "\n\n".join([DECLS, _trig_table(), _expf(), _logf(), _tanhf(), _trigf(),
                              _powf()])
    # built for compile time: nothing vectorizes across these calls anyway, and the C
    # library's scalar sinf/cosf (also within an ulp) beat the double-precision reduction
    libm_trig = "\n".join(f"define internal float @tj_{f}(float %x) noinline {{\n"
                           f"  %r = call float @{f}(float %x)\n  ret float %r\n}}"
                           for f in ("sinf", "cosf")) + \
        "\ndefine internal float @tj_powf(float %x, float %y) noinline {\n" \
        "  %r = call float @powf(float %x, float %y)\n  ret float %r\n}"
    text = "\n\n".join([DECLS, _expf(), _logf(), _tanhf(), libm_trig])
    return text.replace("alwaysinline", "noinline")


# (dtype name, op) -> the function a scalar op calls
CALLS = {
    ("f32", "exp"): "tj_expf", ("f32", "log"): "tj_logf", ("f32", "tanh"): "tj_tanhf",
    ("f32", "sin"): "tj_sinf", ("f32", "cos"): "tj_cosf", ("f32", "pow"): "tj_powf",
    ("f64", "exp"): "exp", ("f64", "log"): "log", ("f64", "tanh"): "tanh",
    ("f64", "sin"): "sin", ("f64", "cos"): "cos", ("f64", "pow"): "pow",
    # erf and erfc: llvm_special.py (tj_erff vectorizes; erfc calls the C library)
    ("f32", "erf"): "tj_erff", ("f64", "erf"): "erf",
    ("f32", "erfc"): "erfcf", ("f64", "erfc"): "erfc",
    # ir/prims_libm.py: the C library's function of the same name (declared in llvm_special)
    **{(d, n): n + ("f" if d == "f32" else "") for n in LIBM for d in ("f32", "f64")},
}
