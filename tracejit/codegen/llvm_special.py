"""The error function for float32 in LLVM IR: a branch-free double-precision approximation,
rounded once, so the loop vectorizer sees plain arithmetic (libm's erff does not vectorize).

erf(x) for a = |x|: below 1, a * A(a^2) (A of degree 10, relative error under 1e-15); from 1
on, 1 - B(min(a, 4)) with B a Chebyshev series of degree 20 for erfc on [1, 4] (absolute error
under 1.2e-12), evaluated by Clenshaw's recurrence, which stays accurate where the monomial
form of such a series would cancel. Beyond 4, erfc(a) < 1.6e-8 rounds away in float32 and the
clamped series gives exactly 1.0. Both branches run for every lane and a select picks one; the
sign is copied from x, so erf(-0.0) = -0.0 and NaN stays NaN. The coefficients were fitted
once (Chebyshev nodes against math.erf/math.erfc); ir/prims_special.py holds them as hex
floats, and its NumPy implementation evaluates the same approximation.

erfc has no such implementation: its relative accuracy for large x needs exp(-x^2) in double
precision, which the CPU code has no vectorized form of, so both widths call the C library.
"""
from __future__ import annotations

import functools

from ..ir.prims_special import ERF_SMALL as _ERF_SMALL, ERFC_MID as _ERFC_MID
from .llvm_math import f64


def _lit(h: str) -> str:
    return f64(float.fromhex(h))


def _erff() -> str:
    lines = [
        "define internal float @tj_erff(float %x) alwaysinline {",
        "  %xd = fpext float %x to double",
        "  %a = call double @llvm.fabs.f64(double %xd)",
        "  %s = fmul double %a, %a",
    ]
    # small |x|: Horner in s, highest coefficient first
    acc = _lit(_ERF_SMALL[-1])
    for i, c in enumerate(reversed(_ERF_SMALL[:-1])):
        lines.append(f"  %pa{i} = call double @llvm.fma.f64(double {acc}, double %s, "
                     f"double {_lit(c)})")
        acc = f"%pa{i}"
    lines += [
        f"  %ra = fmul double %a, {acc}",
        # the rest: Clenshaw's recurrence for the erfc series, a clamped to [.., 4]
        "  %big = fcmp ogt double %a, 4.0",
        "  %ac = select i1 %big, double 4.0, double %a",
        "  %uc = fsub double %ac, 2.5",
        "  %u = fdiv double %uc, 1.5",
        "  %u2 = fadd double %u, %u",
    ]
    b1, b2 = _lit(_ERFC_MID[-1]), "0.0"
    for k in range(len(_ERFC_MID) - 2, 0, -1):
        lines.append(f"  %cf{k} = call double @llvm.fma.f64(double %u2, double {b1}, "
                     f"double {_lit(_ERFC_MID[k])})")
        lines.append(f"  %cb{k} = fsub double %cf{k}, {b2}")
        b1, b2 = f"%cb{k}", b1
    lines += [
        f"  %c0 = call double @llvm.fma.f64(double %u, double {b1}, double {_lit(_ERFC_MID[0])})",
        f"  %erfc = fsub double %c0, {b2}",
        "  %rb = fsub double 1.0, %erfc",
        "  %lt1 = fcmp olt double %a, 1.0",        # NaN takes the series branch: NaN out
        "  %r = select i1 %lt1, double %ra, double %rb",
        "  %rf = fptrunc double %r to float",
        "  %rbits = bitcast float %rf to i32",
        "  %xbits = bitcast float %x to i32",
        "  %sign = and i32 %xbits, -2147483648",
        "  %obits = or i32 %rbits, %sign",
        "  %o = bitcast i32 %obits to float",
        "  ret float %o",
        "}",
    ]
    return "\n".join(lines)


_DECLS = """declare double @erf(double)
declare float @erfcf(float)
declare double @erfc(double)"""


@functools.lru_cache(maxsize=None)
def special_library(inline: bool = True) -> str:
    """erf/erfc for the module prelude (next to llvm_math.library): the float32 erf inlined
    into loops, or called in modules built for compile speed."""
    text = "\n\n".join([_DECLS, _erff()])
    return text if inline else text.replace("alwaysinline", "noinline")


__all__ = ["special_library"]
