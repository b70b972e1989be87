"""How a primitive is applied to Tensors: NumPy in eager mode, an IR instruction while
tracing, and a backward node on the tape when gradients are being recorded."""
from __future__ import annotations

from typing import Callable

import numpy as np

from ..ir.core import Value, user_location
from ..devices import device_of
from . import checks
from .backward_nodes import PrimNode, prim_node
from . import eager
from .eager import _INFER
from . import forward_ad
from .lazy_copies import link
from .no_grad_ir import no_grad_result
from .forward_ad import FWD
from .state import GRAD_OFF, SPECIAL_MODES, STATE, current_trace, note_reads
from .tensor_base import SUBCLASSES, TensorBase as Tensor, wrap_array


def to_traced(t: Tensor, graph) -> Value:
    """The IR value standing for `t` inside `graph`; eager tensors become captures."""
    d = t._data
    if isinstance(d, Value):
        if d.graph is not graph:
            if _enclosing(d.graph, graph):
                return current_trace().capture(t)
            raise RuntimeError(
                f"a traced tensor {d.aval} from another @tj.compile trace is used here "
                f"(at {user_location()}); traced tensors must not escape the function that "
                f"traced them (e.g. stored in a global or on self)")
        return d
    ctx = current_trace()
    if ctx is None or ctx.graph is not graph:
        raise RuntimeError(f"cannot mix an eager tensor with a traced one outside its trace "
                           f"(at {user_location()})")
    return ctx.capture(t)


def _enclosing(outer, inner) -> bool:
    """`inner` is the innermost trace's graph and `outer` an enclosing trace's: a value of
    an enclosing trace read inside a nested one (tj.vmap tracing one example) is a capture."""
    traces = STATE.traces
    return bool(traces) and traces[-1].graph is inner and \
        any(c.graph is outer for c in traces[:-1])


def apply_primitive(prim, args, params) -> Tensor:
    """Apply `prim` to Tensors: the lean eager path for host arrays outside any trace, the
    general path (traces, captures, checkpoint stand-ins, GPU arrays) otherwise."""
    if SPECIAL_MODES[0]:                # a trace, dual level, checkpoint... in some thread
        if FWD.levels:                  # forward-mode dual tensors are live: see forward_ad
            return forward_ad.apply_dual(_apply_general, prim, args, params)
        # the per-thread state's dict read once for its flags (each STATE.x is a lookup of
        # the thread's dict first: ~700 instructions, a small op's 2%)
        st = STATE.__dict__
        if st["traces"] or st["subst"]:
            return _apply_general(prim, args, params)
        reads = st["reads"]
    else:
        reads = None
    data = None             # the operands' host arrays, if every one is a plain Tensor's
    hit = None              # the inference cache's entry (eager.infer), looked up here
    n = len(args)           # for the common keys: infer's own key, without its call
    if n == 2:              # most ops: the loop below, unrolled
        a, b = args
        if type(a) in SUBCLASSES and type(b) in SUBCLASSES:     # (Tensor, Parameter)
            da, db = a._data, b._data
            if type(da) is np.ndarray and type(db) is np.ndarray:
                data = [da, db]
                requires = a._requires_grad or b._requires_grad
                if not params:
                    hit = _INFER.get((prim, (), da.shape, da.dtype.num, db.shape,
                                      db.dtype.num))
    elif n == 1:
        a = args[0]
        if type(a) in SUBCLASSES:
            da = a._data
            if type(da) is np.ndarray:
                data = [da]
                requires = a._requires_grad
                if not params:
                    hit = _INFER.get((prim, (), da.shape, da.dtype.num))
    else:
        data = []
        requires = False
        for a in args:
            d = a._data if type(a) in SUBCLASSES else None
            if type(d) is not np.ndarray:
                data = None
                break
            data.append(d)
            if a._requires_grad:
                requires = True
    if data is not None:
        params, out_np, is_float, avals = hit if hit is not None else \
            eager.infer(prim, params, data)
        res = eager.run_impl(prim, data, params, out_np)
        out = wrap_array(res)
        if res.base is not None:        # a lazy copy of an operand: see lazy_copies
            link(out, res, args, data)
        if requires:
            if reads is not None:
                note_reads(args)
            if is_float and prim.vjp is not None and (not GRAD_OFF[0] or STATE.grad_enabled):
                # (PrimNode.record, inlined: the new tensor's _out_idx is already 0)
                out.grad_fn = prim_node(prim, params, args, out, avals)
                out._requires_grad = True
        return out
    return _apply_general(prim, args, params)


_ndarray = np.ndarray


def fast_binary(prim, general: Callable, broadcast: Callable | None = None,
                matrices: bool = False) -> Callable:
    """`general` (ops.add & co, what `a + b` calls) with a front for its hot case: two host
    tensors of one float dtype and one shape, outside every trace and special mode, whose
    inference is cached. There it runs what general -> _binary -> __tj_bind__ ->
    apply_primitive -> run_impl would, in one frame (each layer re-tested the operands and
    cost a call: ~a third of a small op's instructions). Everything else, and a first
    application (it fills the inference cache), goes to `general`. `broadcast(a, b, sa, sb)`:
    general's own step for such operands of shapes sa != sb (x + bias), or None where it
    has none (then general, which raises the shapes' error). `matrices`: prim is matmul, whose
    hot case is two 2-D operands (an RNN's x @ W.T) whose shapes align."""
    if eager._ERR_VAR is None:              # pragma: no cover - another NumPy: no shortcut
        return general
    impl = prim.impl
    # what impl runs on data that is not a 16-bit float, where impl is a wrapper that rounds
    # those through float32 (matmul's: in_float32); 16-bit operands here are float16, the
    # one 2-byte float kind "f" (the wrapper's frame, *args and dtype test: ~1,500
    # instructions of an RNN step's x @ W.T)
    full = getattr(impl, "unwrapped", impl)
    wrapped = full is not impl
    infer_get = _INFER.get
    err_set, err_reset, ignore = eager._ERR_SET, eager._ERR_RESET, eager._IGNORE
    provider = eager._PROVIDER
    has_vjp = prim.vjp is not None
    asarray = np.asarray

    def binary(a, b):
        if not SPECIAL_MODES[0] and type(a) in SUBCLASSES and type(b) in SUBCLASSES:
            da = a._data
            db = b._data
            if type(da) is _ndarray and type(db) is _ndarray:
                dta = da.dtype
                sa = da.shape
                sb = db.shape
                if dta is db.dtype and dta.kind == "f" and not (a._weak or b._weak):
                    if matrices:
                        if len(sa) != 2 or len(sb) != 2:    # (torch names those otherwise)
                            return general(a, b)
                    elif sa != sb:
                        out = broadcast(a, b, sa, sb) if broadcast is not None else None
                        return out if out is not None else general(a, b)
                    if provider[0] is not None and da.size >= provider[1]:
                        return general(a, b)        # (a large array: maybe a kernel)
                    num = dta.num
                    # (a hit: shapes the primitive's inference took, so the impl takes them)
                    hit = infer_get((prim, (), sa, num, sb, num))
                    if hit is not None:
                        tok = err_set(ignore)
                        try:
                            res = impl(da, db) if wrapped and dta.itemsize == 2 else \
                                full(da, db)
                        finally:
                            err_reset(tok)
                        if type(res) is not _ndarray:       # a 0-d result: a NumPy scalar
                            res = asarray(res)
                        out_np = hit[1]
                        if res.dtype is not out_np and res.dtype != out_np:
                            res = res.astype(out_np)
                        out = wrap_array(res)
                        if (a._requires_grad or b._requires_grad) and hit[2] and has_vjp \
                                and (not GRAD_OFF[0] or STATE.grad_enabled):
                            out.grad_fn = prim_node(prim, hit[0], (a, b), out, hit[3])
                            out._requires_grad = True
                        return out
        return general(a, b)

    binary.__name__ = getattr(general, "__name__", prim.name)
    binary.__qualname__ = binary.__name__
    binary.__doc__ = general.__doc__
    binary.__wrapped__ = general
    return binary


def _apply_general(prim, args, params) -> Tensor:
    params = prim.normalize(params)
    if STATE.subst:                      # a checkpointed function being recomputed
        args = [STATE.subst.get(id(a), a) for a in args]
    graph = None
    requires = False
    for a in args:
        if type(a) not in SUBCLASSES and not isinstance(a, Tensor):
            raise TypeError(f"{prim.name}: expected Tensors, got {type(a).__name__} "
                            f"(at {user_location()})")
        requires = requires or a._requires_grad
        if graph is None and type(a._data) is Value:
            graph = a._data.graph
    traces = STATE.traces
    if graph is None and traces and any(a._born_in is not traces[-1] for a in args):
        # an eager tensor from outside the trace (a capture) is an input of the graph, whatever
        # op reads it first; only ops over the trace's own constants run (fold) eagerly
        graph = traces[-1].graph
    if graph is not None and traces and _enclosing(graph, traces[-1].graph):
        graph = traces[-1].graph
    if graph is not None:
        vals = [to_traced(a, graph) for a in args]
        if any(not isinstance(a._data, Value) or a._data.graph is not graph for a in args):
            # captures enter as inputs; one that requires grad through its traced leaf, so that
            # a backward() inside the trace fills its .grad (the compiled call otherwise
            # differentiates the graph w.r.t. the capture inputs, see runtime/compile.py)
            ctx = traces[-1]
            args = [a if isinstance(a._data, Value) and a._data.graph is graph else
                    _capture_read(ctx, a, v) for a, v in zip(args, vals)]
            if STATE.subst:              # a checkpoint recomputing: its stand-ins for the leaves
                args = [STATE.subst.get(id(a), a) for a in args]
            requires = any(a._requires_grad for a in args)
        out_v = graph.emit(prim, vals, params)
        if not STATE.grad_enabled and STATE.user_off and out_v.dtype.is_float:
            out_v = no_grad_result(out_v, vals)     # a constant to the IR's reverse mode
        out = Tensor(out_v, _weak=bool(args) and all(a._weak for a in args))
        if prim.bounds is not None and traces:
            _check_bounds(prim, vals, params, graph, traces)
    else:
        data = [a._data for a in args]
        if any(type(d) is not np.ndarray for d in data):
            _check_devices(prim, args)
        params, out_np, _, _ = eager.infer(prim, params, data)
        res = eager.run_impl(prim, data, params, out_np)
        out = Tensor(res)
        if type(res) is np.ndarray and res.base is not None:
            link(out, res, args, data)
    if requires and STATE.reads is not None:
        note_reads(args)
    if requires and STATE.grad_enabled and prim.vjp is not None and out.dtype.is_float:
        PrimNode.record(prim, params, args, out)
    return out


def _capture_read(ctx, a: Tensor, v: Value) -> Tensor:
    """The traced tensor through which an op reads `a`, a tensor from outside the trace
    (value `v` there)."""
    tape = ctx.tape_read(a, v)
    if tape is not None:        # written in the trace by a value with tape history: that value
        return tape
    if a._requires_grad:
        if not isinstance(a._data, Value):
            if a._born_in is not ctx:
                return ctx.grad_leaf(a, v)
        else:
            return ctx.outer_leaf(a, v)
    return Tensor(v)


def _check_bounds(prim, vals, params, graph, traces) -> None:
    """Index operands known only when a compiled call runs are checked then (checks.py)."""
    for ctx in reversed(traces):
        if ctx.graph is graph:
            k, n = prim.bounds([v.aval for v in vals], params)
            checks.check_operand(ctx, prim.name, vals[k], n)
            return


def _check_devices(prim, args) -> None:
    devs = [device_of(a._data) for a in args]
    if any(d != devs[0] for d in devs):
        desc = ", ".join(f"{a.dtype.name}{list(a.shape)} on {d}" for a, d in zip(args, devs))
        raise RuntimeError(f"{prim.name}: expected all tensors on the same device, got {desc} "
                           f"(at {user_location()}); move them with .to(device)")

