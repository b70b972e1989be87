"""Gradient all-reduces started inside a compiled backward.

A compiled model (`model.compile()`, `tj.compile(model)`) runs its whole backward as one
executable, so gradient hooks (DDP's reducer) see its gradients only after it returns, and a
data-parallel step could not overlap communication with any of it. Here a syncer (DDP's
reducer: nn/parallel/reducer.py) that is waiting for a backward offers a plan: which of the
compiled backward's gradients form its buckets.

On the CPU (an executable with `run_hooked`: runtime/llvm_backend.py) the plain backward
executable runs as it is, with two changes made at run time. Each bucket is one flat array,
and the kernels and BLAS calls that produce its gradients write straight into their places
in it (its outputs are bound to views of the flat array: no concatenation, no copy). Right
after the step that last touches a bucket's gradients, the syncer starts the bucket's
all-reduce in place on the flat array (MPI's progress thread advances it: Open MPI advances
a nonblocking collective only inside MPI calls), and after every later step the syncer may
poll it too (its `progress`; the only progress without that thread). The waits come after the
last step, in start order; the gradients returned are views of the reduced buckets.

Elsewhere (the GPU) the backward graph is rebuilt with, in the graph's own order, right after
the instruction that produces a bucket's last gradient, the bucket's flattened concatenation
and a `dist_all_reduce_start` (ir/prims_collective.py); the waits, chained in start order,
come at the end, and the reduced flat buckets are extra outputs: the collectives are queued
on their stream in order with the kernels. The rebuilt executable is compiled once per plan
and cached beside the plain one.

Buckets start in bucket order (a bucket's start is placed after the previous one's), the same
on every rank, because every rank runs the same program with the same plan."""
from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from ..ir.core import Graph, Value
from ..ir.primitives import P
from ..ir.verify import verify
from .buffers import shared_pool


@dataclass(frozen=True)
class Plan:
    """Buckets (in start order) as positions in the backward's gradient outputs."""
    buckets: tuple[tuple[int, ...], ...]
    op: int                      # ir/prims_collective.py's op code
    group: int                   # process group number (0: the default one)
    # who all-reduces the buckets of a CPU backward (start_bucket, progress); None: the
    # rebuilt graph's collectives do (not part of the key: it selects no executable)
    syncer: Any = field(default=None, compare=False, hash=False)

    @property
    def key(self) -> tuple:
        return (self.buckets, self.op, self.group)


class Syncer(Protocol):
    def compiled_plan(self, tensors: list) -> Plan | None: ...

    def start_bucket(self, flat: np.ndarray) -> Any:
        """Start the all-reduce of a bucket in place; returns what waits for it (`wait()`)."""

    def progress(self) -> None:
        """Let the started all-reduces advance."""


SYNCERS: list = []     # syncers waiting for a backward (a reducer adds itself in prepare())
_VARIANTS: "weakref.WeakKeyDictionary[Any, dict]" = weakref.WeakKeyDictionary()
_LAYOUTS: "weakref.WeakKeyDictionary[Any, dict]" = weakref.WeakKeyDictionary()
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
    if plan.syncer is not None and hasattr(bwd_exe, "run_hooked"):
        return run_in_buckets(bwd_exe, plan, args)
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


# -- the CPU path: gradients written into the buckets, all-reduces started between steps ------
@dataclass
class Layout:
    """Where a backward executable's gradients go in the plan's flat buckets."""
    sizes: list[int]                  # per bucket: its number of elements
    dtypes: list[np.dtype]
    # per bucket: (gradient position, offset, size, shape, out_alloc index or -1: copied in
    # after the run, because the output is not an array of its own that the program writes)
    places: list[list[tuple[int, int, int, tuple, int]]]
    ready: list[int]                  # per bucket: the run step after which it starts
    n_steps: int


def layout(exe: Any, plan: Plan) -> Layout:
    """The plan's buckets laid over exe's outputs (computed once per executable and plan)."""
    known = _LAYOUTS.setdefault(exe, {})
    lay = known.get(plan.key)
    if lay is None:
        lay = known[plan.key] = _make_layout(exe, plan)
    return lay


def _make_layout(exe: Any, plan: Plan) -> Layout:
    outs = _SOURCES[exe].outputs
    alloc = {s: k for k, (s, *_) in enumerate(exe.out_alloc)}
    uses: dict[int, int] = {}
    for s, _ in exe.out_plan:
        uses[s] = uses.get(s, 0) + 1
    last: dict[int, int] = {}         # slot -> the last run step that reads or writes it
    for i, slots in enumerate(exe.step_slots):
        for s in slots:
            last[s] = i
    n_steps = len(exe.step_slots)
    sizes, dtypes, places, ready = [], [], [], []
    for bucket in plan.buckets:
        dtype = np.dtype(outs[bucket[0]].aval.dtype.np)
        off, rows, at = 0, [], -1
        for i in bucket:
            aval = outs[i].aval
            s, copied = exe.out_plan[i]
            k = alloc.get(s, -1)
            # written in place only if the program writes this output and nothing else
            # returns or reads it after its last step (an in-flight all-reduce changes it)
            if copied or k < 0 or uses[s] > 1 or exe.out_alloc[k][2] != dtype \
                    or np.dtype(aval.dtype.np) != dtype:
                k, at = -1, n_steps
            else:
                at = max(at, last.get(s, n_steps))
            rows.append((i, off, aval.size, tuple(aval.shape), k))
            off += aval.size
        sizes.append(off)
        dtypes.append(dtype)
        places.append(rows)
        ready.append(max(at, ready[-1] if ready else -1))     # in bucket order
    return Layout(sizes, dtypes, places, ready, n_steps)


def run_in_buckets(exe: Any, plan: Plan, args: list) -> list:
    """The CPU path (see the module doc): exe run with its bucket gradients written into flat
    arrays, each bucket's all-reduce started after the step that completes it, MPI progressed
    after every later step, all waited at the end."""
    lay = layout(exe, plan)
    syncer = plan.syncer
    # (from the output pool: a bucket freed after the step is reused by the next one, not
    # page-faulted in again)
    pool = shared_pool()
    flats = [pool.empty((n,), dt) for n, dt in zip(lay.sizes, lay.dtypes)]
    given = {}
    for flat, rows in zip(flats, lay.places):
        for _, off, n, shape, k in rows:
            if k >= 0:
                given[k] = flat[off:off + n].reshape(shape)
    works: list = []

    def start_ready(step: int) -> None:
        while len(works) < len(flats) and lay.ready[len(works)] <= step:
            works.append(syncer.start_bucket(flats[len(works)]))
        if works:
            syncer.progress()

    first = min(lay.ready)
    hooks = {i: (lambda i=i: start_ready(i)) for i in range(max(first, 0), lay.n_steps)} \
        if getattr(syncer, "overlap", True) else {}       # (else all start at the end)
    try:
        res = exe.run_hooked(args, given, hooks)
        grads = list(res)
        for flat, rows in zip(flats, lay.places):
            for i, off, n, shape, k in rows:
                view = flat[off:off + n].reshape(shape)
                if k < 0:
                    np.copyto(view, res[i])
                grads[i] = view
        start_ready(lay.n_steps)
    except BaseException:
        # the started all-reduces are waited for all the same: the other ranks started
        # theirs, and later collectives must pair up with the same ones
        for w in works:
            try:
                w.wait()
            except Exception:       # noqa: BLE001  (the first error is the one to report)
                pass
        raise
    for w in works:
        w.wait()
    return grads
