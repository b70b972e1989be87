"""The eager backward node of a compiled function: runs its compiled backward graph."""
from __future__ import annotations

import numpy as np

from ..ir.replay import replay
from ..tracer.autograd import grad as autograd_grad
from ..tracer.backward_nodes import Node, SavedTensor
from ..tracer.state import enable_grad
from ..tracer.tensor import Tensor
from . import grad_sync


class CompiledNode(Node):
    def __init__(self, fn_name, graph, outs, residuals, bwd_exe, tensors, arrays, wrt) -> None:
        super().__init__([tensors[i] for i in wrt])
        self._name = f"CompiledFunctionBackward<{fn_name}>"
        self.graph = graph
        self.n_outputs = len(outs)
        self.out_meta = [(o.shape, o.dtype) for o in outs]
        self.residuals = residuals
        self.bwd_exe = bwd_exe
        self.wrt = wrt
        self.wrt_tensors = [tensors[i] for i in wrt]     # for a gradient syncer's plan
        # every tensor input is checked for in-place changes, and kept for create_graph
        self.inputs = [SavedTensor(t) if t is not None else Tensor(a)
                       for t, a in zip(tensors, arrays)]

    @classmethod
    def record(cls, fn_name, graph, outs, residuals, bwd_exe, tensors, arrays, wrt) -> None:
        node = cls(fn_name, graph, outs, residuals, bwd_exe, tensors, arrays, wrt)
        for k, o in enumerate(outs):
            if o.dtype.is_float:
                o.grad_fn, o._out_idx, o._requires_grad = node, k, True

    def name(self) -> str:
        return self._name

    def apply(self, grads, create_graph):
        ins = [s.unpack(self) if isinstance(s, SavedTensor) else s for s in self.inputs]
        if create_graph:      # differentiate the forward graph again, on the tape
            return self._apply_differentiable(ins, grads)
        cts = []
        for g, (shape, dtype) in zip(grads, self.out_meta):
            if dtype.is_float:
                cts.append(g._data if g is not None else np.zeros(shape, dtype.np))
        plan = grad_sync.plan_for(self.wrt_tensors) if grad_sync.SYNCERS else None
        if plan is not None:          # DDP: buckets all-reduced inside the backward
            res = grad_sync.run_synced(self.bwd_exe, plan, list(self.residuals) + cts)
        else:
            res = self.bwd_exe.run(list(self.residuals) + cts)
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
