"""Large elementwise composites without gradients as one compiled loop.

Without gradients an eager composite runs op by op: `sigmoid(x)` is neg, exp, add and
reciprocal, four passes over memory where PyTorch runs one kernel (a 4M-float sigmoid took
9.4 ms against NumPy's own 1 / (1 + exp(-x)) 9.3 ms and torch's ~1.5 ms). Here a composite whose
traced definition is elementwise only (elementwise primitives, broadcasts, constants), called on
CPU arrays of at least MIN_ELEMENTS elements, runs as the runtime's compiled graph (fused.py's
compiler: one native call, multi-threaded) once its signature has been seen COMPILE_AFTER times.
Reductions (softmax, layer_norm, ...) keep running op by op, so their accumulation order and
results stay those of eager NumPy; elementwise results may differ from NumPy's by the last bit
of a transcendental (the same vectorized math as compiled code)."""
from __future__ import annotations

import os
from typing import Callable

import numpy as np

from ..ir.passes import optimize
from . import fused
from .state import STATE, note_reads
from .tensor_base import TensorBase as Tensor

# Measured (sigmoid, float32, 2-core reference machine, quiet, 1 and 2 threads): the compiled
# loop took 0.05-0.10x the op-by-op time at every size from 2^10 to 2^18 elements (5 vs 60 us
# at 2^10, 137 vs 2,700 us at 2^18). So speed sets no threshold; compile cost does (~50-150 ms
# per signature): below 2^12 elements calls stay op by op, so that the many small shapes of
# tests and toy models do not each compile a loop.
MIN_ELEMENTS = int(os.environ.get("TRACEJIT_FUSED_NOGRAD_MIN", str(1 << 12)))
_ELEMENTWISE_KINDS = frozenset(("elementwise", "constant"))
_PLANS: dict = {}
_PLANS_MAX = 1024
stats = {"compiled_calls": 0, "compiles": 0}


class _Plan:
    __slots__ = ("graph", "calls", "run")

    def __init__(self, graph) -> None:
        self.graph, self.calls, self.run = graph, 0, None


def _elementwise_only(g) -> bool:
    return all(ins.prim.kind in _ELEMENTWISE_KINDS or ins.prim.name == "broadcast"
               for ins in g.instrs)


def large(tensors: list) -> bool:
    """Whether a call on these tensors is worth asking run() for: CPU arrays, each of at least
    MIN_ELEMENTS elements (cheap: small calls go op by op without building a key)."""
    return bool(tensors) and all(type(t._data) is np.ndarray and t._data.size >= MIN_ELEMENTS
                                 for t in tensors)


def run(fn: Callable, name: str, args: tuple, kwargs: dict) -> Tensor | None:
    """fn(*args, **kwargs) as one compiled loop, or None: run it op by op."""
    if not fused.ENABLED or STATE.subst or fused.COMPILE_AFTER <= 0 or \
            fused._COMPILER[0] is None:
        return None
    tensors: list[Tensor] = []
    key = fused._key(fn, args, kwargs, tensors)
    if key is None or not large(tensors):
        return None
    plan = _PLANS.get(key)
    if plan is None:
        if len(_PLANS) >= _PLANS_MAX:
            _PLANS.clear()
        tr = fused.traced_graph(fn, name, args, kwargs, tensors, None)
        ok = tr is not fused._UNFUSABLE and not tr.checks and _elementwise_only(tr.graph)
        plan = _PLANS[key] = _Plan(optimize(tr.graph)) if ok else fused._UNFUSABLE
    if plan is fused._UNFUSABLE:
        return None
    if plan.run is None:
        plan.calls += 1
        if plan.calls < fused.COMPILE_AFTER:
            return None              # a signature seen once or twice: not worth a compile
        try:
            plan.run = fused._COMPILER[0](plan.graph)
        except Exception:            # noqa: BLE001 - op by op stays correct
            _PLANS[key] = fused._UNFUSABLE
            return None
        stats["compiles"] += 1
    if STATE.reads is not None:
        note_reads(tensors)
    stats["compiled_calls"] += 1
    return Tensor(plan.run([t._data for t in tensors])[0])


def clear() -> None:
    _PLANS.clear()
