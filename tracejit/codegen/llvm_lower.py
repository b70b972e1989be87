"""The LLVM renderer: a kernel's loop IR (codegen.loops, built by codegen.schedule) as an LLVM
function (text). It translates statement by statement and decides nothing about loops.

Every generated kernel becomes `body(ptr noalias ..., i64 begin, i64 end)`, whose loop marked
`threads` runs over [begin, end) so the runtime can split it across threads. How kernels are put
into modules, called and bound to buffers is codegen.llvm_program's business. A CUDA block is a
block of one thread here (block-strided loops run serially, block reductions and barriers are
nothing), so any loop IR renders, the GPU's included."""
from __future__ import annotations

import re

from ..ir.core import Value
from . import loops as L
from .expr import EmitterIndexTable, compute_dtype, strides
from .fusion import Kernel
from .llvm_expr import COMPUTE, STORE, Body, Emitter, S, literal
from .schedule import Scheduler, parallel_extent

# a call the vectorizer cannot widen: anything but an intrinsic or our inlined math library
# (float64 exp, log, tanh, sin, cos and pow call the C library)
_SCALAR_CALL = re.compile(r"\bcall [^@]*@(?!llvm\.|tj_)")


class _Loops:
    """Nested counted loops with phi induction variables, emitted into a Body. With `md` and a
    `width`, the innermost loop gets metadata asking the vectorizer for `width` lanes (and,
    with unroll=False, the unroller to leave it alone)."""

    def __init__(self, b: Body, prefix: str, md: list[str] | None = None) -> None:
        self.b, self.prefix, self.n = b, prefix, 0
        self.block = "entry"
        self.md = md

    def nest(self, ranges: list[tuple[str, str]], body_fn, width: int = 0,
             unroll: bool = True) -> None:
        b = self.b
        tag = f"{self.prefix}{self.n}"
        self.n += 1
        idx = []
        for d, (lo, hi) in enumerate(ranges):
            pre = self.block
            b.raw(f"br label %{tag}h{d}")
            b.label(f"{tag}h{d}")
            i = f"%{tag}i{d}"
            b.raw(f"{i} = phi i64 [{lo}, %{pre}], [{i}n, %{tag}l{d}]")
            b.raw(f"%{tag}c{d} = icmp slt i64 {i}, {hi}")
            b.raw(f"br i1 %{tag}c{d}, label %{tag}b{d}, label %{tag}x{d}")
            b.label(f"{tag}b{d}")
            self.block = f"{tag}b{d}"
            idx.append(i)
        start = len(b.lines)
        body_fn(idx)
        # A width hint on a loop that cannot vectorize makes LLVM print "remark: loop not
        # vectorized" to stderr whatever the remark options say (a requested transformation
        # that failed); a scalar library call is the case we know, so such loops get none.
        # (checked only where a hint would go: every nest scanning its body was quadratic)
        vectorizable = self.md is not None and bool(width) and \
            not any(_SCALAR_CALL.search(ln) for ln in b.lines[start:])
        for d in reversed(range(len(ranges))):
            i = f"%{tag}i{d}"
            b.raw(f"br label %{tag}l{d}")
            b.label(f"{tag}l{d}")
            b.raw(f"{i}n = add nuw nsw i64 {i}, 1")
            hint = ""
            if d == len(ranges) - 1 and vectorizable:
                n = 1000 + len(self.md)
                if unroll:
                    self.md.append(f"!{n} = distinct !{{!{n}, !{n + 1}}}")
                else:
                    self.md.append(f"!{n} = distinct !{{!{n}, !{n + 1}, !{n + 2}}}")
                self.md.append(f'!{n + 1} = !{{!"llvm.loop.vectorize.width", i32 {width}}}')
                if not unroll:
                    self.md.append(f'!{n + 2} = !{{!"llvm.loop.unroll.disable"}}')
                hint = f", !llvm.loop !{n}"
            b.raw(f"br label %{tag}h{d}{hint}")
            b.label(f"{tag}x{d}")
            self.block = f"{tag}x{d}"


class _Renderer(L.StatementRenderer):
    """Renders one LoopKernel into LLVM IR lines."""

    def __init__(self, lk: L.LoopKernel, md: list[str] | None) -> None:
        self.lk = lk
        self.names = {v: f"%a{i}" for i, v in enumerate(lk.args)}
        self.b = Body()
        self.e = Emitter(self.b, {v: self.names[v] for v in lk.inputs},
                         {v: self.names[v] for v in lk.outputs})
        self.loops = _Loops(self.b, "L", md)
        self.allocas: list[str] = []
        self.env = {"begin": "%begin", "end": "%end"}
        self.index_table = EmitterIndexTable(self.e, self.env, self.expr)
        self.acc_ptr: dict[str, str] = {}

    # -- index and scalar expressions --------------------------------------------------------
    def acc_at(self, name: str, at: L.Ix | None) -> str:
        ptr = self.acc_ptr[name]
        if at is None:
            return ptr
        ty = COMPUTE[self.lk.accs[name].dtype.name]
        return self.b.op(f"getelementptr inbounds {ty}, ptr {ptr}, i64 {self.ix(at)}")

    def combine(self, op: str, a: S, v: S, reassoc: bool = False) -> S:
        sb = self.e.sb
        if op == "sum" and a.dtype.is_float:
            # plain IEEE additions, in the order the schedule states, unless it allows more
            flags = "reassoc contract " if reassoc else ""
            return S(self.b.op(f"fadd {flags}{a.ty} {a.ref}, {v.ref}"), a.dtype)
        return {"sum": sb.add, "prod": sb.mul, "max": sb.max, "min": sb.min}[op](a, v)

    def expr(self, x: L.Expr) -> S:
        e = self.e
        if isinstance(x, L.Eval):
            return e.emit(x.value, [self.ix(i) for i in x.at])
        if isinstance(x, L.AccGet):
            acc = self.lk.accs[x.acc]
            ty = COMPUTE[acc.dtype.name]
            return S(self.b.op(f"load {ty}, ptr {self.acc_at(x.acc, x.at)}"), acc.dtype)
        if isinstance(x, L.LoadFlat):
            return e.load(x.buf, self.ix(x.at))
        if isinstance(x, L.Const):
            return S(literal(x.value, x.dtype), x.dtype)
        if isinstance(x, L.Cast):
            v = self.expr(x.x)
            return v if v.dtype is compute_dtype(x.dtype) else e.sb.cast(v, x.dtype)
        vals = [self.expr(i) for i in x.items]
        while len(vals) > 1:        # a balanced tree
            vals = [self.combine(x.op, vals[i], vals[i + 1]) if i + 1 < len(vals) else vals[i]
                    for i in range(0, len(vals), 2)]
        return vals[0]

    # -- statements --------------------------------------------------------------------------
    def st_Loop(self, st: L.Loop) -> None:
        if st.par == "threads":
            lo, hi = "%begin", "%end"
        else:
            lo = self.ix(st.lo)
            hi = self.e.iadd(lo, self.ix(st.extent))

        def inner(idx):
            self.env[st.var] = idx[0]
            self.body(st.body)
        self.loops.nest([(lo, hi)], inner, width=st.vector, unroll=st.unroll)
        self.e.memo.clear()     # values of the loop body do not dominate what follows

    def st_Lanes(self, st: L.Lanes) -> None:
        def inner(idx):
            self.env[st.var] = idx[0]
            flat = self.env[st.flat_var] = self.ix(st.flat)
            for var, i in zip(st.vars, L.render_unflatten(self.e, flat, st.shape)):
                self.env[var] = i
            self.body(st.body)
        self.loops.nest([("0", str(st.lanes))], inner)
        self.e.memo.clear()

    def st_Acc(self, st: L.Acc) -> None:
        ty = COMPUTE[st.dtype.name]
        ptr = self.acc_ptr[st.name] = f"%{st.name}"
        if st.size > 1:
            self.allocas.append(f"{ptr} = alloca [{st.size} x {ty}], align 64")
        else:
            self.allocas.append(f"{ptr} = alloca {ty}")
            self.st_Reset(L.Reset(st.name))

    def st_Reset(self, st: L.Reset) -> None:
        acc = self.lk.accs[st.acc]
        ty = COMPUTE[acc.dtype.name]
        init = literal(L.identity(acc.op, acc.dtype), acc.dtype)
        self.b.raw(f"store {ty} {init}, ptr {self.acc_at(st.acc, st.at)}")

    def st_Update(self, st: L.Update) -> None:
        acc = self.lk.accs[st.acc]
        ty = COMPUTE[acc.dtype.name]
        v = self.expr(st.value)
        ptr = self.acc_at(st.acc, st.at)
        a = S(self.b.op(f"load {ty}, ptr {ptr}"), acc.dtype)
        r = self.combine(acc.op, a, v, acc.reassoc)
        self.b.raw(f"store {ty} {r.ref}, ptr {ptr}")

    def st_Store(self, st: L.Store) -> None:
        self.e.store(st.buf, self.ix(st.at), self.expr(st.value))

    def st_ScatterAdd(self, st: L.ScatterAdd) -> None:
        e, out = self.e, st.buf
        t = STORE[out.dtype.name]
        flat = self.ix(st.at)
        p = self.b.op(f"getelementptr inbounds {t}, ptr {e.outputs[out]}, i64 {flat}")
        old = e.sb.widen(self.b.op(f"load {t}, ptr {p}"), out.dtype)
        e.store(out, flat, e.sb.add(old, self.expr(st.value)))

    def st_BlockReduce(self, st: L.BlockReduce) -> None:
        pass                    # a block of one thread holds the whole result

    def st_Leader(self, st: L.Leader) -> None:
        self.body(st.body)

    def st_Barrier(self, st: L.Barrier) -> None:
        pass

    def st_Compute(self, st: L.Compute) -> None:
        # a later stage may load these values; this one must compute them
        hidden = {v: self.e.buffers.pop(v) for v in st.values if v in self.e.buffers}
        self.body(st.body)
        self.e.memo.clear()
        self.e.buffers.update(hidden)


def render(lk: L.LoopKernel, name: str, md: list[str] | None = None) -> str:
    """`define internal void @name(ptr noalias %a0, ..., i64 %begin, i64 %end)` for a loop
    kernel; its pointer arguments are lk.args in order. With `md`, the loops the schedule
    vectorizes carry width hints (collected into md)."""
    r = _Renderer(lk, md)
    r.body(lk.body)
    params = ", ".join(f"ptr noalias {r.names[v]}" for v in lk.args)
    return "\n".join([f"define internal void @{name}({params}, i64 %begin, i64 %end) {{",
                      "entry:", *(f"  {a}" for a in r.allocas), *r.b.lines, "  ret void", "}"])


def kernel_bodies(k: Kernel, small: bool) -> tuple[list[tuple[list[Value], str, int, list[str]]],
                                                   list[Value]]:
    """Every loop kernel that runs plan kernel k on the CPU, in order, each as (its argument
    values, `define internal void @body(...)`, the extent of its parallel range, its loop
    metadata), and the scratch buffers they share (partial sums of a split reduction). The
    text depends on the kernel's structure only, so identical kernels render identically.
    `small`: scheduled for compile speed (no vector hints)."""
    s = Scheduler("cpu", small=small)(k, "body")
    for v in s.scratch:
        v.name = f"{k.name}_partials"       # "body" keeps the text free of the plan's names
    out = []
    for lk in s.kernels:
        md: list[str] | None = None if small else []
        out.append((lk.args, render(lk, "body", md), lk.extent, md or []))
    return out, s.scratch


def kernel_body(k: Kernel, name: str, md: list[str] | None = None) -> tuple[list[Value], str]:
    """One generated kernel of the plan, scheduled for the CPU, as `define internal void
    @name(ptr noalias %a0, ..., i64 %begin, i64 %end)` whose parallel loop runs over [begin,
    end), and the values its pointer arguments hold, in order. The text depends on the
    kernel's structure only (not on its position in the plan), so identical kernels render
    identically. Without `md` the kernel is scheduled for compile speed (no vector hints)."""
    (lk,) = Scheduler("cpu", small=md is None)(k, name).kernels
    return lk.args, render(lk, name, md)


__all__ = ["kernel_body", "kernel_bodies", "render", "parallel_extent", "strides"]
