"""Scalar expressions in LLVM IR text: the scalar builder that primitives' `scalar` rules call,
and the emitter that evaluates a fused expression at an index vector."""
from __future__ import annotations

import struct

import numpy as np

from ..ir import dtypes as dt
from ..ir.core import Value
from .llvm_math import CALLS

# storage type in memory, compute type in registers
STORE = {"f16": "half", "f32": "float", "f64": "double", "i32": "i32", "i64": "i64", "bool": "i8"}
COMPUTE = {"f16": "float", "f32": "float", "f64": "double", "i32": "i32", "i64": "i64",
           "bool": "i1"}


def compute_dtype(d: dt.DType) -> dt.DType:
    return dt.f32 if d is dt.f16 else d


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
    return str(int(value))


class S:
    """A scalar SSA value: its LLVM name and its dtype."""

    __slots__ = ("ref", "dtype")

    def __init__(self, ref: str, dtype: dt.DType) -> None:
        self.ref, self.dtype = ref, compute_dtype(dtype)

    @property
    def ty(self) -> str:
        return COMPUTE[self.dtype.name]


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

    FLAGS = "contract"

    def __init__(self, body: Body) -> None:
        self.b = body

    def const(self, value, like: S) -> S:
        return S(literal(value, like.dtype), like.dtype)

    def _arith(self, fop: str, iop: str, a: S, b: S) -> S:
        if a.dtype.is_float:
            return S(self.b.op(f"{fop} {self.FLAGS} {a.ty} {a.ref}, {b.ref}"), a.dtype)
        return S(self.b.op(f"{iop} {a.ty} {a.ref}, {b.ref}"), a.dtype)

    def add(self, a, b): return self._arith("fadd", "add", a, b)
    def sub(self, a, b): return self._arith("fsub", "sub", a, b)
    def mul(self, a, b): return self._arith("fmul", "mul", a, b)

    def div(self, a, b):
        return S(self.b.op(f"fdiv {a.ty} {a.ref}, {b.ref}"), a.dtype)

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
    def pow(self, a, b): return self._call("pow", a, b)

    def sqrt(self, a):
        suf = "f32" if a.dtype is dt.f32 else "f64"
        return S(self.b.op(f"call {a.ty} @llvm.sqrt.{suf}({a.ty} {a.ref})"), a.dtype)

    def abs(self, a):
        if a.dtype.is_float:
            suf = "f32" if a.dtype is dt.f32 else "f64"
            return S(self.b.op(f"call {a.ty} @llvm.fabs.{suf}({a.ty} {a.ref})"), a.dtype)
        return S(self.b.op(f"call {a.ty} @llvm.abs.{a.ty}({a.ty} {a.ref}, i1 false)"), a.dtype)

    def cmp(self, op: str, a: S, b: S) -> S:
        if a.dtype.is_float:
            pred = {"lt": "olt", "le": "ole", "gt": "ogt", "ge": "oge", "eq": "oeq",
                    "ne": "une"}[op]
            return S(self.b.op(f"fcmp {pred} {a.ty} {a.ref}, {b.ref}"), dt.bool_)
        pred = {"lt": "slt", "le": "sle", "gt": "sgt", "ge": "sge", "eq": "eq", "ne": "ne"}[op]
        return S(self.b.op(f"icmp {pred} {a.ty} {a.ref}, {b.ref}"), dt.bool_)

    def lt(self, a, b): return self.cmp("lt", a, b)
    def gt(self, a, b): return self.cmp("gt", a, b)

    def select(self, c: S, a: S, b: S) -> S:
        return S(self.b.op(f"select i1 {c.ref}, {a.ty} {a.ref}, {b.ty} {b.ref}"), a.dtype)

    def _extreme(self, a: S, b: S, pick: str) -> S:
        if not a.dtype.is_float:
            return self.select(self.cmp(pick, a, b), a, b)
        # llvm.maximum/minimum propagate NaN like NumPy, and vectorize (also as reductions)
        fn = ("maximum" if pick == "gt" else "minimum") + (".f32" if a.ty == "float" else ".f64")
        return S(self.b.op(f"call {a.ty} @llvm.{fn}({a.ty} {a.ref}, {b.ty} {b.ref})"), a.dtype)

    def max(self, a, b): return self._extreme(a, b, "gt")
    def min(self, a, b): return self._extreme(a, b, "lt")

    def cast(self, a: S, to: dt.DType) -> S:
        to = compute_dtype(to)
        src, ty = a.dtype, COMPUTE[to.name]
        if src is to:
            return a
        if src.is_float and to.is_float:
            op = "fpext" if to.bits > src.bits else "fptrunc"
            return S(self.b.op(f"{op} {a.ty} {a.ref} to {ty}"), to)
        if src.is_float and to is dt.bool_:
            return S(self.b.op(f"fcmp une {a.ty} {a.ref}, 0.0"), to)
        if src.is_float:
            sf = "f32" if src is dt.f32 else "f64"
            return S(self.b.op(f"call {ty} @llvm.fptosi.sat.{ty}.{sf}({a.ty} {a.ref})"), to)
        if src is dt.bool_:
            op = "uitofp" if to.is_float else "zext"
            return S(self.b.op(f"{op} i1 {a.ref} to {ty}"), to)
        if to is dt.bool_:
            return S(self.b.op(f"icmp ne {a.ty} {a.ref}, 0"), to)
        if to.is_float:
            return S(self.b.op(f"sitofp {a.ty} {a.ref} to {ty}"), to)
        op = "sext" if to.bits > src.bits else "trunc"
        return S(self.b.op(f"{op} {a.ty} {a.ref} to {ty}"), to)


def strides(shape) -> list[int]:
    out, acc = [], 1
    for d in reversed(shape):
        out.append(acc)
        acc *= d
    return out[::-1]


class Emitter:
    """Evaluates fused expressions at index vectors. `buffers` maps a value held in memory to
    the LLVM pointer it is read from; everything else is recomputed from its producer."""

    def __init__(self, body: Body, loads: dict[Value, str], stores: dict[Value, str]) -> None:
        self.b = body
        self.sb = ScalarBuilder(body)
        self.buffers = loads          # read from memory (never a kernel's own outputs)
        self.outputs = stores
        self.memo: dict[tuple, S] = {}

    # -- index arithmetic on i64 (strings are SSA names or integer literals) --
    def imul(self, a: str, k: int) -> str:
        if k == 0 or a == "0":
            return "0"
        if k == 1:
            return a
        if a.lstrip("-").isdigit():
            return str(int(a) * k)
        return self.b.op(f"mul i64 {a}, {k}")

    def iadd(self, a: str, b: str) -> str:
        if a == "0":
            return b
        if b == "0":
            return a
        if a.lstrip("-").isdigit() and b.lstrip("-").isdigit():
            return str(int(a) + int(b))
        return self.b.op(f"add i64 {a}, {b}")

    def linear(self, idx: list[str], shape) -> str:
        off = "0"
        for i, s in zip(idx, strides(shape)):
            off = self.iadd(off, self.imul(i, s))
        return off

    def load(self, v: Value, flat: str) -> S:
        key = ("load", v, flat)
        if key in self.memo:
            return self.memo[key]
        st = STORE[v.dtype.name]
        p = self.b.op(f"getelementptr inbounds {st}, ptr {self.buffers[v]}, i64 {flat}")
        x = self.b.op(f"load {st}, ptr {p}")
        if v.dtype is dt.f16:
            x = self.b.op(f"fpext half {x} to float")
        elif v.dtype is dt.bool_:
            x = self.b.op(f"trunc i8 {x} to i1")
        s = S(x, v.dtype)
        self.memo[key] = s
        return s

    def store(self, v: Value, flat: str, s: S) -> None:
        st = STORE[v.dtype.name]
        x = s.ref
        if v.dtype is dt.f16:
            x = self.b.op(f"fptrunc float {x} to half")
        elif v.dtype is dt.bool_:
            x = self.b.op(f"zext i1 {x} to i8")
        p = self.b.op(f"getelementptr inbounds {st}, ptr {self.outputs[v]}, i64 {flat}")
        self.b.raw(f"store {st} {x}, ptr {p}")

    def clamp(self, i: str, n: int) -> str:
        """i clamped into [0, n-1]: out-of-range indices never reach memory."""
        lo = self.b.op(f"call i64 @llvm.smax.i64(i64 {i}, i64 0)")
        return self.b.op(f"call i64 @llvm.smin.i64(i64 {lo}, i64 {max(n - 1, 0)})")

    # -- expressions --
    def emit(self, v: Value, idx: list[str]) -> S:
        key = (v, tuple(idx))
        hit = self.memo.get(key)
        if hit is not None:
            return hit
        if v in self.buffers:
            r = self.load(v, self.linear(idx, v.shape))
        else:
            r = self._emit_op(v, idx)
        self.memo[key] = r
        return r

    def _emit_op(self, v: Value, idx: list[str]) -> S:
        ins = v.producer
        name, p = ins.prim.name, ins.params
        if name == "constant":
            val = p["value"].reshape(-1)[0] if p["value"].size else 0
            return S(literal(val, v.dtype), v.dtype)
        if ins.prim.kind == "elementwise":
            args = [self.emit(x, idx) for x in ins.inputs]
            return ins.prim.scalar(self.sb, *args, **p)
        x = ins.inputs[0]
        if name == "broadcast":
            lead = len(v.shape) - len(x.shape)
            return self.emit(x, ["0" if d == 1 else idx[lead + i] for i, d in enumerate(x.shape)])
        if name == "transpose":
            inv = [0] * len(p["perm"])
            for k, q in enumerate(p["perm"]):
                inv[q] = k
            return self.emit(x, [idx[inv[j]] for j in range(len(inv))])
        if name == "slice":
            return self.emit(x, [self.iadd(str(a), self.imul(i, s))
                                 for i, a, s in zip(idx, p["starts"], p["steps"])])
        if name == "reshape":
            return self._reshape(x, v, idx)
        if name == "pad":
            return self._pad(x, v, idx, p)
        if name == "concatenate":
            return self._concat(ins.inputs, v, idx, p["axis"])
        if name == "gather":
            return self._gather(x, ins.inputs[1], idx, p["axis"])
        raise NotImplementedError(f"cannot fuse {name}")

    def _reshape(self, x: Value, v: Value, idx: list[str]) -> S:
        xs = [d for d in x.shape if d != 1]
        if xs == [d for d in v.shape if d != 1]:      # only size-1 axes change: no division
            it = iter(i for i, d in zip(idx, v.shape) if d != 1)
            return self.emit(x, ["0" if d == 1 else next(it) for d in x.shape])
        flat = self.linear(idx, v.shape)
        if x in self.buffers:
            return self.load(x, flat)
        out = []
        for d, s in zip(x.shape, strides(x.shape)):
            q = flat if s == 1 else self.b.op(f"udiv i64 {flat}, {s}")
            out.append("0" if d == 1 else self.b.op(f"urem i64 {q}, {d}"))
        return self.emit(x, out)

    def _pad(self, x: Value, v: Value, idx: list[str], p) -> S:
        ok = None
        src = []
        for i, n, lo, it in zip(idx, x.shape, p["lo"], p["interior"]):
            j = self.iadd(i, str(-lo))
            step = it + 1
            conds = [self.b.op(f"icmp sge i64 {j}, 0")]
            q = j
            if step > 1:
                q = self.b.op(f"sdiv i64 {j}, {step}")
                r = self.b.op(f"srem i64 {j}, {step}")
                conds.append(self.b.op(f"icmp eq i64 {r}, 0"))
            conds.append(self.b.op(f"icmp slt i64 {q}, {n}"))
            for c in conds:
                ok = c if ok is None else self.b.op(f"and i1 {ok}, {c}")
            src.append(self.clamp(q, n) if n else "0")
        if x.aval.size == 0:
            return S(literal(0, v.dtype), v.dtype)
        val = self.emit(x, src)
        zero = S(literal(0, v.dtype), v.dtype)
        return self.sb.select(S(ok, dt.bool_), val, zero) if ok else val

    def _concat(self, xs, v: Value, idx: list[str], axis: int) -> S:
        offs, o = [], 0
        for x in xs:
            offs.append(o)
            o += x.shape[axis]
        result = None
        for x, off in reversed(list(zip(xs, offs))):
            n = x.shape[axis]
            if n == 0:
                continue
            j = self.clamp(self.iadd(idx[axis], str(-off)), n)
            val = self.emit(x, idx[:axis] + [j] + idx[axis + 1:])
            if result is None:
                result = val
            else:
                c = S(self.b.op(f"icmp slt i64 {idx[axis]}, {off + n}"), dt.bool_)
                result = self.sb.select(c, val, result)
        return result

    def _gather(self, x: Value, ind: Value, idx: list[str], axis: int) -> S:
        k = len(ind.shape)
        i = self.emit(ind, idx[axis:axis + k])
        if i.dtype is not dt.i64:
            i = self.sb.cast(i, dt.i64)
        n = x.shape[axis]
        neg = self.b.op(f"icmp slt i64 {i.ref}, 0")
        wrapped = self.b.op(f"add i64 {i.ref}, {n}")
        j = self.b.op(f"select i1 {neg}, i64 {wrapped}, i64 {i.ref}")
        return self.emit(x, idx[:axis] + [self.clamp(j, n)] + idx[axis + k:])

