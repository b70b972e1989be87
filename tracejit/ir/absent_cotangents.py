"""Backward graphs for calls whose outputs only partly receive a gradient.

A compiled call's backward graph takes one cotangent per float output. When the caller
backpropagates through only some outputs (`loss, aux = f(x); loss.backward()`), the others
have no cotangent at all: as in torch, their gradient formulas must contribute nothing. Fed
zeros instead, a formula with an infinite local derivative (log at 0, a division by 0) turns
0 * inf into NaN and poisons every gradient it is added to.

`without_cotangents(bwd, absent, first_ct)` copies the backward graph with the cotangent inputs
numbered in `absent` treated as absent: the gradient is linear in the cotangents, so every value
that depends on absent cotangents and on no present one is exactly zero and is not computed;
where such a value meets a present cotangent's value (a sum of contributions) it is a zero
constant. The graph keeps all its inputs (the runtime passes every cotangent)."""
from __future__ import annotations

from typing import Iterable

import numpy as np

from .core import Graph, Value
from .passes import dce
from .primitives import P

_RES, _LIVE, _ABSENT = 0, 1, 2


def without_cotangents(bwd: Graph, absent: Iterable[int], first_ct: int) -> Graph:
    """bwd with its inputs numbered in `absent` (all >= first_ct, the first cotangent input)
    absent: see the module doc."""
    absent = set(absent)
    g = Graph(bwd.name + "_partial")
    env: dict[Value, Value] = {}
    kind: dict[Value, int] = {}
    for i, v in enumerate(bwd.inputs):
        env[v] = g.add_input(v.aval, v.name)
        kind[v] = _ABSENT if i in absent else (_LIVE if i >= first_ct else _RES)

    def zeros(v: Value) -> Value:
        c = g.emit(P.constant, [], {"value": np.zeros((), v.dtype.np)})
        return c if v.shape == () else g.emit(P.broadcast, [c], {"shape": tuple(v.shape)})

    for ins in bwd.instrs:
        k = max((kind[v] for v in ins.inputs), default=_RES)
        if any(kind[v] == _LIVE for v in ins.inputs):
            k = _LIVE
        kind[ins.out] = k
        if k == _ABSENT:
            continue            # (zero: linear in absent cotangents only)
        env[ins.out] = g.emit_copy(ins, [zeros(v) if kind[v] == _ABSENT else env[v]
                                         for v in ins.inputs])
    g.outputs = [zeros(v) if kind[v] == _ABSENT else env[v] for v in bwd.outputs]
    return dce(g)


__all__ = ["without_cotangents"]
