"""The forward-mode transform on the IR (JVP), beside the reverse-mode one in autodiff.py.

`jvp_graph` builds (primal inputs, tangents of some of them) -> (outputs, output tangents) by
replaying the forward graph and, after each instruction, applying its primitive's JVP rule to
the tangents of its operands. Tangents are symbolic: a value without a tangent has a zero one,
which is never materialized (a rule sees None), and integer or bool values never have one.
`linear_split` cuts such a graph into the primal part (outputs and the residuals the tangent
part reads) and the tangent part, which is linear in the tangents: `tj.linearize`.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from .autodiff import split
from .core import Graph, Value
from .dtypes import DType
from .passes import optimize
from .primitives import P, Primitive, bind, const_like


def jvp_rule(prim: Primitive, tangents: Sequence[Any], ins: Sequence[Any], out: Any,
             params: dict) -> Any:
    """The tangent of `out = prim(*ins)` given its operands' tangents (None = zero), or None.
    One entry point for the IR transform and the eager dual tensors alike."""
    d = out.dtype
    if not (d.is_float if type(d) is DType else np.issubdtype(d, np.floating)) or \
            all(t is None for t in tangents):
        return None
    if prim.jvp is None:
        raise NotImplementedError(f"{prim.name}: no JVP rule, so forward-mode derivatives "
                                  f"(tj.jvp, tj.jacfwd, forward_ad) cannot go through it")
    return prim.jvp(list(tangents), list(ins), out, params)


def _zeros(graph: Graph, v: Value) -> Value:
    zero = const_like(v, np.zeros((), v.dtype.np))
    return bind(P.broadcast, zero, shape=v.shape) if v.shape else zero


def jvp_graph(fwd: Graph, wrt: Sequence[int], name: str | None = None) -> Graph:
    """Graph with inputs fwd.inputs + one tangent per input in `wrt` (float inputs only, in
    that order), and outputs fwd.outputs + one tangent per float output (zeros where an
    output does not depend on the tangents)."""
    j = Graph(name or f"{fwd.name}_jvp")
    env: dict[Value, Value] = {v: j.add_input(v.aval, v.name) for v in fwd.inputs}
    tan: dict[Value, Value] = {}
    for i in wrt:
        v = fwd.inputs[i]
        if not v.dtype.is_float:
            raise TypeError(f"jvp: input {i} of @{fwd.name} is {v.aval}; only floating-point "
                            f"inputs have tangents")
        tan[v] = j.add_input(v.aval, f"t_{v.name or i}")
    for ins in fwd.instrs:
        args = [env[v] for v in ins.inputs]
        out = j.emit(ins.prim, args, ins.params, ins.loc)
        env[ins.out] = out
        ts = [tan.get(v) for v in ins.inputs]
        if any(t is not None for t in ts):
            j.loc_override = ins.loc       # the tangent's IR carries the op's own file:line
            try:
                t = jvp_rule(ins.prim, ts, args, out, ins.params)
            finally:
                j.loc_override = None
            if t is not None:
                tan[ins.out] = t
    outs = [env[v] for v in fwd.outputs]
    touts = []
    for v, o in zip(fwd.outputs, outs):
        if v.dtype.is_float:
            t = tan.get(v)
            touts.append(t if t is not None else _zeros(j, o))
    j.outputs = outs + touts
    return optimize(j)


def linear_split(jvp: Graph, n_primal: int, n_outputs: int) -> tuple[Graph, Graph, int]:
    """Cut a graph from `jvp_graph` into (primal inputs -> outputs + residuals) and
    (residuals + tangents -> output tangents), and the number of residuals. The same cut as
    reverse mode's `split`: what depends on the tangents goes to the second graph."""
    return split(jvp, n_primal, n_outputs)


__all__ = ["jvp_rule", "jvp_graph", "linear_split"]
