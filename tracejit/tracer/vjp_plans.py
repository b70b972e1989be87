"""VJP plans: a primitive's VJP rule, as it runs on host arrays in a backward pass that records
nothing, replayed as the list of primitive implementations it applied.

A VJP rule is written to run on IR values as well as on arrays, so what it does can depend on
shapes, dtypes, params and which inputs need a gradient, never on the values. The first time a
rule runs for one key (the primitive and its operands' shapes and dtypes, the params: eager's
inference-cache entry, see `eager.SharedAvals`; and the `need` pattern), its primitive
applications are recorded as (impl, operand slots, params, output dtype); each later node with
that key replays them straight on the arrays: no `bind`, no inference-cache lookup, no
wrapper objects between the ops, one floating-point error-mode switch per node. The rule stays
the one definition (the registry's); a plan is its trace, as `@tj.compile` traces a function.

A rule that steps outside what a plan can replay (an operand that is not one of the node's
arrays, an array large enough for the compiled-kernel path, a GPU array) keeps running
through `bind` for that key."""
from __future__ import annotations

from typing import Any

import numpy as np

from . import eager
from .eager import Arr, infer, run_impl

_MISSING = object()


class _NoPlan(Exception):
    """The rule did something a plan does not replay; it runs through bind instead."""


class _Plan:
    __slots__ = ("steps", "results", "checks")

    def __init__(self, steps: list, results: list, checks: tuple) -> None:
        self.steps = steps          # (impl, operand slots, params, out dtype, kind) per op
        self.results = results      # per rule result: its slot, or None
        self.checks = checks        # (shape, dtype) per input slot: g, saved inputs, output


class _Rec(Arr):
    """An array of the rule being recorded: its value and its slot in the plan."""

    __slots__ = ("slot", "rec")

    def __init__(self, data: Any, slot: int, rec: "_Recorder") -> None:
        self._data = data
        self.slot = slot
        self.rec = rec

    def __tj_bind__(self, prim, args, params) -> "_Rec":
        rec = self.rec
        for a in args:
            if type(a) is not _Rec or a.rec is not rec:
                raise _NoPlan
        data = [a._data for a in args]
        params, out_np, _, _ = infer(prim, params, data)
        if data and data[0].size >= rec.least:
            raise _NoPlan               # the compiled-kernel path's size: bind decides
        res = run_impl(prim, data, params, out_np)
        if type(res) is not np.ndarray:
            raise _NoPlan
        rec.steps.append((prim.impl, tuple(a.slot for a in args), params, out_np, prim.kind))
        return rec.new(res)

    def __tj_const__(self, array: np.ndarray) -> "_Rec":
        if type(array) is not np.ndarray:
            raise _NoPlan
        kept = array.view()     # one array for every replay: read-only, so no replay's
        kept.flags.writeable = False    # result can change a later one's
        self.rec.steps.append((None, "const", kept, None, None))
        return self.rec.new(array)

    def __tj_full__(self, value) -> "_Rec":
        d = self._data
        self.rec.steps.append((None, "full", value, d.dtype, d.shape))
        a = np.empty(d.shape, d.dtype)
        a.fill(value)
        return self.rec.new(a)


class _Recorder:
    __slots__ = ("steps", "n", "least")

    def __init__(self, n_inputs: int) -> None:
        self.steps: list = []
        self.n = n_inputs
        provider = eager._PROVIDER
        self.least = provider[1] if provider[0] is not None else float("inf")

    def new(self, data: Any) -> _Rec:
        r = _Rec(data, self.n, self)
        self.n += 1
        return r


def apply(node, g: Arr) -> list | None:
    """node's VJP rule on host arrays through its plan (recorded on first use): the rule's
    results as Arrs (None where the input needs no gradient), or None when the node has no
    usable plan."""
    plans = node.in_avals.plans
    plan = plans.get(node.need, _MISSING)
    if plan is None:
        return None
    gd = g._data
    if type(gd) is not np.ndarray:
        return None
    vals = [gd]
    for s in node.saved:
        if s is not None:
            vals.append(s.data(node))           # (version-checked, as the rule's unpacking)
    so = node.saved_out
    if so is not None:
        vals.append(so.data(node))
    if plan is _MISSING:
        return _record(node, plans, vals)
    checks = plan.checks
    for v, (shape, dtype) in zip(vals, checks):
        if type(v) is not np.ndarray or v.shape != shape or v.dtype is not dtype:
            return None
    tok = eager._ERR_VAR.set(eager._IGNORE) if eager._ERR_VAR is not None else None
    try:
        for impl, slots, params, out_np, kind in plan.steps:
            if impl is None:
                if slots == "const":
                    vals.append(params)
                else:                           # a fill: a fresh array per node
                    a = np.empty(kind, out_np)
                    a.fill(params)
                    vals.append(a)
                continue
            if len(slots) == 2:
                args = (vals[slots[0]], vals[slots[1]])
            elif len(slots) == 1:
                args = (vals[slots[0]],)
            else:
                args = tuple([vals[i] for i in slots])
            r = impl(*args, **params) if params else impl(*args)
            if type(r) is not np.ndarray:
                r = np.asarray(r)
            if r.dtype is not out_np and r.dtype != out_np:
                r = r.astype(out_np)
            elif r.base is not None and r.flags.writeable:
                r.flags.writeable = False       # a view of an operand: a lazy copy (run_impl)
            vals.append(r)
    finally:
        if tok is not None:
            eager._ERR_VAR.reset(tok)
    return [None if i is None else Arr(vals[i]) for i in plan.results]


def _record(node, plans: dict, vals: list) -> list | None:
    """Run the rule once on recording arrays; keep its plan (or None: not replayable)."""
    key = node.need
    if any(type(v) is not np.ndarray for v in vals):
        plans[key] = None
        return None
    # slots: 0 the gradient, then the saved inputs in order, then the saved output
    rec = _Recorder(len(vals))
    g = _Rec(vals[0], 0, rec)
    ins, slot = [], 1
    for s, av in zip(node.saved, node.in_avals):
        if s is None:
            ins.append(av)              # an input the rule does not read: its Aval
        else:
            ins.append(_Rec(vals[slot], slot, rec))
            slot += 1
    out = _Rec(vals[slot], slot, rec) if node.saved_out is not None else None
    try:
        res = node.prim.vjp(g, ins, out, node.params, key)
        res = [r if n else None for r, n in zip(res, key)]      # (key: the need pattern)
        results = []
        for r in res:
            if r is None:
                results.append(None)
            elif type(r) is _Rec and r.rec is rec:
                results.append(r.slot)
            else:
                raise _NoPlan
    except _NoPlan:
        plans[key] = None
        return None
    plans[key] = _Plan(rec.steps, results,
                       tuple((v.shape, v.dtype) for v in vals))
    return [None if r is None else Arr(r._data) for r in res]
