"""How a primitive is applied to Tensors: NumPy in eager mode, an IR instruction while
tracing, and a backward node on the tape when gradients are being recorded."""
from __future__ import annotations

import numpy as np

from ..ir.core import Aval, Value, user_location
from ..devices import device_of, is_gpu_array
from . import tensor as _tensor_module
from .autograd import PrimNode
from .state import STATE, current_trace, note_reads
from .tensor import Tensor


def to_traced(t: Tensor, graph) -> Value:
    """The IR value standing for `t` inside `graph`; eager tensors become captures."""
    d = t._data
    if isinstance(d, Value):
        if d.graph is not graph:
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


def apply_primitive(prim, args, params) -> Tensor:
    params = prim.normalize(params)
    if STATE.subst:                      # a checkpointed function being recomputed
        args = [STATE.subst.get(id(a), a) for a in args]
    graph = None
    requires = False
    for a in args:
        if type(a) is not Tensor and not isinstance(a, Tensor):   # nn.Parameter is a subclass
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
    if graph is not None:
        vals = [to_traced(a, graph) for a in args]
        if any(not isinstance(a._data, Value) for a in args):
            # captures enter as inputs; one that requires grad through its traced leaf, so that
            # a backward() inside the trace fills its .grad (the compiled call otherwise
            # differentiates the graph w.r.t. the capture inputs, see runtime/compile.py)
            ctx = traces[-1]
            args = [a if isinstance(a._data, Value) else
                    ctx.grad_leaf(a, v) if a._requires_grad and a._born_in is not ctx else
                    Tensor(v) for a, v in zip(args, vals)]
            if STATE.subst:              # a checkpoint recomputing: its stand-ins for the leaves
                args = [STATE.subst.get(id(a), a) for a in args]
            requires = any(a._requires_grad for a in args)
        out = Tensor(graph.emit(prim, vals, params), _weak=bool(args) and all(a._weak for a in args))
    else:
        data = [a._data for a in args]
        if any(type(d) is not np.ndarray for d in data):
            _check_devices(prim, args)
        aval = prim.infer([Aval(a._data.shape, a.dtype) for a in args], params)
        try:
            with np.errstate(all="ignore"):
                res = prim.impl(*data, **params)
        except (IndexError, ValueError, TypeError) as e:
            raise type(e)(f"{prim.name}: {e} (at {user_location()})") from None
        if not is_gpu_array(res):            # CuPy results stay on the GPU
            res = np.asarray(res)
        if res.dtype != aval.dtype.np:
            res = res.astype(aval.dtype.np)
        elif type(res) is np.ndarray and res.base is not None and res.flags.writeable:
            # a view of an input (reshape, slice, ...) is a lazy copy: read-only, and copied
            # before anything writes to it or aliases it (see Tensor.detach, inplace)
            res.flags.writeable = False
        out = Tensor(res)
    if requires and STATE.reads is not None:
        note_reads(args)
    if requires and STATE.grad_enabled and prim.vjp is not None and out.dtype.is_float:
        PrimNode.record(prim, params, args, out)
    return out


def _check_devices(prim, args) -> None:
    devs = [device_of(a._data) for a in args]
    if any(d != devs[0] for d in devs):
        desc = ", ".join(f"{a.dtype.name}{list(a.shape)} on {d}" for a, d in zip(args, devs))
        raise RuntimeError(f"{prim.name}: expected all tensors on the same device, got {desc} "
                           f"(at {user_location()}); move them with .to(device)")


_tensor_module._apply_primitive = apply_primitive    # Tensor.__tj_bind__ calls this
