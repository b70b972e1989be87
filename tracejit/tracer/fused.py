"""Eager composites as one fused op with one backward node, as PyTorch runs its native ops.

A composite (softmax, layer_norm, gelu, cross_entropy, ...) is written once, as a Python
function of tracejit ops. Eagerly, with gradients, running it op by op would record a node per
primitive and differentiate them one by one. Instead, per (composite, static arguments, input
shapes, dtypes and devices, which inputs require grad) its definition is traced once into an IR
graph, differentiated by the IR's own reverse-mode transform and split (ir/autodiff.py) into

  forward:  inputs -> output + the residuals its VJP reads
  backward: residuals + output cotangent -> the inputs' gradients,

and cached (a `Plan`). A call runs the forward, and the output gets one `FusedNode` (named as
PyTorch's: SoftmaxBackward0, NativeLayerNormBackward0, ...) holding the residuals; backward
runs the backward graph. Nothing is recorded inside. A composite declared with
`out_vjp(y, g)` (sigmoid, relu: torch's nodes keep their results) has instead the forward
graph alone and out_vjp's graph (output, cotangent) -> gradient as its backward: the node
keeps the output, so the input may change in place after the call and the output may not.

Two tiers run a plan's graphs. A cold plan is interpreted (graph_program.py): each
instruction's NumPy (or CuPy) implementation from the registry, on arrays, with no Tensor, node
or inference per op. A hot plan (called `COMPILE_AFTER` times) on the CPU is compiled by the
runtime (`set_compiler`; the tracer never imports the runtime): one native call per direction,
~2-3 us for small tensors, fused loops for large ones (see runtime/eager_composites.py for the
measured costs).

create_graph=True (double backward) recomputes the composite on its saved inputs with
recording on and differentiates that (an out_vjp composite runs out_vjp with recording on its
saved output, whose grad_fn is the node itself, as torch unpacks a saved result). In-place changes are detected as PyTorch
does: an input (or the output) whose memory a residual shares is version-checked at backward.

Calls that record op by op instead (one CompositeNode, see composites.py): an argument that is
not hashable (a list, an array), random numbers inside (dropout), a checkpoint recomputing,
inputs on different devices, or a definition that does not trace. TRACEJIT_FUSED_COMPOSITES=0
turns fusing off; TRACEJIT_FUSED_COMPILE_AFTER=n compiles a plan on its n-th call (0: never).
"""
from __future__ import annotations

import os
import re
from typing import Any, Callable

import numpy as np

from ..devices import device_of
from ..ir.autodiff import split, vjp_graph
from ..ir.core import Graph, Value, user_location
from ..ir.partition import cut_enabled
from ..ir.passes import optimize
from . import checks as _checks
from .eager import quiet_call
from .fused_node import FusedNode, fused_node  # noqa: F401  (fused.FusedNode: the node's class)
from .graph_program import Program
from .lazy_copies import fresh
from .state import SPECIAL_MODES, STATE, note_reads
from .tensor_base import SUBCLASSES, TensorBase as Tensor, wrap_array
from .trace import trace

# compile a plan on its COMPILE_AFTER-th call (0: never); see runtime/eager_composites.py
COMPILE_AFTER = int(os.environ.get("TRACEJIT_FUSED_COMPILE_AFTER", "3"))
ENABLED = os.environ.get("TRACEJIT_FUSED_COMPOSITES", "1") != "0"
_PLANS: dict = {}
_PLANS_MAX = 4096
_COMPILER: list = [None]         # compiler(graph) -> run(list of arrays) -> list of arrays
stats = {"plans": 0, "interpreted": 0, "compiled_calls": 0, "compiles": 0, "fallbacks": 0}
_UNFUSABLE = object()            # a plan slot for signatures that record op by op
_AT = re.compile(r"\(at [^()]*\)$")


def set_compiler(compiler: Callable | None) -> None:
    """compiler(graph) -> run(list of arrays) -> list of arrays; registered by the runtime at
    import. None: plans are only interpreted."""
    _COMPILER[0] = compiler


def clear() -> None:
    _PLANS.clear()


# -- plans ------------------------------------------------------------------------------------
class Plan:
    """One composite at one signature: its forward and backward graphs and how to run them."""

    __slots__ = ("fwd", "bwd", "n_res", "check", "errors", "run_fwd", "run_bwd", "calls",
                 "run_check", "check_in_fwd",
                 "compiled", "gpu", "out_meta", "res_inputs", "wants", "res_copy",
                 "checked_inputs", "out_saved", "out_vjp")

    def __init__(self, fwd: Graph, bwd: Graph, n_res: int, check: Graph | None,
                 errors: list, gpu: bool, wants: tuple) -> None:
        self.fwd, self.bwd, self.n_res = fwd, bwd, n_res
        self.wants = wants           # per tensor input: whether bwd returns its gradient
        self.check, self.errors = check, errors
        if check is not None:
            cp = Program(check)
            self.run_check = lambda xs: quiet_call(cp.run, xs)
        fp, bp = Program(fwd), Program(bwd)
        self.run_fwd = lambda xs: quiet_call(fp.run, xs)
        self.run_bwd = lambda xs: quiet_call(bp.run, xs)
        self.calls = 0
        self.compiled = False
        self.check_in_fwd = False    # compiled: the check's code is run_fwd's last result
        self.gpu = gpu
        pos = {v: i for i, v in enumerate(fwd.inputs)}
        # per residual: the input it is, or None
        self.res_inputs = tuple(pos.get(v) for v in fwd.outputs[1:])
        # positions in the forward's results of the residuals that are inputs
        self.res_copy = tuple(k + 1 for k, i in enumerate(self.res_inputs) if i is not None)
        # compiled: the inputs a node checks for in-place changes, (not copied, copied)
        self.checked_inputs = (tuple(sorted({i for i in self.res_inputs if i is not None})),
                               ())
        out = fwd.outputs[0]
        self.out_meta = (out.shape, out.dtype.np)
        # the output is the one residual (a composite's out_vjp: bwd reads (output, cotangent))
        self.out_saved = False
        self.out_vjp = None

    def maybe_compile(self) -> None:
        self.calls += 1
        if self.calls != COMPILE_AFTER or self.gpu or _COMPILER[0] is None:
            return
        # residuals that are inputs are not outputs of the compiled forward (which would copy
        # them): the call passes the input arrays on, version-checked as the interpreter's
        fwd = self.fwd
        kept = [fwd.outputs[0]] + [v for v, i in zip(fwd.outputs[1:], self.res_inputs)
                                   if i is None]
        if len(kept) < len(fwd.outputs):
            fwd = _subgraph(fwd, kept, fwd.name)
        # the index checks join the compiled forward (one native call, not two: cross_entropy's
        # targets): compiled reads clamp an index, so running the forward before its check
        # reads nothing outside the arrays, and its results are dropped when the check fails
        merged = self.check is not None and _same_inputs(fwd, self.check)
        if merged:
            fwd = _with_check(fwd, self.check)
        try:
            compiler = _COMPILER[0]
            run_fwd, self.run_bwd = compiler(fwd), compiler(self.bwd)
            if self.check is not None and not merged:
                self.run_check = compiler(self.check)
        except Exception as e:       # noqa: BLE001 - the interpreter keeps running it
            import warnings
            warnings.warn(f"fused composite {self.fwd.name}: compiling failed ({type(e).__name__}"
                          f": {e}); it stays interpreted", RuntimeWarning, stacklevel=4)
            return
        if len(kept) < len(self.fwd.outputs):
            res_inputs = self.res_inputs

            def run_with_inputs(xs: list) -> list:
                r = run_fwd(xs)
                it = iter(r[1:])
                out = [r[0]] + [next(it) if i is None else xs[i] for i in res_inputs]
                if merged:
                    out.append(r[-1])
                return out
            self.run_fwd = run_with_inputs
        else:
            self.run_fwd = run_fwd
        self.check_in_fwd = merged
        self.compiled = True
        stats["compiles"] += 1


def _subgraph(g: Graph, outputs: list[Value], name: str) -> Graph:
    """g with only `outputs` (what they do not need is dropped)."""
    h = Graph(name)
    env = {v: h.add_input(v.aval, v.name) for v in g.inputs}
    for ins in g.instrs:
        env[ins.out] = h.emit(ins.prim, [env[v] for v in ins.inputs], ins.params, ins.loc)
    h.outputs = [env[v] for v in outputs]
    return optimize(h)


def _same_inputs(a: Graph, b: Graph) -> bool:
    return len(a.inputs) == len(b.inputs) and \
        all(u.aval == v.aval for u, v in zip(a.inputs, b.inputs))


def _with_check(fwd: Graph, check: Graph) -> Graph:
    """fwd with check's one output (its failure code) as a last output; both read the same
    inputs in the same order."""
    h = Graph(fwd.name)
    ins = [h.add_input(v.aval, v.name) for v in fwd.inputs]
    outs = []
    for g in (fwd, check):
        env = dict(zip(g.inputs, ins))
        for i in g.instrs:
            env[i.out] = h.emit(i.prim, [env[v] for v in i.inputs], i.params, i.loc)
        outs += [env[v] for v in g.outputs]
    h.outputs = outs
    return optimize(h)


def traced_graph(fn: Callable, name: str, args: tuple, kwargs: dict, tensors: list[Tensor],
                 device):
    """The composite's definition traced at this call's signature (the trace and its graph),
    or _UNFUSABLE where it must run op by op: mixed devices, captures, random numbers, in-place
    writes, guards, a non-float result, or a definition that does not trace."""
    if len({type(t._data) for t in tensors}) > 1 or \
            len({device_of(t._data) for t in tensors}) > 1:
        return _UNFUSABLE            # the op-by-op path names the devices in its error
    static = {i: a for i, a in enumerate(args) if not isinstance(a, Tensor)}
    static.update({k: v for k, v in kwargs.items() if not isinstance(v, Tensor)})
    try:
        tr = trace(fn, args, kwargs, static, name=name.replace("Backward", "_"), device=device)
    except Exception:                # noqa: BLE001 - the op-by-op path raises the user's error
        return _UNFUSABLE
    g = tr.graph
    n_extra = bool(tr.checks)
    if (tr.captures or tr.n_random or tr.writes or tr.escapes or tr.slots or tr.arg_writes
            or tr.guards or tr.grad_sets or tr.attr_guards or tr.backward_ran
            or len(g.outputs) != 1 + n_extra or not g.outputs[0].dtype.is_float
            or len(g.inputs) != len(tensors)):
        return _UNFUSABLE
    return tr


def _build(fn: Callable, name: str, args: tuple, kwargs: dict, tensors: list[Tensor],
           device, out_vjp: Callable | None = None) -> Plan | object:
    tr = traced_graph(fn, name, args, kwargs, tensors, device)
    if tr is _UNFUSABLE:
        return _UNFUSABLE
    g = tr.graph
    gpu = not all(type(t._data) is np.ndarray for t in tensors)
    if out_vjp is not None and len(tensors) == 1 and not tr.checks:
        # the backward reads the output, as PyTorch's node keeps its result: no residual of
        # the input (nor a copy of it), and the output's in-place changes are version-checked
        stats["plans"] += 1
        plan = Plan(optimize(g), _out_vjp_graph(out_vjp, g, device), 0, None, [], gpu,
                    (True,))
        plan.out_saved, plan.out_vjp = True, out_vjp
        return plan
    check = None
    if tr.checks:                    # data-dependent index checks run first, as eagerly
        check = _subgraph(g, [g.outputs[-1]], g.name + "_check")
        g = _subgraph(g, [g.outputs[0]], g.name)
    wrt = tuple(i for i, t in enumerate(tensors) if t._requires_grad)
    joint = vjp_graph(g, wrt, g.name + "_vjp")
    # the residuals are a minimum cut (ir/partition.py), as compiled backward passes save:
    # gelu keeps its input, not three products of it (PyTorch's memory, not three times it)
    fwd, bwd, n_res = split(joint, len(g.inputs), 1, recompute=cut_enabled())
    stats["plans"] += 1
    return Plan(fwd, bwd, n_res, check, tr.checks, gpu, tuple(t._requires_grad for t in tensors))


def _out_vjp_graph(out_vjp: Callable, g: Graph, device) -> Graph:
    """The backward graph (output, cotangent) -> input gradient of a composite with one
    tensor input whose gradient `out_vjp(y, g)` computes (in tracejit ops) from its output."""
    aval = g.outputs[0].aval
    y, ct = (wrap_array(np.zeros(aval.shape, aval.dtype.np)) for _ in range(2))
    tr = trace(out_vjp, (y, ct), {}, {}, name=g.name + "_out_vjp", device=device)
    return optimize(tr.graph)


def _key(fn, args, kwargs, tensors):
    """The plan's cache key, or None where an argument is not hashable (a list or an array:
    such calls record op by op) or a tensor is traced."""
    if not kwargs and len(args) == 1 and type(args[0]) in SUBCLASSES:
        a = args[0]             # (sigmoid(x), relu(x): the loop below for one tensor)
        d = a._data
        if type(d) is Value:
            return None
        tensors.append(a)
        return (fn, (d.shape, d.dtype.num, a._requires_grad, type(d),
                     None if type(d) is np.ndarray else device_of(d)))
    parts: list[Any] = [fn]
    for a in args:
        if type(a) in SUBCLASSES:
            d = a._data
            if type(d) is Value:           # a traced tensor: not an eager call
                return None
            parts.append((d.shape, d.dtype.num, a._requires_grad, type(d),
                          None if type(d) is np.ndarray else device_of(d)))
            tensors.append(a)
        else:
            parts.append(a)
    for k, a in kwargs.items():
        if type(a) in SUBCLASSES:
            d = a._data
            if type(d) is Value:
                return None
            parts.append((k, d.shape, d.dtype.num, a._requires_grad, type(d),
                          None if type(d) is np.ndarray else device_of(d)))
            tensors.append(a)
        else:
            parts.append((k, a))
    key = tuple(parts)
    try:
        hash(key)
    except TypeError:
        return None
    return key


def run(fn: Callable, name: str, args: tuple, kwargs: dict,
        copy_inputs: bool = False, out_vjp: Callable | None = None) -> Tensor | None:
    """fn(*args, **kwargs) as one fused op with one backward node named `name`; None when
    this call must record op by op (create the node the old way). copy_inputs: the node keeps
    copies of the inputs its backward reads (where PyTorch's keeps its result, an input
    changed in place afterwards is legal). out_vjp(y, g): the input's gradient from the
    output (one tensor input only): the node keeps the output, not the input."""
    # (SPECIAL_MODES: while no thread has a checkpoint or read recording open, neither
    # thread-local read is made, ~600 instructions each)
    if not ENABLED or (SPECIAL_MODES[0] and STATE.subst):
        return None
    tensors: list[Tensor] = []
    key = _key(fn, args, kwargs, tensors)
    if key is None:
        return None
    plan = _PLANS.get(key)
    if plan is None:
        if len(_PLANS) >= _PLANS_MAX:
            _PLANS.clear()
        plan = _PLANS[key] = _build(fn, name, args, kwargs, tensors,
                                    device_of(tensors[0]._data) if tensors else None, out_vjp)
    if plan is _UNFUSABLE:
        stats["fallbacks"] += 1
        return None
    if SPECIAL_MODES[0] and STATE.reads is not None:
        note_reads(tensors)
    arrays = [t._data for t in tensors]
    if not plan.compiled:           # (counts calls up to the one that compiles)
        plan.maybe_compile()
    if plan.check is not None and not plan.check_in_fwd:
        # (a device array is read back here: eagerly, as the op-by-op path reads the targets)
        _raise_failed(plan, plan.run_check(arrays)[0])
    if plan.compiled:
        stats["compiled_calls"] += 1
    else:
        stats["interpreted"] += 1
    res = plan.run_fwd(arrays)
    if plan.check_in_fwd:
        _raise_failed(plan, res[-1])
        res = res[:-1]
    if copy_inputs and plan.res_copy:
        res = list(res)
        for k in plan.res_copy:
            res[k] = res[k].copy()
    # (a composite is a copy, never its input; compiled outputs never alias an input)
    y = res[0] if plan.compiled else fresh(res[0], arrays)
    if type(y) is np.ndarray and y.base is not None and y.flags.writeable:
        y.flags.writeable = False    # a view of an input or a residual: a lazy copy
    out = wrap_array(y)
    out.grad_fn = fused_node(name, fn, args, kwargs, tensors, (y,) if plan.out_saved else res[1:],
                             plan, out, copy_inputs)
    out._requires_grad = True
    return out


def _raise_failed(plan: Plan, code) -> None:
    err = _checks.failure(plan.errors, code.item())
    if err is not None:          # the message names this call's line, not the traced one's
        raise type(err)(_AT.sub(f"(at {user_location()})", str(err)))
