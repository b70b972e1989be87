"""Gradient all-reduces started inside a compiled backward.

A compiled model (`model.compile()`, `tj.compile(model)`) runs its whole backward as one
executable, so gradient hooks (DDP's reducer) see its gradients only after it returns, and a
data-parallel step could not overlap communication with any of it. Here a syncer (DDP's
reducer: nn/parallel/reducer.py) that is waiting for a backward offers a plan: which of the
compiled backward's gradients form its buckets. The backward graph is then rebuilt with, in
the graph's own order, right after the instruction that produces a bucket's last gradient,
the bucket's flattened concatenation and a `dist_all_reduce_start` (ir/prims_collective.py);
the waits, chained in start order, come at the end, and the reduced flat buckets are extra
outputs. The executable runs the later gradient kernels while the earlier buckets travel (on
the CPU, MPI's progress thread advances them: distributed/mpi_backend.py). The rebuilt
executable is compiled once per plan and cached beside the plain one.

Buckets start in bucket order (a bucket's start is placed after the previous one's), the same
on every rank, because every rank runs the same graph with the same plan."""
from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any, Protocol

from ..ir.core import Graph, Value
from ..ir.primitives import P
from ..ir.verify import verify


@dataclass(frozen=True)
class Plan:
    """Buckets (in start order) as positions in the backward's gradient outputs."""
    buckets: tuple[tuple[int, ...], ...]
    op: int                      # ir/prims_collective.py's op code
    group: int                   # process group number (0: the default one)

    @property
    def key(self) -> tuple:
        return (self.buckets, self.op, self.group)


class Syncer(Protocol):
    def compiled_plan(self, tensors: list) -> Plan | None: ...


SYNCERS: list = []     # syncers waiting for a backward (a reducer adds itself in prepare())
_VARIANTS: "weakref.WeakKeyDictionary[Any, dict]" = weakref.WeakKeyDictionary()
_SOURCES: "weakref.WeakKeyDictionary[Any, Graph]" = weakref.WeakKeyDictionary()


def note_source(bwd_exe: Any, graph: Graph) -> None:
    """Remember the graph a compiled backward was built from (the backends transform it)."""
    _SOURCES[bwd_exe] = graph


def plan_for(tensors: list) -> Plan | None:
    for s in SYNCERS:
        plan = s.compiled_plan(tensors)
        if plan is not None:
            return plan
    return None


def variants(bwd_exe: Any) -> list:
    """The executables rebuilt from bwd_exe with all-reduces inside (tests read their steps)."""
    return list(_VARIANTS.get(bwd_exe, {}).values())


def all_variants() -> list:
    return [exe for vs in list(_VARIANTS.values()) for exe in vs.values()]


def run_synced(bwd_exe: Any, plan: Plan, args: list) -> list:
    """Run the backward with the plan's all-reduces inside: the gradients, with those of the
    plan's buckets replaced by views of the reduced flat buckets."""
    variants = _VARIANTS.setdefault(bwd_exe, {})
    exe = variants.get(plan.key)
    if exe is None:
        exe = variants[plan.key] = type(bwd_exe)(verify(sync_graph(_SOURCES[bwd_exe], plan)))
    res = exe.run(args)
    n = len(res) - len(plan.buckets)
    grads = list(res[:n])
    for flat, positions in zip(res[n:], plan.buckets):
        off = 0
        for i in positions:
            size = grads[i].size
            grads[i] = flat[off:off + size].reshape(grads[i].shape)
            off += size
    return grads


def sync_graph(bwd: Graph, plan: Plan) -> Graph:
    """bwd with each bucket's all-reduce started where its last gradient is made (see the
    module doc); outputs: bwd's, then the reduced flat buckets."""
    g = Graph(bwd.name + "_sync")
    env: dict[Value, Value] = {}
    for v in bwd.inputs:
        env[v] = g.add_input(v.aval, v.name)
    outs = bwd.outputs
    # where each bucket's gradients are complete: after the instruction with this index
    pos = {ins.out: k for k, ins in enumerate(bwd.instrs)}
    ready_at = [max(pos.get(outs[i], -1) for i in b) for b in plan.buckets]
    params = {"op": plan.op} if plan.group == 0 else {"op": plan.op, "group": plan.group}
    flats: list[Value] = []
    tickets: list[Value] = []

    def start_ready(k: int) -> None:
        while len(tickets) < len(plan.buckets) and ready_at[len(tickets)] <= k:
            b = plan.buckets[len(tickets)]
            parts = [g.emit(P.reshape, [env[outs[i]]], {"shape": (outs[i].aval.size,)})
                     for i in b]
            flat = parts[0] if len(parts) == 1 else \
                g.emit(P.concatenate, parts, {"axis": 0})
            after = tickets[-1] if tickets else flat
            flats.append(flat)
            tickets.append(g.emit(P.dist_all_reduce_start, [flat, after], params))

    start_ready(-1)
    for k, ins in enumerate(bwd.instrs):
        env[ins.out] = g.emit(ins.prim, [env[v] for v in ins.inputs], ins.params, loc=ins.loc)
        start_ready(k)
    waited: list[Value] = []
    for flat, ticket in zip(flats, tickets):
        after = waited[-1] if waited else ticket
        waited.append(g.emit(P.dist_all_reduce_wait, [flat, ticket, after], params))
    g.outputs = [env[v] for v in outs] + waited
    return g
