"""Graph-to-graph rewrites. Dead-code elimination, common subexpressions, constant folding and
algebraic simplification rewrite the graph in place and return it; `widen_half`, which the
backends run before fusion, returns a new graph."""
from __future__ import annotations

import numpy as np

from .core import Graph, Instr, Value

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


_PLAIN = frozenset({int, float, bool, str, tuple, type(None)})


def _param_key(params: dict) -> tuple:
    if not params:                  # most instructions: elementwise ops
        return ()
    items = []
    for k, v in sorted(params.items()) if len(params) > 1 else params.items():
        if type(v) in _PLAIN:       # (what the general case below leaves as it is)
            items.append((k, v))
            continue
        if isinstance(v, np.ndarray):
            v = (v.dtype.str, v.shape, v.tobytes())
        items.append((k, v if not hasattr(v, "kind") else v.name))
    return tuple(items)


def cse(g: Graph) -> Graph:
    seen: dict[tuple, Value] = {}
    subst: dict[Value, Value] = {}
    kept = []
    for ins in g.instrs:
        ins.inputs = [subst.get(v, v) for v in ins.inputs]
        a = ins.out.aval        # (its shape and dtype: hashing the Aval costs a Python call)
        key = (ins.prim.name, tuple(map(id, ins.inputs)), _param_key(ins.params), a.shape,
               a.dtype)
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
    """The standard pipeline run on every traced graph."""
    return dce(cse(simplify(fold_constants(cse(g)))))


def widen_half(g: Graph, matmul_dtypes: tuple = ()) -> Graph:
    """Sums and scatter-adds of 16-bit floats (and matmuls of `matmul_dtypes`) become
    cast(op(cast(x, f32)), x.dtype): they accumulate in float32 and round once, as the
    interpreter's rules say. The casts fuse into the neighbouring kernels. Returns `g` itself
    when nothing needs widening, else a new graph, so the graph IR dumps show keeps its ops."""
    from .dtypes import HALF, f32
    from .primitives import P

    def needs(ins: Instr) -> bool:
        d = ins.out.dtype
        return (ins.prim.name in ("sum", "scatter_add") and d in HALF) or \
            (ins.prim.name == "matmul" and d in matmul_dtypes)
    if not any(needs(ins) for ins in g.instrs):
        return g
    new = Graph(g.name)
    env = {v: new.add_input(v.aval, v.name) for v in g.inputs}
    for ins in g.instrs:
        args = [env[v] for v in ins.inputs]
        if needs(ins):
            wide = [new.emit(P.cast, [a], {"dtype": f32}, ins.loc) if a.dtype in HALF else a
                    for a in args]
            res = new.emit(ins.prim, wide, ins.params, ins.loc)
            env[ins.out] = new.emit(P.cast, [res], {"dtype": ins.out.dtype}, ins.loc)
        else:
            env[ins.out] = new.emit_copy(ins, args)
    new.outputs = [env[v] for v in g.outputs]
    return new
