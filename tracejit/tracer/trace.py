"""Tracing a Python function into a Graph."""
from __future__ import annotations

import inspect
from typing import Any, Callable, Sequence

import numpy as np

from ..ir import dtypes as dt
from ..ir.core import Aval, Graph, Value
from ..ir.primitives import P
from ..runtime.devices import CPU, is_gpu_array
from .pytree import tree_flatten, tree_unflatten
from .state import STATE
from .tensor import Tensor

INLINE_CONST = 16


def leaf_aval(x: Any) -> tuple[Aval, bool]:
    """The abstract value of an argument leaf, and whether it is a weak Python scalar."""
    if isinstance(x, Tensor):
        x._concrete("passing a tensor to a compiled function")
        return Aval(x.shape, x.dtype), False
    if isinstance(x, (bool, np.bool_)):
        return Aval((), dt.bool_), isinstance(x, bool)
    if isinstance(x, int):
        return Aval((), dt.i64), True
    if isinstance(x, float):
        return Aval((), dt.f64), True
    a = x if is_gpu_array(x) else np.asarray(x)      # a CuPy array stays where it is
    d = dt.from_numpy(a.dtype)
    if d is None:
        raise TypeError(f"unsupported array dtype {a.dtype} for a compiled function argument")
    return Aval(a.shape, d), False


class TraceContext:
    """An active trace: the graph being built and the eager tensors it captured."""

    def __init__(self, name: str, device=CPU) -> None:
        self.graph = Graph(name)
        self.device = device                  # what traced tensors report as their .device
        self.captures: list[Any] = []        # captured objects, in graph-input order
        self._cap_index: dict[int, Value] = {}

    def __enter__(self) -> "TraceContext":
        STATE.traces.append(self)
        return self

    def __exit__(self, *exc) -> bool:
        STATE.traces.pop()
        return False

    def capture(self, t: Tensor) -> Value:
        """Tensors made during the trace are constants; others are lifted to extra inputs that
        each call reads afresh, so updating a captured tensor never leaves a stale value."""
        arr = t._data
        if t._born_in is self:
            if is_gpu_array(arr):
                arr = arr.get()          # IR constants live on the host
            if arr.size > INLINE_CONST and np.all(arr == arr.reshape(-1)[0]):
                c = self.graph.emit(P.constant, [], {"value": arr.reshape(-1)[:1].reshape(())})
                return self.graph.emit(P.broadcast, [c], {"shape": arr.shape})
            return self.graph.emit(P.constant, [], {"value": arr})
        v = self._cap_index.get(id(t))
        if v is None:
            v = self.graph.add_input(Aval(arr.shape, t.dtype), f"cap{len(self.captures)}")
            self._cap_index[id(t)] = v
            self.captures.append(t)
        return v


class Traced:
    """The result of tracing: the graph, how to rebuild outputs, and what was captured."""

    def __init__(self, graph: Graph, out_tree, captures: list) -> None:
        self.graph = graph                 # inputs: the flat arguments, then the captures
        self.out_tree = out_tree
        self.captures = captures


def _leaf_paths(x: Any, base: str) -> list[str]:
    """Names of the leaves of a pytree: base, base.0, base.key, ... (in flatten order)."""
    if isinstance(x, (tuple, list)):
        return [p for i, c in enumerate(x) for p in _leaf_paths(c, f"{base}.{i}")]
    if isinstance(x, dict):
        return [p for k, c in x.items() for p in _leaf_paths(c, f"{base}.{k}")]
    return [] if x is None else [base]


def arg_names(fn: Callable, args: Sequence, kwargs: dict) -> list[str]:
    """Readable names of the flat arguments, for the IR and for retrace messages."""
    try:
        params = list(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        params = []
    names = []
    for i, a in enumerate(args):
        names += _leaf_paths(a, params[i] if i < len(params) else f"arg{i}")
    for k, v in kwargs.items():
        names += _leaf_paths(v, k)
    return names


def trace(fn: Callable, args: Sequence, kwargs: dict, static: dict[int | str, Any] | None = None,
          name: str | None = None, device=CPU) -> Traced:
    """Trace fn(*args, **kwargs); entries of `static` (by position or name) are passed as is."""
    static = static or {}
    dyn_args = [a for i, a in enumerate(args) if i not in static]
    dyn_kwargs = {k: v for k, v in kwargs.items() if k not in static}
    flat, in_tree = tree_flatten((dyn_args, dyn_kwargs))
    names = arg_names(fn, dyn_args, dyn_kwargs)
    ctx = TraceContext(name or getattr(fn, "__name__", "f"), device)
    with ctx:
        tracers = []
        for leaf, nm in zip(flat, names):
            aval, weak = leaf_aval(leaf)
            tracers.append(Tensor(ctx.graph.add_input(aval, nm.replace("<", "").replace(">", "")),
                                  _weak=weak))
        t_args, t_kwargs = tree_unflatten(in_tree, tracers)
        it = iter(t_args)
        call_args = [static[i] if i in static else next(it) for i in range(len(args))]
        call_kwargs = {k: static.get(k, t_kwargs.get(k)) for k in kwargs}
        out = fn(*call_args, **call_kwargs)
        out_flat, out_tree = tree_flatten(out)
        outs = []
        for o in out_flat:
            if not isinstance(o, Tensor):
                from .ops import as_tensor
                o = as_tensor(o, like=tracers[0] if tracers else None) if tracers else \
                    Tensor(np.asarray(o))
            if not o._traced:
                o = Tensor(ctx.capture(o))
            outs.append(o._data)
    ctx.graph.outputs = outs
    return Traced(ctx.graph, out_tree, ctx.captures)
