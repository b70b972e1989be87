"""The loop IR of a plan as readable text: what `.lower(...).loops` and TRACEJIT_DUMP=loops
show, and the pinned schedules of tests/codegen/test_loop_ir.py. Index and scalar expressions
are spelled by codegen.loops (`index_text`, `expr_text`); this module writes statements,
kernels and plans."""
from __future__ import annotations

import textwrap
from typing import Callable

from ..ir.core import Value
from .loops import (Acc, Add, Barrier, BlockReduce, Cast, Compute, Div, Eval, Gathered, Lanes,
                    Leader, Let, Loop, LoopKernel, Min, Mul, Reset, ScatterAdd, Scheduled, Store,
                    Tree, Unflatten, Update, add, expr_text, identity, index_text, mul)

__all__ = ["format_program", "format_kernel", "inline_ops"]


def format_program(scheduled: list[Scheduled], name_of: Callable[[Value], str]) -> str:
    """Readable text of the loop IR of a whole plan."""
    out: list[str] = []
    for s in scheduled:
        k = s.source
        shape = "x".join(map(str, k.shape)) or "scalar"
        out.append(f"{k.name}: {k.kind} [{shape}]" + (f": {s.note}" if s.note else ""))
        for lk in s.kernels:
            out += ["  " + ln for ln in format_kernel(lk, name_of)]
    return "\n".join(out)


def format_kernel(lk: LoopKernel, name_of: Callable[[Value], str]) -> list[str]:
    n = lambda v: "%" + name_of(v)          # noqa: E731
    where = f"grid {lk.grid} x block {lk.block}" if lk.target == "gpu" else \
        f"threads split [0, {lk.extent})"
    lines = [f"kernel {lk.name} ({lk.target}, {where}, i{lk.index_bits} indices)"]
    ins = ", ".join(f"{n(v)} {v.dtype.name}[{','.join(map(str, v.shape))}]" for v in lk.inputs)
    outs = ", ".join(f"{n(v)} {v.dtype.name}[{','.join(map(str, v.shape))}]"
                     for v in lk.outputs)
    lines.append(f"  loads({ins}) stores({outs})")
    if lk.aligned:
        lines.append(f"  16-byte words: {', '.join(n(v) for v in lk.aligned)}")
    ops = inline_ops(lk)
    if ops:
        lines += textwrap.wrap(", ".join(ops), 96, initial_indent="  recomputed, not loaded: ",
                               subsequent_indent="    ")
    lines += _fmt_body(lk.body, 1, n)
    return lines


def inline_ops(lk: LoopKernel) -> list[str]:
    """The operations a kernel evaluates inline (every producer between what it stores and the
    buffers it loads), by name, in first-seen order: what fusion chose to recompute rather than
    materialize."""
    values: list[Value] = []
    todo: list = list(lk.body)
    while todo:
        x = todo.pop()
        if isinstance(x, Eval):
            values.append(x.value)
            todo += x.at
        elif isinstance(x, (Cast, Gathered)):
            todo.append(x.x if isinstance(x, Cast) else x.value)
        elif isinstance(x, Tree):
            todo += x.items
        elif isinstance(x, (Add, Min)):
            todo += [x.a, x.b]
        elif isinstance(x, (Mul, Div)):
            todo.append(x.a)
        elif isinstance(x, (Loop, Lanes, Leader, Compute)):
            todo += x.body
        elif isinstance(x, (Store, ScatterAdd, Update)):
            todo.append(x.value)
            todo.append(getattr(x, "at", None))
    loaded = set(lk.inputs)
    found: list = []
    seen: set = set()
    while values:
        v = values.pop()
        if v in seen or v in loaded or v.producer is None:
            continue
        seen.add(v)
        found.append(v.producer)
        values += v.producer.inputs
    if not found:
        return []
    order = {id(ins): i for i, ins in enumerate(found[0].out.graph.instrs)}
    found.sort(key=lambda ins: order.get(id(ins), 0))     # graph order: producers first
    return list(dict.fromkeys(ins.prim.name for ins in found))


def _fmt_body(body: list, depth: int, n) -> list[str]:
    pad = "  " * depth
    out: list[str] = []
    for st in body:
        if isinstance(st, Loop):
            ex = st.extent       # [lo, hi) is kept as lo + (hi - lo): show hi
            hi = ex.a if isinstance(ex, Add) and ex.b == mul(st.lo, -1) else add(st.lo, ex)
            how = {"serial": "", "threads": " parallel(cpu threads)", "grid": " parallel(grid)",
                   "blocks": " parallel(a block each)", "block": " parallel(block threads)"}
            vec = (f" vector({st.vector})" if st.vector else "") + \
                ("" if st.unroll else " no-unroll")
            out.append(f"{pad}for {st.var} in [{index_text(st.lo, n)}, {index_text(hi, n)}){how[st.par]}{vec}:")
            out += _fmt_body(st.body, depth + 1, n)
        elif isinstance(st, Lanes):
            out.append(f"{pad}lanes {st.var} in [0, {st.lanes}) (words: "
                       f"{', '.join(n(v) for v in st.inputs + st.outputs)}):")
            out.append(f"{pad}  {st.flat_var} = {index_text(st.flat, n)}")
            out.append(f"{pad}  [{', '.join(st.vars)}] = unflatten({st.flat_var}, "
                       f"[{', '.join(map(str, st.shape))}])")
            out += _fmt_body(st.body, depth + 1, n)
        elif isinstance(st, Let):
            out.append(f"{pad}{st.var} = {index_text(st.expr, n)}")
        elif isinstance(st, Unflatten):
            out.append(f"{pad}[{', '.join(st.vars)}] = unflatten({index_text(st.flat, n)}, "
                       f"[{', '.join(map(str, st.shape))}])")
        elif isinstance(st, Acc):
            size = f"[{st.size}]" if st.size > 1 else ""
            start = "" if st.size > 1 else f" = {identity(st.op, st.dtype)}"
            out.append(f"{pad}acc {st.name}{size}: {st.dtype.name} {st.op}{start}"
                       + (" (reassociable)" if st.reassoc else ""))
        elif isinstance(st, Reset):
            at = "" if st.at is None else f"[{index_text(st.at, n)}]"
            out.append(f"{pad}{st.acc}{at} = identity")
        elif isinstance(st, Update):
            at = "" if st.at is None else f"[{index_text(st.at, n)}]"
            line = f"{pad}{st.acc}{at} <- {expr_text(st.value, n)}"
            if len(line) > 96 and isinstance(st.value, Tree):     # a tree item per line
                items = [expr_text(x, n) for x in st.value.items]
                line = f"{pad}{st.acc}{at} <- {st.value.op}(\n{pad}    " + \
                    f",\n{pad}    ".join(items) + ")"
            out.append(line)
        elif isinstance(st, Store):
            out.append(f"{pad}{n(st.buf)}.flat[{index_text(st.at, n)}] = {expr_text(st.value, n)}")
        elif isinstance(st, ScatterAdd):
            out.append(f"{pad}{n(st.buf)}.flat[{index_text(st.at, n)}] += {expr_text(st.value, n)}")
        elif isinstance(st, BlockReduce):
            out.append(f"{pad}{st.acc} = combine over the block's threads")
        elif isinstance(st, Leader):
            out.append(f"{pad}one thread of the block:")
            out += _fmt_body(st.body, depth + 1, n)
        elif isinstance(st, Barrier):
            out.append(f"{pad}barrier (block)")
        elif isinstance(st, Compute):
            out.append(f"{pad}computing {', '.join(n(v) for v in st.values)} (not loaded):")
            out += _fmt_body(st.body, depth + 1, n)
        else:
            raise TypeError(f"unknown loop IR statement {st!r}")
    return out
