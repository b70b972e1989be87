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
A plan is replayed by one Python function written for it (`_compile`): its steps as
straight-line code, which costs a node a fraction of a loop that interprets the steps.

A rule that steps outside what a plan can replay (an operand that is not one of the node's
arrays, an array large enough for the compiled-kernel path, a GPU array) keeps running
through `bind` for that key."""
from __future__ import annotations

import keyword
from typing import Any, Callable

import numpy as np

from ..ir import dtypes as dt
from ..ir.primitives import P
from . import eager
from .eager import Arr, infer, quiet_call, run_impl

_MISSING = object()
_TRANSPOSE = P.transpose.impl


class _NoPlan(Exception):
    """The rule did something a plan does not replay; it runs through bind instead."""


class _Plan:
    __slots__ = ("steps", "results", "checks", "run")

    def __init__(self, steps: list, results: list, checks: tuple, saved: tuple,
                 has_out: bool) -> None:
        # per op: (impl, operand slots, params, out dtype, whether impl's own result is an
        # array of that dtype); a constant: (None, "const", array, None, None); a fill:
        # (None, "full", value, dtype, shape)
        self.steps = steps
        self.results = results      # per rule result: its slot, or None
        self.checks = checks        # (shape, dtype) per input slot: g, saved inputs, output
        # run(node, g's array) -> the rule's results as NumPy arrays (None where an input
        # needs no gradient: the engine keeps them in its buffers unwrapped, see
        # grad_buffers), or None when an array is not
        # the shape and dtype the plan was recorded for (the rule runs through bind then)
        self.run = _compile(self, saved, has_out)


def _compile(plan: _Plan, saved: tuple, has_out: bool) -> Callable:
    """The plan as one Python function, its steps written out as straight-line code: what the
    loop over `plan.steps` did per step (unpack the step, gather its operands, dispatch on its
    kind, append its value) is done here once. `saved`: the indices of the node's saved
    inputs (the same for every node of the plan's key: they follow from the primitive and
    `need`); `has_out`: whether the node saves its output. The checks and conversions are
    the ones each replayed op always had (a NumPy scalar made an array, a result of another
    dtype cast, a view of an operand made read-only: a lazy copy, see eager.run_impl), the
    last for the rule's results only: the intermediate values never leave the function."""
    env: dict[str, Any] = {"ndarray": np.ndarray, "asarray": np.asarray, "empty": np.empty,
                           "ERR": eager._ERR_VAR, "IGNORE": eager._IGNORE}
    src = ["def run(node, v0):"]
    if saved:
        src.append("    s = node.saved")
        src.append("    vs = node.versions")
    slot = 1
    for i in saved:             # (version-checked, as the rule's unpacking: saved_data raises)
        src += [f"    t = s[{i}]",
                "    c = t._vc",
                f"    if (c[0] if c is not None else 0) != vs[{i}]:",
                f"        node.saved_data({i})",
                f"    v{slot} = t._data"]
        slot += 1
    if has_out:
        src.append(f"    v{slot} = node.saved_out.data(node)")
    for k, (shape, dtype) in enumerate(plan.checks):
        env[f"S{k}"], env[f"D{k}"] = shape, dtype
        # (an equal dtype that is another object, such as one read from a pickle, passes)
        src.append(f"    if type(v{k}) is not ndarray or v{k}.shape != S{k} or "
                   f"(v{k}.dtype is not D{k} and v{k}.dtype != D{k}):")
        src.append("        return None")
    body: list[str] = []                    # the steps, under NumPy's "ignore all" errors
    returned = set(plan.results)            # (only these leave the plan: see below)
    v = len(plan.checks)
    for impl, slots, params, out_np, kind in plan.steps:     # (kind: see _Plan.steps)
        if impl is None and slots == "const":
            env[f"C{v}"] = params
            body.append(f"v{v} = C{v}")
        elif impl is None:                  # a fill: a fresh array per node
            env[f"F{v}"] = (kind, out_np, params)
            body.append(f"v{v} = empty(F{v}[0], F{v}[1])")
            body.append(f"v{v}.fill(F{v}[2])")
        elif impl is _TRANSPOSE and kind:     # (the impl's lambda written out: one call less)
            env[f"p{v}"] = params["perm"]
            body.append(f"v{v} = v{slots[0]}.transpose(p{v})")
            if v in returned:       # a view of an operand: a lazy copy (see below)
                body.append(f"v{v}.flags.writeable = False")
        else:
            env[f"f{v}"], env[f"O{v}"] = impl, out_np
            args = [f"v{i}" for i in slots]
            if all(k.isidentifier() and not keyword.iskeyword(k) for k in params):
                for j, (name, value) in enumerate(params.items()):
                    env[f"p{v}_{j}"] = value
                    args.append(f"{name}=p{v}_{j}")
            elif params:
                env[f"P{v}"] = params
                args.append(f"**P{v}")
            body.append(f"v{v} = f{v}({', '.join(args)})")
            if not kind:            # (a NumPy scalar, another dtype: made what bind makes)
                body += [f"if type(v{v}) is not ndarray:",
                         f"    v{v} = asarray(v{v})",
                         f"if v{v}.dtype is not O{v} and v{v}.dtype != O{v}:",
                         f"    v{v} = v{v}.astype(O{v})"]
            if v in returned:       # a result that is a view of an operand: a lazy copy
                body += [f"if v{v}.base is not None and v{v}.flags.writeable:" if kind else
                         f"elif v{v}.base is not None and v{v}.flags.writeable:",
                         f"    v{v}.flags.writeable = False"]
        v += 1
    if body and env["ERR"] is not None:
        # (the engine's lean pass keeps NumPy's errors ignored across its nodes: a check of
        # the mode then, where a switch and its reset cost ~20 times more)
        src += ["    tok = None if ERR.get() is IGNORE else ERR.set(IGNORE)", "    try:"]
        src += ["        " + line for line in body]
        src += ["    finally:", "        if tok is not None:", "            ERR.reset(tok)"]
    elif body:                              # (another NumPy: its errstate context)
        env["errstate"] = np.errstate
        src.append("    with errstate(all='ignore'):")
        src += ["        " + line for line in body]
    src.append("    return [" + ", ".join("None" if r is None else f"v{r}"
                                          for r in plan.results) + "]")
    exec(compile("\n".join(src), "<vjp plan>", "exec"), env)
    return env["run"]


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
        impl = prim.impl
        if data and getattr(impl, "unwrapped", None) is not None and \
                data[-1].dtype not in dt.HALF_NP:
            impl = impl.unwrapped       # (in_float32's wrapper, decided once for the plan)
        # whether impl itself gives an array of the output's dtype, as it then does on every
        # replay (NumPy's result type follows from the shapes and dtypes a plan checks): the
        # replay then writes no conversion
        own = quiet_call(impl, *data, **params)
        exact = type(own) is np.ndarray and own.dtype == out_np
        rec.steps.append((impl, tuple(a.slot for a in args), params, out_np, exact))
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


def apply(node, gd: Any) -> list | None:
    """node's VJP rule on the host array `gd` (its output's gradient) through its plan
    (recorded on first use): the rule's results as arrays (None where the input needs no
    gradient), or None when the node has no usable plan."""
    plans = node.in_avals.plans
    plan = plans.get(node.need, _MISSING)
    if plan is None:
        return None
    if plan is not _MISSING:
        return plan.run(node, gd)
    if type(gd) is not np.ndarray:
        return None                 # (a device array: a later host one records the plan)
    vals = [gd]
    for i, s in enumerate(node.saved):
        if s is not None:
            vals.append(node.saved_data(i))     # (version-checked, as the rule's unpacking)
    so = node.saved_out
    if so is not None:
        vals.append(so.data(node))
    return _record(node, plans, vals)


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
    plans[key] = _Plan(rec.steps, results, tuple((v.shape, v.dtype) for v in vals),
                       tuple(i for i, s in enumerate(node.saved) if s is not None),
                       node.saved_out is not None)
    return [None if r is None else r._data for r in res]
