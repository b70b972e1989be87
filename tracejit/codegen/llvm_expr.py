"""Scalar expressions in LLVM IR text: the scalar builder that primitives' `scalar` rules call,
and the emitter that evaluates a fused expression at an index vector."""
from __future__ import annotations

import struct

import numpy as np

from ..ir import dtypes as dt
from ..ir.core import Value
from .expr import ExprEmitter, Scalar, compute_dtype
from .llvm_math import CALLS

# storage type in memory, compute type in registers
# (bfloat16 as raw bits: LLVM's bfloat type needs compiler-rt helpers on most x86 CPUs)
# (uint8, int8 and int16 compute in their own width, so arithmetic wraps as torch's; LLVM's
# integer types carry no sign: uint8 takes the unsigned compare, divide, shift and extend)
STORE = {"f16": "half", "bf16": "i16", "f32": "float", "f64": "double", "u8": "i8", "i8": "i8",
         "i16": "i16", "i32": "i32", "i64": "i64", "bool": "i8"}
COMPUTE = {"f16": "float", "bf16": "float", "f32": "float", "f64": "double", "u8": "i8",
           "i8": "i8", "i16": "i16", "i32": "i32", "i64": "i64", "bool": "i1"}


def literal(value, d: dt.DType) -> str:
    """An exact LLVM constant of compute type for `value`."""
    d = compute_dtype(d)
    if d.is_float:
        v = float(np.asarray(value, d.np))
        if d is dt.f32:
            v = float(np.float32(v))
        return "0x%016X" % struct.unpack("<Q", struct.pack("<d", v))[0]
    if d is dt.bool_:
        return "true" if bool(value) else "false"
    v = int(value)
    if d.bits < 32:        # two's complement in the type's width (uint8's 255 is i8 -1)
        v &= (1 << d.bits) - 1
        v -= (1 << d.bits) if v >> (d.bits - 1) else 0
    return str(v)


def _i32(k: int) -> str:
    """A 32-bit word as an i32 literal (LLVM reads them signed)."""
    k &= 0xFFFFFFFF
    return str(k - (1 << 32) if k >= 1 << 31 else k)


class S(Scalar):
    """A scalar SSA value: its LLVM name and its dtype."""

    __slots__ = ()
    TYPES = COMPUTE


class Body:
    """Accumulates instructions; hands out fresh SSA names."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.n = 0

    def tmp(self) -> str:
        self.n += 1
        return f"%v{self.n}"

    def op(self, text: str) -> str:
        r = self.tmp()
        self.lines.append(f"  {r} = {text}")
        return r

    def label(self, name: str) -> None:
        self.lines.append(f"{name}:")

    def raw(self, text: str) -> None:
        self.lines.append(f"  {text}")


class ScalarBuilder:
    """The vocabulary of the primitives' scalar rules, lowered to LLVM IR."""

    # No `contract`: fusion recomputes a value in every kernel that reads it, and LLVM fuses a*b+c
    # into an FMA or not depending on the code around it (vector body or scalar tail), so two
    # recomputations could differ in the last bit; max/min gradients compare a recomputed input
    # with the stored maximum (eq) and divide by the tie count, which was then 0: NaN.
    FLAGS = ""

    def __init__(self, body: Body) -> None:
        self.b = body

    def const(self, value, like: S) -> S:
        return S(literal(value, like.dtype), like.dtype)

    def literal(self, value, d: dt.DType) -> S:
        return S(literal(value, d), d)

    def _arith(self, fop: str, iop: str, a: S, b: S) -> S:
        if a.dtype.is_float:
            return S(self.b.op(f"{fop} {self.FLAGS} {a.ty} {a.ref}, {b.ref}"), a.dtype)
        return S(self.b.op(f"{iop} {a.ty} {a.ref}, {b.ref}"), a.dtype)

    def add(self, a, b): return self._arith("fadd", "add", a, b)
    def sub(self, a, b): return self._arith("fsub", "sub", a, b)
    def mul(self, a, b): return self._arith("fmul", "mul", a, b)

    def div(self, a, b):
        return S(self.b.op(f"fdiv {a.ty} {a.ref}, {b.ref}"), a.dtype)

    # integer division truncating toward zero (the caller keeps the divisor off 0 and -1)
    def tdiv(self, a, b):
        return S(self.b.op(f"{'s' if a.dtype.signed else 'u'}div {a.ty} {a.ref}, {b.ref}"),
                 a.dtype)

    def trem(self, a, b):
        return S(self.b.op(f"{'s' if a.dtype.signed else 'u'}rem {a.ty} {a.ref}, {b.ref}"),
                 a.dtype)

    def shift(self, op: str, a: S, b: S) -> S:
        """a << b or a >> b (arithmetic for signed, logical for uint8) with torch's rule for
        counts outside [0, bits): left gives 0, right the sign fill (LLVM leaves those
        undefined, so the count is clamped and the result selected)."""
        w = a.dtype.bits
        ok = self.b.op(f"icmp ult {a.ty} {b.ref}, {w}")     # (negative counts: huge, unsigned)
        cnt = self.b.op(f"select i1 {ok}, {a.ty} {b.ref}, {a.ty} {w - 1}")
        if op == "left":
            r = self.b.op(f"shl {a.ty} {a.ref}, {cnt}")
            return S(self.b.op(f"select i1 {ok}, {a.ty} {r}, {a.ty} 0"), a.dtype)
        r = self.b.op(f"{'ashr' if a.dtype.signed else 'lshr'} {a.ty} {a.ref}, {cnt}")
        if a.dtype.signed:          # ashr by bits-1 is already the sign fill
            return S(r, a.dtype)
        return S(self.b.op(f"select i1 {ok}, {a.ty} {r}, {a.ty} 0"), a.dtype)

    def fmod(self, a, b):
        return S(self.b.op(f"frem {a.ty} {a.ref}, {b.ref}"), a.dtype)   # C's fmod, exact

    def floor(self, a):
        suf = "f32" if a.dtype is dt.f32 else "f64"
        return S(self.b.op(f"call {a.ty} @llvm.floor.{suf}({a.ty} {a.ref})"), a.dtype)

    def neg(self, a):
        if a.dtype.is_float:
            return S(self.b.op(f"fneg {a.ty} {a.ref}"), a.dtype)
        return S(self.b.op(f"sub {a.ty} 0, {a.ref}"), a.dtype)

    def _call(self, name: str, *args: S) -> S:
        a = args[0]
        fn = CALLS[(a.dtype.name, name)]
        params = ", ".join(f"{x.ty} {x.ref}" for x in args)
        return S(self.b.op(f"call {a.ty} @{fn}({params})"), a.dtype)

    def exp(self, a): return self._call("exp", a)
    def log(self, a): return self._call("log", a)
    def sin(self, a): return self._call("sin", a)
    def cos(self, a): return self._call("cos", a)
    def tanh(self, a): return self._call("tanh", a)
    def erf(self, a): return self._call("erf", a)

    def pow(self, a, b):
        if a.dtype.is_float:
            return self._call("pow", a, b)
        # integers: llvm_ipow.py's square-and-multiply (PyTorch's semantics)
        return S(self.b.op(f"call {a.ty} @tj_ipow_{a.dtype.name}({a.ty} {a.ref}, {b.ty} "
                           f"{b.ref})"), a.dtype)
    def erfc(self, a): return self._call("erfc", a)
    def libm(self, name, *a): return self._call(name, *a)   # ir/prims_libm.py

    def signbit(self, a: S) -> S:
        """The sign bit of a float (16-bit floats compute widened, which keeps it)."""
        it = "i32" if a.ty == "float" else "i64"
        bits = self.b.op(f"bitcast {a.ty} {a.ref} to {it}")
        return S(self.b.op(f"icmp slt {it} {bits}, 0"), dt.bool_)

    def sqrt(self, a):
        suf = "f32" if a.dtype is dt.f32 else "f64"
        return S(self.b.op(f"call {a.ty} @llvm.sqrt.{suf}({a.ty} {a.ref})"), a.dtype)

    def abs(self, a):
        if a.dtype.is_float:
            suf = "f32" if a.dtype is dt.f32 else "f64"
            return S(self.b.op(f"call {a.ty} @llvm.fabs.{suf}({a.ty} {a.ref})"), a.dtype)
        if not a.dtype.signed:
            return a
        return S(self.b.op(f"call {a.ty} @llvm.abs.{a.ty}({a.ty} {a.ref}, i1 false)"), a.dtype)

    def cmp(self, op: str, a: S, b: S) -> S:
        if a.dtype.is_float:
            pred = {"lt": "olt", "le": "ole", "gt": "ogt", "ge": "oge", "eq": "oeq",
                    "ne": "une"}[op]
            return S(self.b.op(f"fcmp {pred} {a.ty} {a.ref}, {b.ref}"), dt.bool_)
        if not a.dtype.signed:      # uint8; and as a signed i1, true is -1: bools too
            pred = {"lt": "ult", "le": "ule", "gt": "ugt", "ge": "uge", "eq": "eq", "ne": "ne"}[op]
        else:
            pred = {"lt": "slt", "le": "sle", "gt": "sgt", "ge": "sge", "eq": "eq",
                    "ne": "ne"}[op]
        return S(self.b.op(f"icmp {pred} {a.ty} {a.ref}, {b.ref}"), dt.bool_)

    def lt(self, a, b): return self.cmp("lt", a, b)
    def gt(self, a, b): return self.cmp("gt", a, b)

    def select(self, c: S, a: S, b: S) -> S:
        return S(self.b.op(f"select i1 {c.ref}, {a.ty} {a.ref}, {b.ty} {b.ref}"), a.dtype)

    def bitwise(self, op: str, a: S, b: S | None = None) -> S:
        """and/or/xor of two integers or bools, or not of one (xor with all ones)."""
        other = b.ref if b is not None else "true" if a.dtype is dt.bool_ else "-1"
        return S(self.b.op(f"{'xor' if op == 'not' else op} {a.ty} {a.ref}, {other}"), a.dtype)

    def _extreme(self, a: S, b: S, pick: str) -> S:
        if not a.dtype.is_float:
            return self.select(self.cmp(pick, a, b), a, b)
        # llvm.maximum/minimum propagate NaN like NumPy, and vectorize (also as reductions)
        fn = ("maximum" if pick == "gt" else "minimum") + (".f32" if a.ty == "float" else ".f64")
        return S(self.b.op(f"call {a.ty} @llvm.{fn}({a.ty} {a.ref}, {b.ty} {b.ref})"), a.dtype)

    def max(self, a, b): return self._extreme(a, b, "gt")
    def min(self, a, b): return self._extreme(a, b, "lt")

    # -- 32-bit unsigned words (the random primitive's Philox): plain i32 SSA names; LLVM's
    # add, mul and xor do not care about signedness, shifts are logical ------------------------
    def u32_word(self, a: S, hi: int) -> str:
        """The low (hi=0) or high (hi=1) 32 bits of an i64 scalar."""
        x = self.b.op(f"lshr i64 {a.ref}, 32") if hi else a.ref
        return self.b.op(f"trunc i64 {x} to i32")

    def u32_add(self, a: str, k: int) -> str:
        return self.b.op(f"add i32 {a}, {_i32(k)}")

    def u32_xor(self, a: str, b: str) -> str:
        return self.b.op(f"xor i32 {a}, {b}")

    def u32_mulhilo(self, a: str, k: int) -> tuple[str, str]:
        """(high, low) words of the 64-bit product a * k."""
        p = self.b.op(f"mul nuw i64 {self.b.op(f'zext i32 {a} to i64')}, {k}")
        hi = self.b.op(f"trunc i64 {self.b.op(f'lshr i64 {p}, 32')} to i32")
        return hi, self.b.op(f"trunc i64 {p} to i32")

    def u32_unit(self, words: list[str], d: dt.DType, plus_one: bool) -> S:
        """Words -> a float in [0, 1) ((0, 1] with plus_one): 24 or 53 bits, exactly."""
        op = self.b.op
        if d is dt.f32:
            k = op(f"lshr i32 {words[0]}, 8")
            k = op(f"add nuw i32 {k}, 1") if plus_one else k
            x = op(f"uitofp i32 {k} to float")
            return S(op(f"fmul float {x}, {literal(2.0 ** -24, d)}"), d)
        hi = op(f"shl i64 {op(f'zext i32 {words[0]} to i64')}, 21")
        lo = op(f"lshr i32 {words[1]}, 11")
        k = op(f"or i64 {hi}, {op(f'zext i32 {lo} to i64')}")
        k = op(f"add nuw i64 {k}, 1") if plus_one else k
        x = op(f"uitofp i64 {k} to double")
        return S(op(f"fmul double {x}, {literal(2.0 ** -53, d)}"), d)

    # -- storage: 16-bit floats live narrow in memory and compute in float32 ------------------
    def widen(self, raw: str, d: dt.DType) -> S:
        """A value loaded as `d`'s storage type, in its compute type."""
        if d is dt.f16:
            return S(self.b.op(f"fpext half {raw} to float"), d)
        if d is dt.bf16:
            w = self.b.op(f"zext i16 {raw} to i32")
            w = self.b.op(f"shl i32 {w}, 16")
            return S(self.b.op(f"bitcast i32 {w} to float"), d)
        if d is dt.bool_:
            return S(self.b.op(f"trunc i8 {raw} to i1"), d)
        return S(raw, d)

    def narrow(self, s: S, d: dt.DType) -> str:
        """`s` in `d`'s storage type; floats round to nearest even, NaN stays NaN."""
        if d is dt.f16:
            return self.b.op(f"fptrunc float {s.ref} to half")
        if d is dt.bf16:
            op = self.b.op
            u = op(f"bitcast float {s.ref} to i32")
            hi = op(f"lshr i32 {u}, 16")
            odd = op(f"and i32 {hi}, 1")
            r = op(f"add i32 {u}, 32767")
            r = op(f"lshr i32 {op(f'add i32 {r}, {odd}')}, 16")
            quiet = op(f"or i32 {hi}, 64")
            nan = op(f"fcmp uno float {s.ref}, 0.0")
            r = op(f"select i1 {nan}, i32 {quiet}, i32 {r}")
            return op(f"trunc i32 {r} to i16")
        if d is dt.bool_:
            return self.b.op(f"zext i1 {s.ref} to i8")
        return s.ref

    def _to_f32_odd(self, a: S) -> S:
        """double -> float rounding to odd: rounding that again to a narrower format rounds
        correctly (LLVM's direct double -> half needs a compiler-rt helper)."""
        op = self.b.op
        t = op(f"fptrunc double {a.ref} to float")
        back = op(f"fpext float {t} to double")
        bits = op(f"bitcast float {t} to i32")
        above = op(f"fcmp ogt double {op(f'call double @llvm.fabs.f64(double {back})')}, "
                   f"{op(f'call double @llvm.fabs.f64(double {a.ref})')}")
        toward_zero = op(f"sub i32 {bits}, {op(f'zext i1 {above} to i32')}")
        inexact = op(f"fcmp one double {back}, {a.ref}")
        odd = op(f"select i1 {inexact}, i32 {op(f'or i32 {toward_zero}, 1')}, i32 {bits}")
        return S(op(f"bitcast i32 {odd} to float"), dt.f32)

    def cast(self, a: S, to: dt.DType) -> S:
        if to in dt.HALF:
            # rounding to 16 bits is real work even though the result computes in float32
            if to is dt.f16 and a.dtype is dt.f64:     # one rounding, as NumPy does
                return self.widen(self.narrow(self._to_f32_odd(a), to), to)
            return self.widen(self.narrow(self.cast(a, dt.f32), to), to)
        to = compute_dtype(to)
        src, ty = a.dtype, COMPUTE[to.name]
        if src is to:
            return a
        if src.is_float and to.is_float:
            op = "fpext" if to.bits > src.bits else "fptrunc"
            return S(self.b.op(f"{op} {a.ty} {a.ref} to {ty}"), to)
        if src.is_float and to is dt.bool_:
            return S(self.b.op(f"fcmp une {a.ty} {a.ref}, 0.0"), to)
        if src.is_float and to in dt.SMALL_INT:
            # torch converts through int32 and keeps the low bits (-1.0 -> uint8 255); outside
            # int32's range (and NaN) x86 gives int32's min, whose low bits are 0
            i = self.cast(a, dt.i64)
            ok = self.b.op(f"icmp ult i64 {self.b.op(f'add i64 {i.ref}, 2147483648')}, "
                           f"4294967296")
            return self.cast(S(self.b.op(f"select i1 {ok}, i64 {i.ref}, i64 0"), dt.i64), to)
        if src.is_float:
            sf = "f32" if src is dt.f32 else "f64"
            return S(self.b.op(f"call {ty} @llvm.fptosi.sat.{ty}.{sf}({a.ty} {a.ref})"), to)
        if src is dt.bool_:
            op = "uitofp" if to.is_float else "zext"
            return S(self.b.op(f"{op} i1 {a.ref} to {ty}"), to)
        if to is dt.bool_:
            return S(self.b.op(f"icmp ne {a.ty} {a.ref}, 0"), to)
        if to.is_float:
            op = "sitofp" if src.signed else "uitofp"
            return S(self.b.op(f"{op} {a.ty} {a.ref} to {ty}"), to)
        if to.bits == src.bits:     # uint8 <-> int8: the same bits
            return S(a.ref, to)
        op = ("sext" if src.signed else "zext") if to.bits > src.bits else "trunc"
        return S(self.b.op(f"{op} {a.ty} {a.ref} to {ty}"), to)


class Emitter(ExprEmitter):
    """The LLVM side of ExprEmitter: index values are i64 SSA names or literals; `loads` and
    `stores` map values to the LLVM pointers they live at."""

    S = S

    def __init__(self, body: Body, loads: dict[Value, str], stores: dict[Value, str]) -> None:
        super().__init__(loads, stores)
        self.b = body
        self.sb = ScalarBuilder(body)

    def _mul(self, a: str, k: int) -> str:
        return self.b.op(f"mul i64 {a}, {k}")

    def _add(self, a: str, b: str) -> str:
        return self.b.op(f"add i64 {a}, {b}")

    def idiv(self, a: str, k: int, signed: bool = False) -> str:
        return self.b.op(f"{'sdiv' if signed else 'udiv'} i64 {a}, {k}")

    def irem(self, a: str, k: int, signed: bool = False) -> str:
        return self.b.op(f"{'srem' if signed else 'urem'} i64 {a}, {k}")

    def imin(self, a: str, b: str) -> str:
        return self.b.op(f"call i64 @llvm.smin.i64(i64 {a}, i64 {b})")

    def icmp(self, op: str, a: str, b: str) -> str:
        return self.b.op(f"icmp {_IPRED[op]} i64 {a}, {b}")

    def iand(self, a: str, b: str) -> str:
        return self.b.op(f"and i1 {a}, {b}")

    def iselect(self, c: str, a: str, b: str) -> str:
        return self.b.op(f"select i1 {c}, i64 {a}, i64 {b}")

    def to_index(self, s: S) -> str:
        return (s if s.dtype is dt.i64 else self.sb.cast(s, dt.i64)).ref

    def index_scalar(self, i: str) -> S:
        return S(i, dt.i64)

    def clamp(self, i: str, n: int) -> str:
        """i clamped into [0, n-1]: out-of-range indices never reach memory."""
        lo = self.b.op(f"call i64 @llvm.smax.i64(i64 {i}, i64 0)")
        return self.b.op(f"call i64 @llvm.smin.i64(i64 {lo}, i64 {max(n - 1, 0)})")

    def load(self, v: Value, flat: str) -> S:
        key = ("load", v, flat)
        if key in self.memo:
            return self.memo[key]
        st = STORE[v.dtype.name]
        p = self.b.op(f"getelementptr inbounds {st}, ptr {self.buffers[v]}, i64 {flat}")
        s = self.sb.widen(self.b.op(f"load {st}, ptr {p}"), v.dtype)
        self.memo[key] = s
        return s

    def store(self, v: Value, flat: str, s: S) -> None:
        st = STORE[v.dtype.name]
        x = self.sb.narrow(s, v.dtype)
        p = self.b.op(f"getelementptr inbounds {st}, ptr {self.outputs[v]}, i64 {flat}")
        self.b.raw(f"store {st} {x}, ptr {p}")


_IPRED = {"lt": "slt", "ge": "sge", "eq": "eq"}
