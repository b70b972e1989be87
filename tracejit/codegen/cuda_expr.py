"""Scalar expressions in CUDA C: the scalar builder that primitives' `scalar` rules call, and
the emitter that evaluates a fused expression at an index vector. Every intermediate is a named
`const` local, so the source reads like the IR it came from."""
from __future__ import annotations

import numpy as np

from ..ir import dtypes as dt
from ..ir.core import Value
from ..ir.prims_libm import NAMES as LIBM
from .expr import ExprEmitter, Scalar, compute_dtype

# storage type in memory (16-bit floats as raw bits: no cuda_fp16.h/cuda_bf16.h needed),
# compute type in registers
STORE = {"f16": "unsigned short", "bf16": "unsigned short", "f32": "float", "f64": "double",
         "u8": "unsigned char", "i8": "signed char", "i16": "short", "i32": "int",
         "i64": "long long", "bool": "unsigned char"}
_WIDEN = {"f16": "tj_h2f", "bf16": "tj_bf2f"}      # prelude functions: bits <-> float
_NARROW = {"f16": "tj_f2h", "bf16": "tj_f2bf"}
# (C computes uint8, int8 and int16 in int; each const local of the narrow type wraps the
# result as torch's arithmetic does)
COMPUTE = {"f32": "float", "f64": "double", "u8": "unsigned char", "i8": "signed char",
           "i16": "short", "i32": "int", "i64": "long long", "bool": "bool"}


def literal(value, d: dt.DType) -> str:
    """An exact C literal of compute type for `value` (hex floats; inf/nan by bit pattern)."""
    d = compute_dtype(d)
    if d.is_float:
        x = np.asarray(value, d.np)[()]
        if not np.isfinite(x):
            if d is dt.f32:
                return f"__int_as_float(0x{int(x.view(np.uint32)):08x})"
            return f"__longlong_as_double(0x{int(x.view(np.uint64)):016x}LL)"
        return float(x).hex() + ("f" if d is dt.f32 else "")
    if d is dt.bool_:
        return "true" if bool(value) else "false"
    v = int(value)
    if v == -2 ** (d.bits - 1):        # the literal 2**(bits-1) itself would overflow
        return f"({v + 1}{'LL' if d is dt.i64 else ''} - 1)"
    return f"{v}LL" if d is dt.i64 else str(v)


class CS(Scalar):
    """A scalar in C: the expression (a local's name or a literal) and its dtype."""

    __slots__ = ()
    TYPES = COMPUTE


class CBody:
    """Lines of C with indentation; hands out fresh local names."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.n = 0
        self.depth = 1

    def let(self, ty: str, expr: str) -> str:
        self.n += 1
        name = f"t{self.n}"
        self.line(f"const {ty} {name} = {expr};")
        return name

    def line(self, text: str) -> None:
        self.lines.append("  " * self.depth + text)

    def open(self, header: str) -> None:
        self.line(header + " {")
        self.depth += 1

    def close(self) -> None:
        self.depth -= 1
        self.line("}")


_UNARY = {"exp": ("expf", "exp"), "log": ("logf", "log"), "sin": ("sinf", "sin"),
          "cos": ("cosf", "cos"), "tanh": ("tanhf", "tanh"), "sqrt": ("sqrtf", "sqrt"),
          "pow": ("powf", "pow"), "erf": ("erff", "erf"), "erfc": ("erfcf", "erfc"),
          # ir/prims_libm.py: the C function of the same name
          **{n: (n + "f", n) for n in LIBM}}
_CMP = {"lt": "<", "le": "<=", "gt": ">", "ge": ">=", "eq": "==", "ne": "!="}
_BITWISE = {"and": "&", "or": "|", "xor": "^"}


class CScalarBuilder:
    """The vocabulary of the primitives' scalar rules, lowered to CUDA C. Functions are CUDA's
    IEEE versions (no fast-math), so results stay within a few ulp of NumPy."""

    def __init__(self, body: CBody) -> None:
        self.b = body

    def _let(self, d: dt.DType, expr: str) -> CS:
        return CS(self.b.let(COMPUTE[compute_dtype(d).name], expr), d)

    def const(self, value, like: CS) -> CS:
        return CS(literal(value, like.dtype), like.dtype)

    def literal(self, value, d: dt.DType) -> CS:
        return CS(literal(value, d), d)

    def add(self, a, b): return self._let(a.dtype, f"{a.ref} + {b.ref}")
    def sub(self, a, b): return self._let(a.dtype, f"{a.ref} - {b.ref}")
    def mul(self, a, b): return self._let(a.dtype, f"{a.ref} * {b.ref}")
    def div(self, a, b): return self._let(a.dtype, f"{a.ref} / {b.ref}")
    def neg(self, a): return self._let(a.dtype, f"-({a.ref})")

    # integer division truncating toward zero (the caller keeps the divisor off 0 and -1)
    def tdiv(self, a, b): return self._let(a.dtype, f"{a.ref} / {b.ref}")
    def trem(self, a, b): return self._let(a.dtype, f"{a.ref} % {b.ref}")

    def fmod(self, a, b):
        fn = "fmodf" if a.dtype is dt.f32 else "fmod"
        return self._let(a.dtype, f"{fn}({a.ref}, {b.ref})")

    def floor(self, a):
        return self._let(a.dtype, f"{'floorf' if a.dtype is dt.f32 else 'floor'}({a.ref})")

    def _call(self, name: str, *args: CS) -> CS:
        fn = _UNARY[name][0 if args[0].dtype is dt.f32 else 1]
        return self._let(args[0].dtype, f"{fn}({', '.join(x.ref for x in args)})")

    def exp(self, a): return self._call("exp", a)
    def log(self, a): return self._call("log", a)
    def sin(self, a): return self._call("sin", a)
    def cos(self, a): return self._call("cos", a)
    def tanh(self, a): return self._call("tanh", a)
    def sqrt(self, a): return self._call("sqrt", a)
    def erf(self, a): return self._call("erf", a)

    def pow(self, a, b):
        if a.dtype.is_float:
            return self._call("pow", a, b)
        return self._let(a.dtype, f"tj_ipow({a.ref}, {b.ref})")   # the prelude's integer power
    def erfc(self, a): return self._call("erfc", a)
    def libm(self, name, *a): return self._call(name, *a)   # ir/prims_libm.py
    def signbit(self, a): return self._let(dt.bool_, f"signbit({a.ref}) != 0")

    def abs(self, a):
        if not a.dtype.signed:
            return a
        fn = {"f32": "fabsf", "f64": "fabs", "i64": "llabs"}.get(a.dtype.name, "abs")
        return self._let(a.dtype, f"{fn}({a.ref})")

    def shift(self, op: str, a: CS, b: CS) -> CS:
        """a << b or a >> b with torch's rule for counts outside [0, bits): left gives 0,
        right the sign fill. Shifted as unsigned long long to the left (a negative value's
        left shift is undefined in C++), arithmetic to the right for signed types."""
        w = a.dtype.bits
        ok = self.b.let("bool", f"(unsigned long long)({b.ref}) < {w}ull")
        if op == "left":
            return self._let(a.dtype, f"{ok} ? ({COMPUTE[a.dtype.name]})((unsigned long long)"
                                      f"({a.ref}) << {b.ref}) : 0")
        if a.dtype.signed:
            return self._let(a.dtype, f"{a.ref} >> ({ok} ? (int)({b.ref}) : {w - 1})")
        return self._let(a.dtype, f"{ok} ? {a.ref} >> (int)({b.ref}) : 0")

    def cmp(self, op: str, a: CS, b: CS) -> CS:
        return self._let(dt.bool_, f"{a.ref} {_CMP[op]} {b.ref}")

    def lt(self, a, b): return self.cmp("lt", a, b)
    def gt(self, a, b): return self.cmp("gt", a, b)

    def select(self, c: CS, a: CS, b: CS) -> CS:
        return self._let(a.dtype, f"{c.ref} ? {a.ref} : {b.ref}")

    def bitwise(self, op: str, a: CS, b: CS | None = None) -> CS:
        """and/or/xor of two integers or bools, or not of one (`!` for a C bool)."""
        if b is None:
            return self._let(a.dtype, f"{'!' if a.dtype is dt.bool_ else '~'}{a.ref}")
        return self._let(a.dtype, f"({a.ref} {_BITWISE[op]} {b.ref})")

    def _extreme(self, a: CS, b: CS, op: str) -> CS:
        if a.dtype.is_float:       # NaN in either operand wins, as in NumPy
            return self._let(a.dtype, f"({a.ref} {op} {b.ref} || {a.ref} != {a.ref}) "
                                      f"? {a.ref} : {b.ref}")
        return self._let(a.dtype, f"{a.ref} {op} {b.ref} ? {a.ref} : {b.ref}")

    def max(self, a, b): return self._extreme(a, b, ">")
    def min(self, a, b): return self._extreme(a, b, "<")

    # -- 32-bit unsigned words (the random primitive's Philox): `unsigned int` locals -------
    def u32_word(self, a: CS, hi: int) -> str:
        """The low (hi=0) or high (hi=1) 32 bits of an i64 scalar."""
        x = f"(unsigned long long)({a.ref})"
        return self.b.let("unsigned int", f"(unsigned int)({x} >> 32)" if hi else
                          f"(unsigned int){x}")

    def u32_add(self, a: str, k: int) -> str:
        return self.b.let("unsigned int", f"{a} + {k & 0xFFFFFFFF}u")

    def u32_xor(self, a: str, b: str) -> str:
        return self.b.let("unsigned int", f"{a} ^ {b}")

    def u32_mulhilo(self, a: str, k: int) -> tuple[str, str]:
        """(high, low) words of the 64-bit product a * k (a mul.wide.u32 on the GPU)."""
        p = self.b.let("unsigned long long", f"(unsigned long long){a} * {k}ull")
        return (self.b.let("unsigned int", f"(unsigned int)({p} >> 32)"),
                self.b.let("unsigned int", f"(unsigned int){p}"))

    def u32_unit(self, words: list[str], d: dt.DType, plus_one: bool) -> CS:
        """Words -> a float in [0, 1) ((0, 1] with plus_one): 24 or 53 bits, exactly."""
        if d is dt.f32:
            k = f"({words[0]} >> 8)" + (" + 1u" if plus_one else "")
            return self._let(d, f"(float)({k}) * {literal(2.0 ** -24, d)}")
        k = self.b.let("unsigned long long",
                       f"((unsigned long long){words[0]} << 21) | ({words[1]} >> 11)")
        if plus_one:
            k = self.b.let("unsigned long long", f"{k} + 1ull")
        return self._let(d, f"(double){k} * {literal(2.0 ** -53, d)}")

    # -- storage: 16-bit floats live as bits in memory and compute in float32 ---------------
    def widen(self, raw: str, d: dt.DType) -> CS:
        """A value read as `d`'s storage type, in its compute type."""
        if d.name in _WIDEN:
            return self._let(d, f"{_WIDEN[d.name]}({raw})")
        return self._let(d, f"{raw} != 0" if d is dt.bool_ else raw)

    def narrow(self, s: CS, d: dt.DType) -> str:
        """`s` as `d`'s storage type; floats round to nearest even, NaN stays NaN."""
        if d.name in _NARROW:
            return f"{_NARROW[d.name]}({s.ref})"
        return f"(unsigned char){s.ref}" if d is dt.bool_ else s.ref

    def cast(self, a: CS, to: dt.DType) -> CS:
        if to in dt.HALF:
            # rounding to 16 bits is real work even though the result computes in float32
            if to is dt.f16 and a.dtype is dt.f64:     # one rounding, as NumPy does
                return self.widen(f"tj_d2h({a.ref})", to)
            return self.widen(self.narrow(self.cast(a, dt.f32), to), to)
        to = compute_dtype(to)
        src = a.dtype
        if src is to:
            return a
        if to is dt.bool_:
            return self._let(to, f"{a.ref} != 0")
        if src.is_float and to in dt.SMALL_INT:
            # torch converts through int32 and keeps the low bits (-1.0 -> uint8 255); outside
            # int32's range (and NaN) x86 gives int32's min, whose low bits are 0
            i = self.cast(a, dt.i64)
            w = self._let(dt.i64, f"(unsigned long long)({i.ref} + 2147483648LL) < "
                                  f"4294967296ull ? {i.ref} : 0LL")
            return self.cast(w, to)
        if src.is_float and to.is_int:
            # cvt.rzi saturates to the integer range and maps NaN to 0, like the CPU path
            fn = ("__float2" if src is dt.f32 else "__double2") + \
                ("ll_rz" if to is dt.i64 else "int_rz")
            return self._let(to, f"{fn}({a.ref})")
        return self._let(to, f"({COMPUTE[to.name]}){a.ref}")


class CEmitter(ExprEmitter):
    """The CUDA side of ExprEmitter: index values are C expressions of type `index` (int when
    every buffer of the kernel has fewer than 2**31 elements, else long long)."""

    S = CS

    def __init__(self, body: CBody, loads: dict[Value, str], stores: dict[Value, str],
                 index: str = "int") -> None:
        super().__init__(loads, stores)
        self.b = body
        self.sb = CScalarBuilder(body)
        self.index = index

    def _mul(self, a: str, k: int) -> str:
        return self.b.let(self.index, f"{a} * {k}")

    def _add(self, a: str, b: str) -> str:
        return self.b.let(self.index, f"{a} + {b}")

    def idiv(self, a: str, k: int, signed: bool = False) -> str:
        return self.b.let(self.index, f"{a} / {k}")

    def irem(self, a: str, k: int, signed: bool = False) -> str:
        return self.b.let(self.index, f"{a} % {k}")

    def imin(self, a: str, b: str) -> str:
        # the cast picks one overload of min when b is a literal
        return self.b.let(self.index, f"min({a}, ({self.index}){b})")

    def icmp(self, op: str, a: str, b: str) -> str:
        return self.b.let("bool", f"{a} {_CMP[op]} {b}")

    def iand(self, a: str, b: str) -> str:
        return self.b.let("bool", f"{a} && {b}")

    def iselect(self, c: str, a: str, b: str) -> str:
        return self.b.let(self.index, f"{c} ? {a} : {b}")

    def to_index(self, s: CS) -> str:
        return self.b.let(self.index, f"({self.index}){s.ref}")

    def index_scalar(self, i: str) -> CS:
        return self.sb._let(dt.i64, f"(long long)({i})")

    def clamp(self, i: str, n: int) -> str:
        """i clamped into [0, n-1]: out-of-range indices never reach memory."""
        return self.b.let(self.index, f"min(max({i}, ({self.index})0), ({self.index}){max(n - 1, 0)})")

    def load(self, v: Value, flat: str) -> CS:
        key = ("load", v, flat)
        if key in self.memo:
            return self.memo[key]
        s = self.sb.widen(f"{self.buffers[v]}[{flat}]", v.dtype)
        self.memo[key] = s
        return s

    def store(self, v: Value, flat: str, s: CS) -> None:
        self.b.line(f"{self.outputs[v]}[{flat}] = {self.sb.narrow(s, v.dtype)};")
