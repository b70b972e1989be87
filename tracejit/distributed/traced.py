"""Collectives inside a compiled function: the `dist_all_reduce` graph operation
(ir/prims_collective.py), and the runner that carries it out when the compiled program reaches
it, through the same backends and checks as the eager collectives."""
from __future__ import annotations

import weakref
from typing import Any

from ..ir import dtypes as dt
from ..ir.prims_collective import OP_NAMES, RUNNERS
from ..ir.primitives import P, bind
from ..tracer.inplace import inplace
from ..tracer.creation import zeros_like
from ..tracer.state import STATE, no_grad
from ..tracer.tensor import Tensor
from .dispatch import backend_for, contiguous, start
from .group import ReduceOp, current, is_initialized

OP_CODES = {ReduceOp.SUM: 0, ReduceOp.AVG: 1, ReduceOp.PRODUCT: 2, ReduceOp.MIN: 3,
            ReduceOp.MAX: 4}
_BY_NAME = {op.value: op for op in OP_CODES}


def _spell(a: Any) -> str:
    d = dt.NP_TO_DTYPE.get(a.dtype)
    return f"{d.name if d is not None else a.dtype}{list(a.shape)}"


def _run_all_reduce(x: Any, op: int) -> Any:
    if not is_initialized():         # no group: a world of 1 (ir/prims_collective.py)
        return x.copy()
    pg = current()
    rop = _BY_NAME[OP_NAMES[op]]
    a = x.copy()                     # the runtime owns x: reduce a copy
    a, _ = contiguous(a)
    be = backend_for(pg, "all_reduce", [a])
    desc = start(pg, "all_reduce", f"(in a compiled function, {_spell(a)}, op={rop.name})")
    be.all_reduce(a, rop, desc).wait()
    return a


RUNNERS["dist_all_reduce"] = _run_all_reduce


# the last collective's result in each active trace (an IR value, not a Tensor: a Tensor made
# in the trace and kept outside it would count as escaping): the next one's `after` operand
_LAST: "weakref.WeakKeyDictionary[Any, Any]" = weakref.WeakKeyDictionary()


def _bind(x: Tensor, op: ReduceOp) -> Tensor:
    ctx = STATE.traces[-1]
    if not x._traced:                # an outside tensor, or a constant made in the trace: a
        x = Tensor(ctx.capture(x))   # graph value, so the collective runs at every call
    prev = _LAST.get(ctx)
    after = Tensor(prev) if prev is not None and prev.graph is ctx.graph else x
    out = bind(P.dist_all_reduce, x, after, op=OP_CODES[op])
    _LAST[ctx] = out._data
    return out


def traced_all_reduce_value(x: Tensor, op: ReduceOp) -> Tensor:
    """The all-reduced value of x as a new (traced) tensor."""
    return _bind(x, op)


def traced_all_reduce(t: Tensor, op: ReduceOp) -> None:
    """all_reduce(t) in place inside a trace: t holds the reduced value from here on (a
    captured tensor gets it written back after each call)."""
    with no_grad():
        inplace(t, lambda x: _bind(x, op), "all_reduce")


def traced_broadcast(t: Tensor, src: int) -> None:
    """broadcast(t, src) in place inside a trace: the sum over ranks of t on src and zeros
    elsewhere (exact: x + 0 is x), so one graph operation serves both."""
    mine = current().rank == src

    def update(x: Tensor) -> Tensor:
        return _bind(x if mine else zeros_like(x), ReduceOp.SUM)
    with no_grad():
        inplace(t, update, "broadcast")
