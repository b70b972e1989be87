"""Which forward values a backward saves, and which it recomputes: a minimum cut.

As AOTAutograd's min-cut partitioner does: every forward value v is an edge v_in -> v_out
whose capacity is its size in bytes (the cost of saving it). A value the backward reads is
joined to the sink; a value that must be computed in the forward (a primal input, or anything
not cheap to recompute: reductions, matmuls, gathers, random numbers, extern calls) is joined to
the source; each operation joins its operands' v_out to its result's v_in. A minimum cut is a
set of values to save with the fewest bytes such that everything else the backward needs can
be recomputed from them by cheap operations: elementwise arithmetic and the view-like shape
operations, which fusion folds into the backward's own kernels."""
from __future__ import annotations

import math
import os
from collections import deque
from typing import Callable, Iterable

from .core import Value

# cheap to recompute: elementwise arithmetic and views/broadcasts
RECOMPUTABLE_KINDS = ("elementwise",)
RECOMPUTABLE_SHAPE = ("reshape", "broadcast", "transpose", "slice", "iota")
_INF = 1 << 62


def cut_enabled() -> bool:
    """TRACEJIT_RESIDUAL_CUT=off: save every forward value the backward reads (no cut)."""
    return os.environ.get("TRACEJIT_RESIDUAL_CUT", "on").lower() not in ("off", "0", "no")


def recomputable(v: Value) -> bool:
    ins = v.producer
    if ins is None:
        return False
    return ins.prim.kind in RECOMPUTABLE_KINDS or ins.prim.name in RECOMPUTABLE_SHAPE


def _nbytes(v: Value) -> int:
    return math.prod(v.shape) * v.dtype.np.itemsize


class _Flow:
    """A max-flow network (Edmonds-Karp: shortest augmenting paths by BFS), iterative."""

    def __init__(self) -> None:
        self.cap: dict[object, dict[object, int]] = {}

    def edge(self, a, b, c: int) -> None:
        self.cap.setdefault(a, {})
        self.cap.setdefault(b, {})
        self.cap[a][b] = self.cap[a].get(b, 0) + c
        self.cap[b].setdefault(a, 0)

    def reachable(self, s) -> set:
        seen, todo = {s}, deque([s])
        while todo:
            a = todo.popleft()
            for b, c in self.cap[a].items():
                if c > 0 and b not in seen:
                    seen.add(b)
                    todo.append(b)
        return seen

    def max_flow(self, s, t) -> int:
        total = 0
        while True:
            parent = {s: None}
            todo = deque([s])
            while todo and t not in parent:
                a = todo.popleft()
                for b, c in self.cap[a].items():
                    if c > 0 and b not in parent:
                        parent[b] = a
                        todo.append(b)
            if t not in parent:
                return total
            path, b = [], t
            while parent[b] is not None:
                path.append((parent[b], b))
                b = parent[b]
            f = min(self.cap[a][b] for a, b in path)
            for a, b in path:
                self.cap[a][b] -= f
                self.cap[b][a] += f
            total += f


def choose_saved(forward: Callable[[Value], bool], needed: Iterable[Value],
                 can_recompute: Callable[[Value], bool] = recomputable) -> set[Value]:
    """The forward values to save so that the backward can make `needed` (forward values it
    reads) from them with cheap operations only, at the fewest bytes. `forward(v)` says whether
    v is a forward value (the others, the backward's own, are free to the backward)."""
    needed = list(dict.fromkeys(needed))
    if not needed:
        return set()
    # only the values the needed ones depend on matter
    relevant: set[Value] = set()
    todo = list(needed)
    while todo:
        v = todo.pop()
        if v in relevant or not forward(v):
            continue
        relevant.add(v)
        if v.producer is not None and can_recompute(v):
            todo += v.producer.inputs
    net, src, sink = _Flow(), ("source",), ("sink",)
    net.edge(src, sink, 0)
    for v in relevant:
        net.edge((v, 0), (v, 1), _nbytes(v))
        if not can_recompute(v):
            net.edge(src, (v, 0), _INF)
        else:
            for u in v.producer.inputs:
                if u in relevant:
                    net.edge((u, 1), (v, 0), _INF)
    for v in needed:
        if v in relevant:
            net.edge((v, 1), sink, _INF)
    net.max_flow(src, sink)
    side = net.reachable(src)
    return {v for v in relevant if (v, 0) in side and (v, 1) not in side}


__all__ = ["choose_saved", "cut_enabled", "recomputable", "RECOMPUTABLE_KINDS", "RECOMPUTABLE_SHAPE"]
