"""Backend-neutral evaluation of a fused expression at an index vector.

A kernel computes each output element as an expression over its producers. Elementwise ops
call the primitive's `scalar` rule on a backend's scalar builder; view and index ops
(broadcast, transpose, slice, reshape, pad, concatenate, gather, windows, iota) evaluate the
`index_map` declared beside the primitive in the registry (ir/index_maps.py), which only
rewrites the index vector. The LLVM and CUDA emitters supply the integer operations, loads and
the scalar builder."""
from __future__ import annotations

from ..ir import dtypes as dt
from ..ir.core import Instr, Value
from ..ir.index_maps import Access, Position, Read, Select, Site, Zero, strides
from . import loops as L

__all__ = ["EmitterIndexTable", "ExprEmitter", "Scalar", "compute_dtype", "strides"]


def compute_dtype(d: dt.DType) -> dt.DType:
    """Arithmetic type of a stored dtype: 16-bit floats compute in float32."""
    return dt.f32 if d in dt.HALF else d


class Scalar:
    """A scalar in generated code: how the backend names it (an SSA name, a C local or a
    literal) and its compute dtype. Subclasses give `TYPES`, dtype name -> backend type."""

    __slots__ = ("ref", "dtype")
    TYPES: dict[str, str] = {}

    def __init__(self, ref: str, dtype: dt.DType) -> None:
        self.ref, self.dtype = ref, compute_dtype(dtype)

    @property
    def ty(self) -> str:
        return self.TYPES[self.dtype.name]


def _is_int_literal(a: str) -> bool:
    return a.lstrip("-").isdigit()


class ExprEmitter:
    """Evaluates fused expressions at index vectors (lists of index expressions, as strings).
    `loads` maps a value held in memory to what it is read from; everything else is recomputed
    from its producer. Subclasses provide: `sb` (the scalar builder), `S` (its scalar class),
    `load`, and the integer operations `_mul`, `_add`, `idiv`, `irem`, `icmp`, `iand`,
    `iselect`, `clamp`, `to_index`, `index_scalar`."""

    S: type

    def __init__(self, loads: dict[Value, str], stores: dict[Value, str]) -> None:
        self.buffers = loads          # read from memory (never a kernel's own outputs)
        self.outputs = stores
        self.memo: dict[tuple, object] = {}

    # -- index arithmetic (folds literals, so static offsets cost nothing) --
    def imul(self, a: str, k: int) -> str:
        if k == 0 or a == "0":
            return "0"
        if k == 1:
            return a
        if _is_int_literal(a):
            return str(int(a) * k)
        return self._mul(a, k)

    def iadd(self, a: str, b: str) -> str:
        if a == "0":
            return b
        if b == "0":
            return a
        if _is_int_literal(a) and _is_int_literal(b):
            return str(int(a) + int(b))
        return self._add(a, b)

    def linear(self, idx: list[str], shape) -> str:
        off = "0"
        for i, s in zip(idx, strides(shape)):
            off = self.iadd(off, self.imul(i, s))
        return off

    def wrap_index(self, i, n: int) -> str:
        """A gathered index (a scalar), negative counting from the end, clamped into [0, n)."""
        j = self.to_index(i)
        neg = self.icmp("lt", j, "0")
        return self.clamp(self.iselect(neg, self.iadd(j, str(n)), j), n)

    # -- expressions --
    def emit(self, v: Value, idx: list[str]):
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

    def _emit_op(self, v: Value, idx: list[str]):
        ins = v.producer
        name, p = ins.prim.name, ins.params
        if name == "constant":
            val = p["value"].reshape(-1)[0] if p["value"].size else 0
            return self.sb.literal(val, v.dtype)
        if ins.prim.kind == "elementwise":
            args = [self.emit(x, idx) for x in ins.inputs]
            return ins.prim.scalar(self.sb, *args, **p)
        if ins.prim.kind == "random":
            # a function of scalar operands (seed, offset) and the element's linear index
            args = [self.emit(x, []) for x in ins.inputs]
            flat = self.index_scalar(self.linear(idx, v.shape))
            return ins.prim.scalar(self.sb, *args, flat, **p)
        if ins.prim.index_map is not None:
            site = Site(tuple(tuple(x.shape) for x in ins.inputs), tuple(v.shape),
                        lambda k, i: self.emit(ins.inputs[k], list(i)))
            return self._access(ins, v, idx, ins.prim.index_map(self, list(idx), site, **p))
        raise NotImplementedError(f"cannot fuse {name}")

    def _access(self, ins: Instr, v: Value, idx: list[str], a: Access):
        """The value an index map's answer stands for."""
        if isinstance(a, Read):
            x = ins.inputs[a.k]
            if a.same_offset and x in self.buffers:     # same row-major offset: no arithmetic
                return self.load(x, self.linear(idx, v.shape))
            return self.emit(x, a.vector())
        if isinstance(a, Position):
            return self.index_scalar(a.index)
        if isinstance(a, Zero):
            return self.sb.literal(0, v.dtype)
        # a chain of selects (concatenate of many operands) is walked in a loop, not by
        # recursion: the innermost fallback first, so the operands are read last to first
        chain = []
        while isinstance(a, Select):
            chain.append(a)
            a = a.other
        r = self._access(ins, v, idx, a)
        for sel in reversed(chain):
            r = self.sb.select(self.S(sel.cond, dt.bool_), self._access(ins, v, idx, sel.then), r)
        return r


class EmitterIndexTable:
    """The loop-IR index table (codegen.loops.IndexTable) of a renderer built on an
    ExprEmitter: names bound by the renderer's loops come from `env`, arithmetic from the
    emitter (whose `imin` is the one integer operation only loop IR needs), and a gathered
    index is the renderer's scalar expression `expr` wrapped into range. A renderer on an
    ExprEmitter writes index expressions with `L.render_index(x, this table)`."""

    def __init__(self, e: ExprEmitter, env: dict[str, str], expr) -> None:
        self.e, self.env, self.expr = e, env, expr

    def var(self, x: L.Var) -> str:
        return self.env[x.name]

    def lit(self, x: L.Lit) -> str:
        return str(x.value)

    def add(self, x: L.Add, a: str, b: str) -> str:
        return self.e.iadd(a, b)

    def mul(self, x: L.Mul, a: str) -> str:
        return self.e.imul(a, x.k)

    def div(self, x: L.Div, a: str) -> str:
        return self.e.idiv(a, x.k)

    def min(self, x: L.Min, a: str, b: str) -> str:
        return self.e.imin(a, b)             # type: ignore[attr-defined]

    def gathered(self, x: L.Gathered) -> str:
        return self.e.wrap_index(self.expr(x.value), x.n)
