"""Graph-to-graph rewrites. Dead-code elimination, common subexpressions, constant folding and
algebraic simplification rewrite the graph in place and return it; `widen_half`, which the
backends run before fusion, returns a new graph."""
from __future__ import annotations

import numpy as np

from .core import Graph, Instr, Value
from .defer_waits import defer_waits
from .exact_params import Inexact, exact_param

FOLD_LIMIT = 64   # constant results larger than this stay as instructions (no blow-up)


def _replace_uses(g: Graph, subst: dict[Value, Value]) -> None:
    if not subst:
        return
    for ins in g.instrs:
        ins.inputs = [subst.get(v, v) for v in ins.inputs]
    g.outputs = [subst.get(v, v) for v in g.outputs]


def dce(g: Graph) -> Graph:
    live = set(g.outputs)
    keep: list[Instr] = []
    for ins in reversed(g.instrs):
        if ins.out in live:
            keep.append(ins)
            live.update(ins.inputs)
    g.instrs = keep[::-1]
    return g


def _param_key(params: dict) -> tuple | None:
    """The instruction's parameters in ir/exact_params.py's exact form (the same rule as the
    disk cache's and the kernel keys'), or None where a parameter has no exact form: two
    instructions may merge only if their parameters mean the same thing, and plain equality
    would merge x*0.0 with x*-0.0, a fill of True with one of 1, or 1 with 1.0."""
    if not params:                  # most instructions: elementwise ops
        return ()
    try:
        if len(params) == 1:
            (k, v), = params.items()
            return ((k, exact_param(v)),)
        return tuple([(k, exact_param(params[k])) for k in sorted(params)])
    except Inexact:
        return None


def cse(g: Graph) -> Graph:
    seen: dict[tuple, Value] = {}
    subst: dict[Value, Value] = {}
    kept = []
    for ins in g.instrs:
        ins.inputs = [subst.get(v, v) for v in ins.inputs]
        a = ins.out.aval        # (its shape and dtype: hashing the Aval costs a Python call)
        pkey = _param_key(ins.params)
        if pkey is None:            # (parameters without an exact form: never merged)
            kept.append(ins)
            continue
        key = (ins.prim.name, tuple(map(id, ins.inputs)), pkey, a.shape, a.dtype)
        if key in seen:
            subst[ins.out] = seen[key]
        else:
            seen[key] = ins.out
            kept.append(ins)
    g.instrs = kept
    g.outputs = [subst.get(v, v) for v in g.outputs]
    return g


def _const_value(v: Value):
    p = v.producer
    return p.params["value"] if p is not None and p.prim.name == "constant" else None


def fold_constants(g: Graph) -> Graph:
    from .primitives import P
    for ins in g.instrs:
        # a broadcast of a constant stays a splat: cheaper to store and to generate code for;
        # an effectful op (a collective across processes) runs at every call, never here
        if not ins.inputs or ins.out.aval.size > FOLD_LIMIT or ins.prim.name == "broadcast" \
                or getattr(ins.prim, "effectful", False):
            continue
        vals = [_const_value(v) for v in ins.inputs]
        if any(x is None for x in vals):
            continue
        try:
            with np.errstate(all="ignore"):
                res = np.asarray(ins.prim.impl(*vals, **ins.params), dtype=ins.out.dtype.np)
        except Exception:       # leave it for run time, where the error is reported properly
            continue
        ins.prim, ins.inputs, ins.params = P.constant, [], {"value": res}
    return dce(g)


def splat_value(v: Value):
    """The scalar every element of `v` holds, if `v` is a constant seen through broadcasts."""
    while v.producer is not None and v.producer.prim.name in ("broadcast", "reshape"):
        v = v.producer.inputs[0]
    c = _const_value(v)
    if c is None or c.size == 0:
        return None
    first = c.reshape(-1)[0]
    return first.item() if np.all(c == first) else None


def simplify(g: Graph) -> Graph:
    """x*1, 1*x, x+0, 0+x, x-0, x/1, identity casts/reshapes/broadcasts/transposes, and
    collapsing transpose∘transpose, reshape∘reshape, broadcast∘broadcast."""
    subst: dict[Value, Value] = {}
    for ins in g.instrs:
        ins.inputs = [subst.get(v, v) for v in ins.inputs]
        name, ins_in, out = ins.prim.name, ins.inputs, ins.out
        src = None
        if name in ("mul", "add", "sub", "div"):
            a, b = ins_in
            unit = 1 if name in ("mul", "div") else 0
            if a.aval == out.aval and splat_value(b) == unit:
                src = a
            elif name in ("mul", "add") and b.aval == out.aval and splat_value(a) == unit:
                src = b
        elif name in ("reshape", "broadcast", "cast") and ins_in[0].aval == out.aval:
            src = ins_in[0]
        elif name == "transpose":
            perm = ins.params["perm"]
            inner = ins_in[0].producer
            if list(perm) == sorted(perm):
                src = ins_in[0]
            elif inner is not None and inner.prim.name == "transpose":
                ip = inner.params["perm"]
                ins.inputs = [inner.inputs[0]]
                ins.params = {"perm": tuple(ip[p] for p in perm)}
                if list(ins.params["perm"]) == sorted(perm):
                    src = inner.inputs[0]
        elif name in ("reshape", "broadcast"):
            inner = ins_in[0].producer
            if inner is not None and inner.prim.name == name:
                ins.inputs = [inner.inputs[0]]
                if ins.inputs[0].aval == out.aval:
                    src = ins.inputs[0]
        if src is not None and src.dtype is out.dtype:
            subst[out] = src
    _replace_uses(g, subst)
    return dce(g)


def optimize(g: Graph) -> Graph:
    """The standard pipeline run on every traced graph (defer_waits: a collective's wait
    after the work that does not need its result)."""
    return defer_waits(dce(cse(simplify(fold_constants(cse(g))))))


def widen_half(g: Graph, matmul_dtypes: tuple = (), int_scatters: bool = False) -> Graph:
    """Sums and scatter-adds of 16-bit floats (and matmuls of `matmul_dtypes`) become
    cast(op(cast(x, f32)), x.dtype): they accumulate in float32 and round once, as the
    interpreter's rules say. With `int_scatters` (CUDA: no 8/16-bit atomic add), scatter-adds
    of uint8/int8/int16 accumulate in int32 likewise (the same low bits: addition wraps). The
    casts fuse into the neighbouring kernels. Returns `g` itself when nothing needs widening,
    else a new graph, so the graph IR dumps show keeps its ops."""
    from .dtypes import HALF, SMALL_INT, f32, i32
    from .primitives import P

    def needs(ins: Instr) -> bool:
        d = ins.out.dtype
        return (ins.prim.name in ("sum", "scatter_add") and d in HALF) or \
            (ins.prim.name == "matmul" and d in matmul_dtypes) or \
            (int_scatters and ins.prim.name == "scatter_add" and d in SMALL_INT)
    if not any(needs(ins) for ins in g.instrs):
        return g
    new = Graph(g.name)
    env = {v: new.add_input(v.aval, v.name) for v in g.inputs}
    for ins in g.instrs:
        args = [env[v] for v in ins.inputs]
        if needs(ins):
            wide = [new.emit(P.cast, [a], {"dtype": f32}, ins.loc) if a.dtype in HALF else
                    new.emit(P.cast, [a], {"dtype": i32}, ins.loc) if a.dtype in SMALL_INT else a
                    for a in args]
            res = new.emit(ins.prim, wide, ins.params, ins.loc)
            env[ins.out] = new.emit(P.cast, [res], {"dtype": ins.out.dtype}, ins.loc)
        else:
            env[ins.out] = new.emit_copy(ins, args)
    new.outputs = [env[v] for v in g.outputs]
    return new
