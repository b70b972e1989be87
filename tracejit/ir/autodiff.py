"""The reverse-mode transform on the IR.

`vjp_graph` builds a joint graph (primal inputs, output cotangents) -> (outputs, gradients) by
replaying the forward and then applying each primitive's VJP rule in reverse order, emitting
the rule's IR with the forward instruction's source location. `split` cuts a joint graph into a
forward graph that also returns the residuals the backward needs, and a backward graph."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from .core import Graph, Value
from .partition import choose_saved, recomputable
from .passes import optimize
from .primitives import P, add, bind, const_like


def vjp_graph(fwd: Graph, wrt: Sequence[int], name: str | None = None,
              seed_first: bool = False, into: Graph | None = None) -> Graph:
    """Joint graph with inputs fwd.inputs + one cotangent per float output, and outputs
    fwd.outputs + the gradient of each input in `wrt` (zeros where it is unused).

    With seed_first, the first output (a scalar loss) gets the cotangent 1 and no cotangent
    inputs are added: the graph of `grad`. With `into`, an empty graph that already has those
    inputs (the runtime made it before building its contents: runtime/grad_trace.py), the
    joint graph is built there and returned."""
    if into is None:
        j = Graph(name or f"{fwd.name}_vjp")
        env: dict[Value, Value] = {v: j.add_input(v.aval, v.name) for v in fwd.inputs}
    else:
        n_in = len(fwd.inputs) + (0 if seed_first else
                                  sum(v.dtype.is_float for v in fwd.outputs))
        same = all((a.shape, a.dtype) == (v.shape, v.dtype)
                   for a, v in zip(into.inputs, fwd.inputs))
        if into.instrs or len(into.inputs) != n_in or not same:
            raise ValueError(f"vjp_graph: {into.name} is not an empty graph with the inputs of "
                             f"{fwd.name}'s joint graph")
        j = into
        env = dict(zip(fwd.inputs, into.inputs))
    for ins in fwd.instrs:
        env[ins.out] = j.emit(ins.prim, [env[v] for v in ins.inputs], ins.params, ins.loc)
    if seed_first:
        float_outs = [0]
        out0 = fwd.outputs[0]
        cts = [const_like(env[out0], np.ones(out0.shape, out0.dtype.np))]
    else:
        float_outs = [i for i, v in enumerate(fwd.outputs) if v.dtype.is_float]
        cts = [j.add_input(fwd.outputs[i].aval, f"ct{i}") for i in float_outs] if into is None \
            else into.inputs[len(fwd.inputs):]

    active = {fwd.inputs[i] for i in wrt}          # values that depend on a wrt input
    for ins in fwd.instrs:
        if ins.out.dtype.is_float and any(v in active for v in ins.inputs):
            active.add(ins.out)

    ct: dict[Value, Value] = {}
    for i, c in zip(float_outs, cts):
        v = fwd.outputs[i]
        ct[v] = add(ct[v], c) if v in ct else c
    for ins in reversed(fwd.instrs):
        g = ct.pop(ins.out, None)
        if g is None or ins.prim.vjp is None:
            continue
        need = tuple(v in active for v in ins.inputs)
        if not any(need):
            continue
        j.loc_override = ins.loc
        res = ins.prim.vjp(g, [env[v] for v in ins.inputs], env[ins.out], ins.params, need)
        j.loc_override = None
        for v, r, n in zip(ins.inputs, res, need):
            if n and r is not None:
                ct[v] = add(ct[v], r) if v in ct else r
    grads = []
    for i in wrt:
        v = fwd.inputs[i]
        g = ct.get(v)
        if g is None:
            zero = const_like(env[v], np.zeros((), v.dtype.np))
            g = bind(P.broadcast, zero, shape=v.shape) if v.shape else zero
        grads.append(g)
    j.outputs = [env[v] for v in fwd.outputs] + grads
    return optimize(j)


def split(joint: Graph, n_primal: int, n_outputs: int,
          recompute: bool = False) -> tuple[Graph, Graph, int]:
    """Cut a joint graph (from vjp_graph, optimized) into forward and backward graphs.

    forward: primal inputs -> outputs + residuals; backward: residuals + cotangents -> grads.
    Returns (forward, backward, number of residuals). Constant-only instructions are
    recomputed where needed instead of being saved, and so are random numbers (a dropout
    mask): the backward regenerates them from the 0-d seed and offset, which are all it
    saves of them.

    With `recompute`, the residuals are a minimum cut (ir/partition.py): cheap elementwise and
    view-like values the backward needs are recomputed in the backward from fewer saved bytes
    instead of being saved."""
    primal, cts = joint.inputs[:n_primal], joint.inputs[n_primal:]
    uses = joint.users()
    rng = {v for v in primal if v in uses and all(i.prim.name == "random" for i in uses[v])}
    dep_ct, dep_primal = set(cts), set(primal) - rng
    for ins in joint.instrs:
        if any(v in dep_ct for v in ins.inputs):
            dep_ct.add(ins.out)
        if any(v in dep_primal for v in ins.inputs):
            dep_primal.add(ins.out)
    is_bwd = lambda v: v in dep_ct or (v not in dep_primal and v not in primal)  # noqa: E731
    # (a value made from random numbers and constants only is not in dep_primal: recomputed)

    grads = joint.outputs[n_outputs:]
    bwd = Graph(joint.name + "_bwd")
    fwd = Graph(joint.name + "_fwd")
    fenv = {v: fwd.add_input(v.aval, v.name) for v in primal}
    for ins in joint.instrs:
        if ins.out not in dep_ct:
            fenv[ins.out] = fwd.emit(ins.prim, [fenv[v] for v in ins.inputs], ins.params, ins.loc)
    residuals: list[Value] = []
    benv: dict[Value, Value] = {}
    if recompute:
        needed = [v for ins in joint.instrs if is_bwd(ins.out) for v in ins.inputs
                  if not is_bwd(v)] + [v for v in grads if not is_bwd(v)]
        saved = choose_saved(lambda v: not is_bwd(v), needed)
        again = _recomputed(needed, saved, is_bwd)
        plain_is_bwd = is_bwd
        is_bwd = lambda v: plain_is_bwd(v) or v in again   # noqa: E731

    def need_in_bwd(v: Value) -> None:
        if v in benv or is_bwd(v):
            return
        residuals.append(v)
        benv[v] = bwd.add_input(v.aval, f"r{len(residuals) - 1}")

    for ins in joint.instrs:
        if is_bwd(ins.out):
            for v in ins.inputs:
                need_in_bwd(v)
    for v in grads:
        need_in_bwd(v)
    bwd_cts = [bwd.add_input(c.aval, c.name) for c in cts]
    benv.update(zip(cts, bwd_cts))
    for ins in joint.instrs:
        if is_bwd(ins.out):
            benv[ins.out] = bwd.emit(ins.prim, [benv[v] for v in ins.inputs], ins.params, ins.loc)
    bwd.outputs = [benv[v] for v in grads]
    fwd.outputs = [fenv[v] for v in joint.outputs[:n_outputs]] + [fenv[v] for v in residuals]
    # the cotangent inputs sit after the residuals in bwd.inputs
    bwd.inputs = [benv[v] for v in residuals] + bwd_cts
    return optimize(fwd), optimize(bwd), len(residuals)


def _recomputed(needed, saved, is_bwd) -> set[Value]:
    """The forward values the backward recomputes: those it needs that are not saved, and
    what they are made from, back to saved values and the backward's own."""
    out: set[Value] = set()
    todo = list(needed)
    while todo:
        v = todo.pop()
        if v in out or v in saved or is_bwd(v) or not recomputable(v):
            continue        # (anything not recomputed that the backward reads is saved)
        out.add(v)
        todo += v.producer.inputs
    return out


__all__ = ["vjp_graph", "split"]
