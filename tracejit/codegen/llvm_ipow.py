"""Integer power for the LLVM backend: PyTorch's semantics, as ir/prims_elementwise.py's
NumPy implementation. Square-and-multiply over the exponent's bits, so a huge exponent costs
at most 64 steps and overflow wraps (two's complement, like NumPy and PyTorch); 0 ** 0 is 1;
a negative exponent gives 1 for base 1, +-1 for base -1 and 0 otherwise.

A loop cannot live inside a fused expression (those are straight-line code in one block), so
the power is a small function the expression calls; integer loops do not vectorize it anyway."""
from __future__ import annotations

import functools


def _ipow(name: str, ty: str) -> str:
    # (uint8's exponent is never negative: `ult 0` is false)
    lt = "ult" if name.startswith("u") else "slt"
    return "\n".join([
        f"define internal {ty} @tj_ipow_{name}({ty} %x, {ty} %y) {{",
        "entry:",
        f"  %neg = icmp {lt} {ty} %y, 0",
        "  br i1 %neg, label %negative, label %loop",
        "negative:",
        f"  %one = icmp eq {ty} %x, 1",
        f"  %mone = icmp eq {ty} %x, -1",
        f"  %odd = trunc {ty} %y to i1",
        f"  %sgn = select i1 %odd, {ty} -1, {ty} 1",
        f"  %r0 = select i1 %mone, {ty} %sgn, {ty} 0",
        f"  %r1 = select i1 %one, {ty} 1, {ty} %r0",
        f"  ret {ty} %r1",
        "loop:",
        f"  %acc = phi {ty} [1, %entry], [%acc2, %body]",
        f"  %b = phi {ty} [%x, %entry], [%b2, %body]",
        f"  %e = phi {ty} [%y, %entry], [%e2, %body]",
        f"  %done = icmp eq {ty} %e, 0",
        "  br i1 %done, label %exit, label %body",
        "body:",
        f"  %bit = trunc {ty} %e to i1",
        f"  %m = mul {ty} %acc, %b",
        f"  %acc2 = select i1 %bit, {ty} %m, {ty} %acc",
        f"  %b2 = mul {ty} %b, %b",
        f"  %e2 = lshr {ty} %e, 1",
        "  br label %loop",
        "exit:",
        f"  ret {ty} %acc",
        "}",
    ])


@functools.lru_cache(maxsize=None)
def ipow_library() -> str:
    """The integer power functions for the module prelude."""
    return "\n\n".join(_ipow(name, ty) for name, ty in (
        ("u8", "i8"), ("i8", "i8"), ("i16", "i16"), ("i32", "i32"), ("i64", "i64")))


__all__ = ["ipow_library"]
