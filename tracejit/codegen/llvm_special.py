"""The error function for float32 in LLVM IR: ir/prims_special.py's float32 approximation,
step for step (its module doc says how and how accurate), so eager NumPy and compiled results
are the same bits. Every step is one fmul/fadd without fast-math flags (no contraction into
FMAs), both branches are straight-line code and a select picks one, so the loop vectorizer
sees plain float32 arithmetic (libm's erff does not vectorize).

erfc has no such implementation: its relative accuracy for large x needs exp(-x^2) in double
precision, which the CPU code has no vectorized form of, so both widths call the C library.
"""
from __future__ import annotations

import functools

from ..ir import prims_special as _ps
from ..ir.prims_libm import UNARY
from .llvm_math import f32


def _lit(h: str) -> str:
    return f32(float.fromhex(h))


def _horner(var: str, coeffs: list[str], prefix: str) -> tuple[list[str], str]:
    """coeffs[0]*var^(n-1) + ... + coeffs[-1] (highest first), a multiply and an add per
    step."""
    lines, acc = [], _lit(coeffs[0])
    for i, c in enumerate(coeffs[1:]):
        lines += [f"  %{prefix}m{i} = fmul float {acc}, {var}",
                  f"  %{prefix}a{i} = fadd float %{prefix}m{i}, {_lit(c)}"]
        acc = f"%{prefix}a{i}"
    return lines, acc


def _erff() -> str:
    small, ps = _horner("%s", list(reversed(_ps.ERF_SMALL)), "p")
    big, q = _horner("%t", list(reversed(_ps.ERFC_LOG)), "q")
    ex, pe = _horner("%r", _ps.EXP_P, "e")
    return "\n".join([
        "define internal float @tj_erff(float %x) alwaysinline {",
        "  %a = call float @llvm.fabs.f32(float %x)",
        "  %s = fmul float %a, %a",
        *small,
        f"  %pa = fmul float {ps}, %a",
        "  %ra = fadd float %pa, %a",
        # a >= ERF_SPLIT: 1 - exp(B(min(a, ERF_CLAMP))); NaN stays NaN through the select
        f"  %big = fcmp ogt float %a, {_lit(_ps.ERF_CLAMP)}",
        f"  %t = select i1 %big, float {_lit(_ps.ERF_CLAMP)}, float %a",
        *big,
        f"  %n0 = fmul float {q}, {_lit(_ps.EXP_LOG2E)}",
        "  %n = call float @llvm.rint.f32(float %n0)",
        f"  %nh = fmul float %n, {_lit(_ps.EXP_LN2_HI)}",
        f"  %r0 = fsub float {q}, %nh",
        f"  %nl = fmul float %n, {_lit(_ps.EXP_LN2_LO)}",
        "  %r = fsub float %r0, %nl",
        *ex,
        "  %r2 = fmul float %r, %r",
        f"  %y0 = fmul float {pe}, %r2",
        "  %y1 = fadd float %y0, %r",
        "  %y = fadd float %y1, 1.0",
        # 2^n, n in [-24, -2], from the bits of n + 1.5 * 2^23 (n in its low mantissa
        # bits): a float-to-int conversion that saturates (for NaN) did not vectorize
        f"  %m = fadd float %n, {_lit(_ps.EXP_SHIFTER)}",
        "  %mb = bitcast float %m to i32",
        "  %eb = add i32 %mb, 127",
        "  %sb = shl i32 %eb, 23",
        "  %sc = bitcast i32 %sb to float",
        "  %e = fmul float %y, %sc",
        "  %rb = fsub float 1.0, %e",
        f"  %lt = fcmp olt float %a, {_lit(_ps.ERF_SPLIT)}",
        "  %res = select i1 %lt, float %ra, float %rb",
        "  %o = call float @llvm.copysign.f32(float %res, float %x)",
        "  ret float %o",
        "}",
    ])


_DECLS = """declare double @erf(double)
declare float @erfcf(float)
declare double @erfc(double)"""
# ir/prims_libm.py's functions, the C library's at both widths: name -> declaration, added
# to a module only when its code calls them (llvm_program._prelude; parsing all 26 per kernel
# would cost ~55 us each)
LIBM_DECLS = {f"{n}{s}": f"declare {t} @{n}{s}({', '.join([t] * k)})"
              for n, k in [(n, 1) for n in UNARY] + [("atan2", 2), ("nextafter", 2)]
              for s, t in (("f", "float"), ("", "double"))}


@functools.lru_cache(maxsize=None)
def special_library(inline: bool = True) -> str:
    """erf/erfc for the module prelude (next to llvm_math.library): the float32 erf inlined
    into loops, or called in modules built for compile speed."""
    text = "\n\n".join([_DECLS, _erff()])
    return text if inline else text.replace("alwaysinline", "noinline")


__all__ = ["special_library", "LIBM_DECLS"]
