"""Gradients through a compiled call made with autograd on: the forward and backward
executables from the IR's VJP (compiled once per set of inputs that need grad), and the eager
backward node that runs the backward one."""
from __future__ import annotations

from typing import Callable

import numpy as np

from ..debug import dump
from ..ir.absent_cotangents import without_cotangents
from ..ir.autodiff import split, vjp_graph
from ..ir.partition import cut_enabled
from ..ir.printer import print_graph
from ..ir.replay import replay
from ..ir.verify import verify
from ..tracer.autograd import grad as autograd_grad
from ..tracer.backward_nodes import AliasNode, Node, SavedTensor
from ..tracer.state import enable_grad
from ..tracer.tensor import Tensor
from ..devices import Device
from . import grad_sync
from .entry import Entry


class CompiledNode(Node):
    def __init__(self, fn_name, graph, outs, residuals, bwd_exe, tensors, arrays, wrt,
                 copied=(), partial=None) -> None:
        super().__init__([tensors[i] for i in wrt])
        self._name = f"CompiledFunctionBackward<{fn_name}>"
        self.graph = graph
        self.n_outputs = len(outs)
        self.out_meta = [(o.shape, o.dtype) for o in outs]
        self.residuals = residuals
        self.bwd_exe = bwd_exe
        self.partial = partial    # absent cotangents -> a backward without them (see apply)
        self.wrt = wrt
        self.wrt_tensors = [tensors[i] for i in wrt]     # for a gradient syncer's plan
        # every tensor input is checked for in-place changes, and kept for create_graph; one
        # the call itself updates in place (`copied`) as a copy of the value it read
        self.inputs = [_read_copy(t, a) if i in copied else
                       SavedTensor(t) if t is not None else Tensor(a)
                       for i, (t, a) in enumerate(zip(tensors, arrays))]

    @classmethod
    def record(cls, fn_name, graph, outs, residuals, bwd_exe, tensors, arrays, wrt,
               active=None, copied=(), partial=None) -> None:
        node = cls(fn_name, graph, outs, residuals, bwd_exe, tensors, arrays, wrt, copied,
                   partial)
        for k, o in enumerate(outs):
            # (as torch, an output no gradient reaches does not require grad)
            if o.dtype.is_float and (active is None or active[k]):
                o.grad_fn, o._out_idx, o._requires_grad = node, k, True

    def name(self) -> str:
        return self._name

    def apply(self, grads, create_graph):
        ins = [s.unpack(self) if isinstance(s, SavedTensor) else s for s in self.inputs]
        if create_graph:      # differentiate the forward graph again, on the tape
            return self._apply_differentiable(ins, grads)
        cts, absent = [], []
        for g, (shape, dtype) in zip(grads, self.out_meta):
            if dtype.is_float:
                if g is None:
                    absent.append(len(cts))
                cts.append(g._data if g is not None else np.zeros(shape, dtype.np))
        # outputs no gradient reached contribute nothing, as in torch (fed as zeros to the full
        # backward, a formula with an infinite local derivative gave 0 * inf = NaN)
        exe = self.partial(tuple(absent)) if absent and self.partial else self.bwd_exe
        plan = grad_sync.plan_for(self.wrt_tensors) if grad_sync.SYNCERS else None
        if plan is not None:          # DDP: buckets all-reduced inside the backward
            res = grad_sync.run_synced(exe, plan, list(self.residuals) + cts)
        else:
            res = exe.run(list(self.residuals) + cts)
        return [Tensor(r) for r in res]

    def _apply_differentiable(self, ins, grads):
        wrt = [ins[i] for i in self.wrt]
        with enable_grad():
            outs = replay(self.graph, ins)
        pairs = [(o, g) for o, g in zip(outs, grads)
                 if g is not None and isinstance(o, Tensor) and o._requires_grad]
        if not pairs:
            return [None] * len(wrt)
        return list(autograd_grad([o for o, _ in pairs], wrt, [g for _, g in pairs],
                                  create_graph=True, allow_unused=True))

    def release(self) -> None:
        super().release()
        self.residuals = None
        self.inputs = [None] * len(self.inputs)
        self.wrt_tensors = []


def _read_copy(t: Tensor | None, a) -> Tensor:
    """A copy of array `a` that input `t` held when the call read it (the call then updated t
    in place); differentiable onto t's history when t requires grad (for create_graph)."""
    c = Tensor(a.copy())
    if t is not None and t._requires_grad:
        c.grad_fn, c._requires_grad = AliasNode([t]), True
    return c


def call_with_grad(fn_name: str, entry: Entry, arrays: list, tensors: list,
                   backend_for: Callable[[Device], object]) -> list[Tensor]:
    """Run a compiled call whose inputs need grad: its forward executable (outputs and the
    residuals the backward reads), recorded on the tape as one CompiledNode."""
    wrt = tuple(i for i, t in enumerate(tensors) if t is not None and t._requires_grad)
    parts = entry.grad_cache.get(wrt)
    if parts is None:
        active = entry.active(wrt)
        if not any(active[k] for k in entry.recorded_outputs()):
            # no result the caller gets, nor a tensor the call writes with history, depends on
            # those inputs (a compiled optimizer step, a function under no_grad inside): as
            # torch, nothing to record
            return [Tensor(o) for o in entry.exe.run(arrays)]
    if parts is None:
        with entry.grad_lock:       # one thread compiles; the others find its result
            parts = entry.grad_cache.get(wrt) or _compile_grad(fn_name, entry, wrt, backend_for)
    fwd_exe, bwd_exe, n_out = parts[:3]
    active = entry.grad_active[wrt]
    res = fwd_exe.run(arrays)
    outs = [Tensor(o) for o in res[:n_out]]
    # captures the call itself updates in place (BatchNorm's running statistics, a parameter
    # changed under no_grad) are kept as copies of the values it read: the write-back after
    # this call is not a user's in-place change of a saved tensor (small edit by N2)
    written = {id(w) for w in entry.writes}
    written |= {id(tensors[k]) for k in entry.traced.arg_writes if tensors[k] is not None}
    copied = {i for i, t in enumerate(tensors) if t is not None and id(t) in written}
    residuals = res[n_out:]
    if copied:          # a residual that is such an input's own array would see the write
        mine = {id(arrays[i]) for i in copied}
        residuals = [r.copy() if id(r) in mine else r for r in residuals]
    CompiledNode.record(fn_name, entry.graph, outs, residuals, bwd_exe, tensors, arrays, wrt,
                        active, copied, parts[3])
    return outs


def _compile_grad(fn_name: str, entry: Entry, wrt: tuple,
                  backend_for: Callable[[Device], object]) -> tuple:
    entry.optimized_graph()
    n_out = len(entry.graph.outputs)
    joint = vjp_graph(entry.graph, wrt, fn_name + "_vjp")
    fwd, bwd, _ = split(joint, len(entry.graph.inputs), n_out, recompute=cut_enabled())
    dump("grad", fn_name, lambda: print_graph(bwd))
    backend = backend_for(entry.device)
    n_res = len(bwd.inputs) - sum(v.dtype.is_float for v in entry.graph.outputs)
    partials: dict[tuple, object] = {}

    def partial(absent: tuple):
        """The backward without the cotangents numbered in `absent` (compiled once each)."""
        exe = partials.get(absent)
        if exe is None:
            with entry.grad_lock:
                exe = partials.get(absent)
                if exe is None:
                    g = without_cotangents(bwd, [n_res + k for k in absent], n_res)
                    exe = partials[absent] = backend.compile(verify(g))
                    grad_sync.note_source(exe, g)
        return exe
    parts = (backend.compile(verify(fwd)), backend.compile(verify(bwd)), n_out, partial)
    grad_sync.note_source(parts[1], bwd)   # DDP rebuilds it with all-reduces inside: grad_sync.py
    entry.grad_cache[wrt] = parts
    return parts
