"""Collectives inside a compiled function: the `dist_all_reduce` graph operation
(ir/prims_collective.py), and the runner that carries it out when the compiled program reaches
it, through the same backends and checks as the eager collectives."""
from __future__ import annotations

import collections
import weakref
from typing import Any

import numpy as np

from ..devices import is_gpu_array
from ..ir import dtypes as dt
from ..ir.prims_collective import OP_NAMES, RUNNERS
from ..ir.primitives import P, bind
from ..runtime.backend import STEP_HOOKS
from ..tracer.inplace import inplace
from ..tracer.creation import zeros_like
from ..tracer.state import STATE, no_grad
from ..tracer.tensor import Tensor
from .dispatch import backend_for, contiguous, pumped, start
from .base import DistError, ProcessGroup, ReduceOp, done_work
from .group import GROUPS, is_initialized

OP_CODES = {ReduceOp.SUM: 0, ReduceOp.AVG: 1, ReduceOp.PRODUCT: 2, ReduceOp.MIN: 3,
            ReduceOp.MAX: 4}
_BY_NAME = {op.value: op for op in OP_CODES}


def _spell(a: Any) -> str:
    d = dt.NP_TO_DTYPE.get(a.dtype)
    return f"{d.name if d is not None else a.dtype}{list(a.shape)}"


def _group(gid: int) -> ProcessGroup:
    pg = GROUPS.get(gid)
    if pg is None:
        raise DistError(f"tracejit.distributed: a compiled function runs a collective on a "
                        f"process group that was destroyed (group #{gid})")
    return pg


def _run_all_reduce(x: Any, op: int, group: int = 0) -> Any:
    if not is_initialized():         # no group: a world of 1 (ir/prims_collective.py)
        return x.copy()
    pg = _group(group)
    rop = _BY_NAME[OP_NAMES[op]]
    a = x.copy()                     # the runtime owns x: reduce a copy
    a, _ = contiguous(a)
    be = backend_for(pg, "all_reduce", [a])
    desc = start(pg, "all_reduce", f"(in a compiled function, {_spell(a)}, op={rop.name})")
    be.all_reduce(a, rop, desc).wait()
    return a


# collectives started and not yet waited for, in start order (the graph chains the waits in
# that order: ir/prims_collective.py): (number, work, the array being reduced, (the program's
# array it was copied from, held so that its address names it: _address), its backend)
_PENDING: collections.deque = collections.deque()


def _address(x: Any) -> int:
    return x.data.ptr if is_gpu_array(x) else x.__array_interface__["data"][0]


def _progress() -> None:
    """Run after each step of the executing program while collectives are pending (runtime
    STEP_HOOKS): MPI advances a nonblocking collective only inside MPI calls."""
    seen: set = set()
    for *_, be in _PENDING:
        if id(be) not in seen:
            seen.add(id(be))
            be.progress()


def _forget_pending() -> None:
    _PENDING.clear()
    if _progress in STEP_HOOKS.fns:
        STEP_HOOKS.fns.remove(_progress)


def _start_pending(a: Any, x: Any, op: int, group: int, what: str) -> int:
    """Start the all-reduce of a (which the runner owns from here on) in place; x is the
    program's array that names it (its address pairs the wait with this start)."""
    pg = _group(group)
    rop = _BY_NAME[OP_NAMES[op]]
    be = backend_for(pg, "all_reduce", [a])
    if pg.size == 1 and getattr(be, "identity_on_one_rank", False):
        # every op is the identity on one rank: nothing to post, check or progress (a DDP
        # step under `mpiexec -n 1` spent ~0.4 ms a step on its two buckets' MPI calls,
        # AVG's division by 1 and a progress hook after every later step)
        pg.seq += 1
        _PENDING.append((pg.seq, done_work("all_reduce"), a, (x, _address(x)), be))
        return pg.seq
    desc = start(pg, "all_reduce", f"({what} in a compiled function, {_spell(a)}, "
                                   f"op={rop.name})")
    if pumped(be, a):
        _PENDING.append((pg.seq, be.all_reduce_async(a, rop, desc), a, (x, _address(x)), be))
        return pg.seq
    _PENDING.append((pg.seq, be.all_reduce(a, rop, desc), a, (x, _address(x)), be))
    if _progress not in STEP_HOOKS.fns:
        STEP_HOOKS.fns.append(_progress)
    return pg.seq


def _run_start(x: Any, op: int, group: int = 0) -> int:
    if not is_initialized():         # a world of 1: the wait returns x itself
        return 0
    a, _ = contiguous(x.copy())      # the runtime owns x: reduce a copy
    return _start_pending(a, x, op, group, "started")


def _run_bucket_start(flat: Any, pieces: list, op: int, group: int = 0) -> int:
    """A DDP bucket: flat holds pieces end to end and is the runner's (no copy)."""
    if not is_initialized():         # a world of 1: the wait concatenates the pieces
        return 0
    return _start_pending(flat, pieces[0], op, group, "bucket started")


def _pop_pending(x: Any, size: int, ticket: Any) -> Any:
    """The oldest started all-reduce, checked to be the one this wait (of x's, or the
    pieces' starting with x, `size` elements) pairs with; waited for."""
    if not _PENDING:
        raise DistError("tracejit.distributed: a compiled function waits for an all-reduce it "
                        "did not start (an earlier call failed between start and wait?)")
    seq, work, a, (_, addr), _ = _PENDING.popleft()
    if not _PENDING and _progress in STEP_HOOKS.fns:
        STEP_HOOKS.fns.remove(_progress)
    # the ticket is read only where that costs nothing (host memory, not a GPU's); the start
    # of this call read x where this wait reads it (a start left by a call that failed before
    # its wait holds its own x, so no later x is at that address)
    if a.size != size or _address(x) != addr or \
            (isinstance(ticket, np.ndarray) and int(ticket.reshape(-1)[0]) != seq):
        _forget_pending()
        raise DistError(f"tracejit.distributed: all-reduce #{seq} of {_spell(a)} was paired "
                        f"with a wait for {_spell(x)} (ticket {ticket}): an earlier call of "
                        f"the compiled function failed between start and wait")
    work.wait()
    return a


def _run_wait(x: Any, ticket: Any, op: int, group: int = 0) -> Any:
    if not is_initialized():
        return x.copy()
    a = _pop_pending(x, x.size, ticket)
    return a.reshape(x.shape)


def _run_bucket_wait(ticket: Any, pieces: list, op: int, group: int = 0) -> Any:
    if not is_initialized():
        return np.concatenate([p.reshape(-1) for p in pieces])
    return _pop_pending(pieces[0], sum(p.size for p in pieces), ticket)


RUNNERS["dist_all_reduce"] = _run_all_reduce
RUNNERS["dist_all_reduce_start"] = _run_start
RUNNERS["dist_all_reduce_wait"] = _run_wait
RUNNERS["dist_bucket_start"] = _run_bucket_start
RUNNERS["dist_bucket_wait"] = _run_bucket_wait


# the last collective's result in each active trace (an IR value, not a Tensor: a Tensor made
# in the trace and kept outside it would count as escaping): the next one's `after` operand
_LAST: "weakref.WeakKeyDictionary[Any, Any]" = weakref.WeakKeyDictionary()


def _after(last: "weakref.WeakKeyDictionary[Any, Any]", ctx: Any, default: Tensor) -> Tensor:
    """The `after` operand that orders a collective behind the trace's previous one."""
    prev = last.get(ctx)
    return Tensor(prev) if prev is not None and prev.graph is ctx.graph else default


def _params(op: ReduceOp, pg: ProcessGroup | None) -> dict:
    return {"op": OP_CODES[op]} if pg is None or pg.gid == 0 else \
        {"op": OP_CODES[op], "group": pg.gid}


def _bind(x: Tensor, op: ReduceOp, pg: ProcessGroup | None = None) -> Tensor:
    ctx = STATE.traces[-1]
    if not x._traced:                # an outside tensor, or a constant made in the trace: a
        x = Tensor(ctx.capture(x))   # graph value, so the collective runs at every call
    after = _after(_LAST, ctx, x)
    out = bind(P.dist_all_reduce, x, after, **_params(op, pg))
    _LAST[ctx] = out._data
    return out


_LAST_WAIT: "weakref.WeakKeyDictionary[Any, Any]" = weakref.WeakKeyDictionary()


def traced_all_reduce_start(x: Tensor, op: ReduceOp, pg: ProcessGroup | None = None) -> Tensor:
    """Start the all-reduce of x inside a trace; returns the ticket for traced_all_reduce_wait
    (the compiled program runs the rest meanwhile: DDP's buckets in a compiled step)."""
    ctx = STATE.traces[-1]
    if not x._traced:
        x = Tensor(ctx.capture(x))
    after = _after(_LAST, ctx, x)
    ticket = bind(P.dist_all_reduce_start, x, after, **_params(op, pg))
    _LAST[ctx] = ticket._data
    return ticket


def traced_all_reduce_wait(x: Tensor, ticket: Tensor, op: ReduceOp,
                           pg: ProcessGroup | None = None) -> Tensor:
    """The reduced value of the x whose all-reduce `ticket` started."""
    ctx = STATE.traces[-1]
    after = _after(_LAST_WAIT, ctx, ticket)
    out = bind(P.dist_all_reduce_wait, x, ticket, after, **_params(op, pg))
    _LAST_WAIT[ctx] = out._data
    return out


def traced_bucket_start(pieces: list, op: ReduceOp, pg: ProcessGroup | None = None) -> Tensor:
    """Start the all-reduce of a DDP bucket (the pieces end to end) inside a trace; returns
    the ticket for traced_bucket_wait. The CPU backend lays the pieces out in one flat array
    as the program makes them and reduces it in place (ir/prims_collective.py)."""
    ctx = STATE.traces[-1]
    pieces = [x if x._traced else Tensor(ctx.capture(x)) for x in pieces]
    after = _after(_LAST, ctx, pieces[0])
    ticket = bind(P.dist_bucket_start, *pieces, after, **_params(op, pg))
    _LAST[ctx] = ticket._data
    return ticket


def traced_bucket_wait(pieces: list, ticket: Tensor, op: ReduceOp,
                       pg: ProcessGroup | None = None) -> Tensor:
    """The reduced bucket (1-D) whose all-reduce `ticket` started."""
    ctx = STATE.traces[-1]
    after = _after(_LAST_WAIT, ctx, ticket)
    out = bind(P.dist_bucket_wait, ticket, after, *pieces, **_params(op, pg))
    _LAST_WAIT[ctx] = out._data
    return out


def traced_all_reduce_value(x: Tensor, op: ReduceOp, pg: ProcessGroup | None = None) -> Tensor:
    """The all-reduced value of x as a new (traced) tensor."""
    return _bind(x, op, pg)


def traced_all_reduce(t: Tensor, op: ReduceOp, pg: ProcessGroup | None = None) -> None:
    """all_reduce(t) in place inside a trace: t holds the reduced value from here on (a
    captured tensor gets it written back after each call)."""
    with no_grad():
        inplace(t, lambda x: _bind(x, op, pg), "all_reduce")


def traced_broadcast(t: Tensor, src: int, pg: ProcessGroup) -> None:
    """broadcast(t, src) in place inside a trace (src: a rank of pg): the sum over ranks of
    t on src and zeros elsewhere (exact: x + 0 is x), so one graph operation serves both."""
    mine = pg.rank == src

    def update(x: Tensor) -> Tensor:
        return _bind(x if mine else zeros_like(x), ReduceOp.SUM, pg)
    with no_grad():
        inplace(t, update, "broadcast")
