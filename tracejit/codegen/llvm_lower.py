"""Lowering of one kernel (codegen.fusion) to an LLVM function (text).

Every generated kernel becomes `body(ptr noalias ..., i64 begin, i64 end)`, whose outermost
loop runs over [begin, end) so the runtime can split it across threads. How kernels are put
into modules, called and bound to buffers is codegen.llvm_program's business."""
from __future__ import annotations

import math
import re

from ..ir import dtypes as dt
from ..ir.core import Value
from ..ir.prims_scan import scan_acc_dtype
from .expr import strides
from .fusion import Kernel
from .llvm_expr import COMPUTE, STORE, Body, Emitter, S, literal

# a call the vectorizer cannot widen: anything but an intrinsic or our inlined math library
# (float64 exp, log, tanh, sin, cos and pow call the C library)
_SCALAR_CALL = re.compile(r"\bcall [^@]*@(?!llvm\.|tj_)")


class _Loops:
    """Nested counted loops with phi induction variables, emitted into a Body. With `md`, each
    innermost loop gets metadata asking the vectorizer for `width` lanes."""

    def __init__(self, b: Body, prefix: str, md: list[str] | None = None, width: int = 16) -> None:
        self.b, self.prefix, self.n = b, prefix, 0
        self.block = "entry"
        self.md, self.width = md, width

    def nest(self, ranges: list[tuple[str, str]], body_fn, width_hint: bool = True) -> None:
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
        vectorizable = not any(_SCALAR_CALL.search(ln) for ln in b.lines[start:])
        for d in reversed(range(len(ranges))):
            i = f"%{tag}i{d}"
            b.raw(f"br label %{tag}l{d}")
            b.label(f"{tag}l{d}")
            b.raw(f"{i}n = add nuw nsw i64 {i}, 1")
            hint = ""
            if self.md is not None and d == len(ranges) - 1 and vectorizable and width_hint:
                n = 1000 + len(self.md)
                self.md.append(f"!{n} = distinct !{{!{n}, !{n + 1}}}")
                self.md.append(f'!{n + 1} = !{{!"llvm.loop.vectorize.width", i32 {self.width}}}')
                hint = f", !llvm.loop !{n}"
            b.raw(f"br label %{tag}h{d}{hint}")
            b.label(f"{tag}x{d}")
            self.block = f"{tag}x{d}"


def _ranges(shape) -> list[tuple[str, str]]:
    """Loop bounds for shape; the outermost loop runs over the thread's [begin, end)."""
    return [("%begin", "%end") if d == 0 else ("0", str(n)) for d, n in enumerate(shape)]


def _loop_kernel(k: Kernel, e: Emitter, loops: _Loops) -> None:
    def body(idx):
        for v in k.outputs:
            e.store(v, e.linear(idx, v.shape), e.emit(v, idx))
    if k.shape:
        loops.nest(_ranges(k.shape), body)
    else:
        body([])


def _reduce_init(op: str, d: dt.DType) -> str:
    if op == "sum":
        return literal(0, d)
    if d.is_float:
        return "0x" + ("FFF0000000000000" if op == "max" else "7FF0000000000000")
    bound = 2 ** (d.bits - 1)
    return str(-bound if op == "max" else bound - 1)


COLUMN_TILE = 512     # float64 accumulators of a float32 column sum: 4 KiB, held in L1
ROW_UNROLL = 4        # rows a column sum adds together before updating its accumulators


def _column_tiling(kept: tuple[int, ...]) -> tuple[int, int]:
    """How a column sum over kept axes `kept` is tiled: (p, block). Axes after p are covered
    whole, axis p in blocks of `block` indices, so that a tile is at most COLUMN_TILE
    accumulators and each row's part of it is contiguous. Axis 0 is never covered whole: the
    threads split it."""
    p, inner = len(kept) - 1, 1
    while p > 0 and inner * kept[p] <= COLUMN_TILE:
        inner *= kept[p]
        p -= 1
    return p, max(COLUMN_TILE // max(inner, 1), 1)


def _sum_leading_wide(k: Kernel, e: Emitter, loops: _Loops, allocas: list[str]) -> None:
    """A float32 sum over leading axes, accumulated in float64 like every float32 sum. The kept
    axes are cut into tiles of at most COLUMN_TILE columns whose float64 accumulators live on
    the stack while all the rows are added in, each row's part of a tile read contiguously
    (vectorized), as the old row-by-row loop read it."""
    ins = k.instr
    m = len(ins.params["axes"])
    x, out = ins.inputs[0], ins.out
    kept = x.shape[m:]
    p, block = _column_tiling(kept)
    inner = kept[p + 1:]
    inner_ranges = [("0", str(d)) for d in inner]
    inner_size = math.prod(inner)
    b = e.b
    acc = f"%cols{len(allocas)}"
    allocas.append(f"{acc} = alloca [{COLUMN_TILE} x double], align 64")

    def acc_at(j: list[str]) -> str:
        flat = e.iadd(e.imul(j[0], inner_size), e.linear(j[1:], inner))
        return b.op(f"getelementptr inbounds double, ptr {acc}, i64 {flat}")

    def tiles(oidx: list[str]) -> None:
        # axis p's range: the thread's [begin, end) when it is axis 0, else all of it
        lo, hi = ("%begin", "%end") if p == 0 else ("0", str(kept[p]))
        span = b.op(f"sub i64 {hi}, {lo}")
        count = b.op(f"udiv i64 {b.op(f'add i64 {span}, {block - 1}')}, {block}")

        def tile(tidx: list[str]) -> None:
            first = b.op(f"add i64 {lo}, {b.op(f'mul i64 {tidx[0]}, {block}')}")
            n = b.op(f"call i64 @llvm.smin.i64(i64 {b.op(f'sub i64 {hi}, {first}')}, "
                     f"i64 {block})")
            cols = [("0", n)] + inner_ranges
            loops.nest(cols, lambda j: b.raw(f"store double 0.0, ptr {acc_at(j)}"))

            def add(idx: list[str], unroll: int, base: int) -> None:
                # `unroll` rows of the last reduced axis at a time: one accumulator update
                # per group of rows halves the stack traffic of the innermost loop
                j = idx[m:]
                col = oidx + [b.op(f"add i64 {first}, {j[0]}")] + j[1:]
                row = e.iadd(e.imul(idx[m - 1], unroll), str(base))
                vals = [e.sb.cast(e.emit(x, idx[:m - 1] + [e.iadd(row, str(u))] + col), dt.f64)
                        for u in range(unroll)]
                while len(vals) > 1:        # a balanced tree of adds
                    vals = [S(b.op(f"fadd double {vals[i].ref}, {vals[i + 1].ref}"), dt.f64)
                            if i + 1 < len(vals) else vals[i] for i in range(0, len(vals), 2)]
                ptr = acc_at(j)
                total = b.op(f"fadd double {b.op(f'load double, ptr {ptr}')}, {vals[0].ref}")
                b.raw(f"store double {total}, ptr {ptr}")
            outer = [("0", str(d)) for d in x.shape[:m - 1]]
            last = x.shape[m - 1]
            for unroll, base, count in ((ROW_UNROLL, 0, last // ROW_UNROLL),
                                        (1, last - last % ROW_UNROLL, last % ROW_UNROLL)):
                if count:
                    loops.nest(outer + [("0", str(count))] + cols,
                               lambda idx, u=unroll, r=base: add(idx, u, r))
                    e.memo.clear()  # values of the row loop do not dominate what follows

            def store(j: list[str]) -> None:
                col = oidx + [b.op(f"add i64 {first}, {j[0]}")] + j[1:]
                total = S(b.op(f"load double, ptr {acc_at(j)}"), dt.f64)
                e.store(out, e.linear(col, out.shape), e.sb.cast(total, out.dtype))
            loops.nest(cols, store)
        loops.nest([("0", count)], tile)
        e.memo.clear()
    if p > 0:
        loops.nest(_ranges(kept[:p]), tiles)
    else:
        tiles([])


def _reduce_leading(k: Kernel, e: Emitter, loops: _Loops, allocas: list[str]) -> None:
    """A reduction over leading axes (a column sum, a bias gradient): rows outer, the kept
    trailing axes inner and contiguous. float32 sums accumulate in float64 tiles
    (`_sum_leading_wide`); the others accumulate in the output."""
    ins = k.instr
    op, m = ins.prim.name, len(ins.params["axes"])
    x, out = ins.inputs[0], ins.out
    if op == "sum" and out.dtype is dt.f32:
        return _sum_leading_wide(k, e, loops, allocas)
    kept = _ranges(x.shape[m:])
    init = S(_reduce_init(op, out.dtype), out.dtype)
    loops.nest(kept, lambda kidx: e.store(out, e.linear(kidx, out.shape), init))
    st = STORE[out.dtype.name]

    def row(ridx):
        def inner(kidx):
            v = e.emit(x, ridx + kidx)
            flat = e.linear(kidx, out.shape)
            p = e.b.op(f"getelementptr inbounds {st}, ptr {e.outputs[out]}, i64 {flat}")
            a = e.sb.widen(e.b.op(f"load {st}, ptr {p}"), out.dtype)
            r = e.sb.add(a, v) if op == "sum" else e.sb.max(a, v) if op == "max" \
                else e.sb.min(a, v)
            e.store(out, flat, r)
        loops.nest(kept, inner)
        e.memo.clear()
    loops.nest([("0", str(n)) for n in x.shape[:m]], row)


def _reduce_at(k: Kernel, e: Emitter, loops: _Loops, allocas: list[str], oidx: list[str]) -> None:
    """Reduce k's input over its reduced axes at the kept index oidx and store the result."""
    ins = k.instr
    op, axes = ins.prim.name, ins.params["axes"]
    x, out = ins.inputs[0], ins.out
    kept = [d for d in range(len(x.shape)) if d not in axes]
    acc_dt = dt.f64 if op == "sum" and out.dtype in (dt.f32, dt.f64) else out.dtype
    acc_ty = COMPUTE[acc_dt.name]
    acc = f"%acc{len(allocas)}"
    allocas.append(f"{acc} = alloca {acc_ty}")
    e.b.raw(f"store {acc_ty} {_reduce_init(op, acc_dt)}, ptr {acc}")

    def inner(ridx):
        full = [None] * len(x.shape)
        for d, i in zip(kept, oidx):
            full[d] = i
        for d, i in zip(axes, ridx):
            full[d] = i
        v = e.emit(x, full)
        a = S(e.b.op(f"load {acc_ty}, ptr {acc}"), acc_dt)
        if op == "sum":
            if acc_dt is not v.dtype:
                v = e.sb.cast(v, acc_dt)
            if acc_dt.is_float:        # reassoc: vectorized partial sums
                r = S(e.b.op(f"fadd reassoc contract {acc_ty} {a.ref}, {v.ref}"), acc_dt)
            else:
                r = e.sb.add(a, v)
        else:
            r = e.sb.max(a, v) if op == "max" else e.sb.min(a, v)
        e.b.raw(f"store {acc_ty} {r.ref}, ptr {acc}")
    # NaN-propagating max/min is not always recognised as a reduction (a masked softmax row
    # was not), and a failed hinted loop prints a remark: those loops are left to LLVM's choice
    loops.nest([("0", str(x.shape[d])) for d in axes], inner, width_hint=op == "sum")
    e.memo.clear()      # values of the inner loop do not dominate what follows
    res = e.sb.cast(S(e.b.op(f"load {acc_ty}, ptr {acc}"), acc_dt), out.dtype)
    e.store(out, e.linear(oidx, out.shape), res)


def _reduce_kernel(k: Kernel, e: Emitter, loops: _Loops, allocas: list[str]) -> None:
    axes = k.instr.params["axes"]
    if axes and tuple(axes) == tuple(range(len(axes))) and len(axes) < len(k.shape):
        return _reduce_leading(k, e, loops, allocas)
    kept = [d for d in range(len(k.shape)) if d not in axes]
    body = lambda oidx: _reduce_at(k, e, loops, allocas, oidx)      # noqa: E731
    if kept:
        loops.nest(_ranges([k.shape[d] for d in kept]), body)
    else:
        body([])


def _rows_kernel(k: Kernel, e: Emitter, loops: _Loops, allocas: list[str]) -> None:
    """Per row: each stage (a reduction over the row, or an elementwise loop over it) in turn,
    so the row is read from memory once and from cache afterwards."""
    j = k.outer

    def row(oidx):
        for st in k.stages:
            if st.kind == "reduce":
                _reduce_at(st, e, loops, allocas, oidx)
                continue
            inner = st.shape[j:]
            # a later stage may load this stage's outputs; this one must compute them
            hidden = {v: e.buffers.pop(v) for v in st.outputs if v in e.buffers}

            def body(iidx, st=st):
                idx = oidx + iidx
                for v in st.outputs:
                    e.store(v, e.linear(idx, v.shape), e.emit(v, idx))
            if inner:
                loops.nest([("0", str(n)) for n in inner], body)
            else:
                body([])
            e.memo.clear()
            e.buffers.update(hidden)
    loops.nest(_ranges(k.shape[:j]), row)


def _scatter_kernel(k: Kernel, e: Emitter, loops: _Loops) -> None:
    ins = k.instr
    ind, upd = ins.inputs
    out, axis = ins.out, ins.params["axis"]
    st = STORE[out.dtype.name]

    def zero(idx):
        e.store(out, idx[0], S(literal(0, out.dtype), out.dtype))
    loops.nest([("0", str(out.aval.size))], zero)
    n = out.shape[axis]
    nk = len(ind.shape)

    def add(idx):
        j = e.wrap_index(e.emit(ind, idx[axis:axis + nk]), n)
        target = idx[:axis] + [j] + idx[axis + nk:]
        flat = e.linear(target, out.shape)
        p = e.b.op(f"getelementptr inbounds {st}, ptr {e.outputs[out]}, i64 {flat}")
        old = e.sb.widen(e.b.op(f"load {st}, ptr {p}"), out.dtype)
        new = e.sb.add(old, e.emit(upd, idx))
        e.store(out, flat, new)
    if upd.aval.size and n:
        loops.nest([("0", str(d)) for d in upd.shape], add)


def _scan_kernel(k: Kernel, e: Emitter, loops: _Loops, allocas: list[str]) -> None:
    """cumsum/cumprod: per row along the axis, a sequential loop that carries the accumulator
    (float32 in float64, as NumPy's order and the interpreter) and stores every prefix; the
    first other axis is the parallel one."""
    ins = k.instr
    x, out = ins.inputs[0], ins.out
    axis, rev, n = ins.params["axis"], ins.params["reverse"], x.shape[ins.params["axis"]]
    acc_dt = scan_acc_dtype(out.dtype)
    acc_ty = COMPUTE[acc_dt.name]
    acc = f"%acc{len(allocas)}"
    allocas.append(f"{acc} = alloca {acc_ty}")
    combine = e.sb.add if ins.prim.name == "cumsum" else e.sb.mul

    def row(oidx):
        e.b.raw(f"store {acc_ty} {literal(0 if ins.prim.name == 'cumsum' else 1, acc_dt)}, "
                f"ptr {acc}")

        def step(ridx):
            j = e.b.op(f"sub i64 {n - 1}, {ridx[0]}") if rev else ridx[0]
            full = oidx[:axis] + [j] + oidx[axis:]
            v = e.emit(x, full)
            if v.dtype is not acc_dt:
                v = e.sb.cast(v, acc_dt)
            r = combine(S(e.b.op(f"load {acc_ty}, ptr {acc}"), acc_dt), v)
            e.b.raw(f"store {acc_ty} {r.ref}, ptr {acc}")
            e.store(out, e.linear(full, out.shape), e.sb.cast(r, out.dtype))
        loops.nest([("0", str(n))], step)
        e.memo.clear()      # values of the scan loop do not dominate what follows
    outer = [d for i, d in enumerate(x.shape) if i != axis]
    if outer:
        loops.nest(_ranges(outer), row)
    else:
        row([])


def kernel_body(k: Kernel, name: str, md: list[str] | None = None) -> tuple[list[Value], str]:
    """One generated kernel as `define internal void @name(ptr noalias %a0, ..., i64 %begin,
    i64 %end)` whose outermost loop runs over [begin, end), and the values its pointer
    arguments hold, in order. The text depends on the kernel's structure only (not on its
    position in the plan), so identical kernels render identically. With `md`, innermost loops
    carry vector-width hints (collected into md)."""
    args = k.inputs + [v for v in k.outputs if v not in k.inputs]
    names = {v: f"%a{i}" for i, v in enumerate(args)}
    b = Body()
    e = Emitter(b, {v: names[v] for v in k.inputs}, {v: names[v] for v in k.outputs})
    loops = _Loops(b, "L", md if k.kind in ("rows", "reduce") else None)
    allocas: list[str] = []
    if k.kind == "loop":
        _loop_kernel(k, e, loops)
    elif k.kind == "reduce":
        _reduce_kernel(k, e, loops, allocas)
    elif k.kind == "rows":
        _rows_kernel(k, e, loops, allocas)
    elif k.kind == "scatter":
        _scatter_kernel(k, e, loops)
    elif k.kind == "scan":
        _scan_kernel(k, e, loops, allocas)
    else:
        raise ValueError(f"kernel kind {k.kind} is not generated")
    params = ", ".join(f"ptr noalias {names[v]}" for v in args)
    text = [f"define internal void @{name}({params}, i64 %begin, i64 %end) {{",
            "entry:", *(f"  {a}" for a in allocas), *b.lines, "  ret void", "}"]
    return args, "\n".join(text)


def parallel_extent(k: Kernel) -> int:
    """The size of the loop that [begin, end) ranges over (1 when there is none)."""
    if k.kind in ("loop", "rows"):
        return k.shape[0] if k.shape else 1
    if k.kind == "reduce":
        axes = k.instr.params["axes"]
        kept = [d for d in range(len(k.shape)) if d not in axes]
        return k.shape[kept[0]] if kept else 1
    if k.kind == "scan":
        outer = [d for i, d in enumerate(k.shape) if i != k.instr.params["axis"]]
        return outer[0] if outer else 1
    return 1


__all__ = ["kernel_body", "parallel_extent", "strides"]
