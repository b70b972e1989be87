"""A collective as a graph operation, so that a compiled training step (forward, backward,
the optimizer in one graph) can average gradients over ranks: `dist_all_reduce` returns the
reduction over ranks of its operand. (A broadcast inside a compiled function is an all-reduce
of the value on the source rank and zeros elsewhere: see distributed/traced.py.)

It is an *extern* primitive (see prims_sort.py): the backends call the implementation below
between native segments, on NumPy arrays (CPU) or CuPy arrays (GPU). The implementation runs
the collective through a runner that `tracejit.distributed` registers here (the arrow goes
from distributed to ir, never back). Without a process group the world is this process alone,
as a plain `python` run of init_process_group() is, and it is the identity (which is also
what the reference interpreter and the rule tests of every primitive see).
`op` codes: 0 sum, 1 avg, 2 prod, 3 min, 4 max. `group` numbers the process group (0, the
default, when absent; tracejit.distributed's `new_group` numbers the others).

Its second operand, `after`, is never read: it is the previous collective's result (or the
operand itself for the first), a data dependency that keeps the graph's collectives in trace
order. Every rank must issue them in the same order, and without it two independent
collectives could be scheduled in different orders on ranks whose graphs differ slightly (a
broadcast's operand is a constant on all ranks but the source).

`dist_all_reduce_start(x, after)` and `dist_all_reduce_wait(x, ticket, after)` split it in
two, so that a compiled training step overlaps the all-reduce with the rest of backward:
the start is placed where a DDP bucket's last gradient is produced and returns a ticket (an
int64 scalar, the collective's number); the wait, placed at the end of backward, returns the
reduced value. Waits are chained in start order (`after`), so the runner can pair them first
in, first out."""
from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np

from .batching import all_batched
from . import dtypes as dt
from .core import Aval
from .primitives import P, Primitive, bind, op_error, tangent_or_zeros

RUNNERS: dict[str, Callable[..., Any]] = {}
OP_NAMES = ("sum", "avg", "prod", "min", "max")


def _run(name: str, *args: Any, **params: Any) -> Any:
    runner = RUNNERS.get(name)
    if runner is None:               # tracejit.distributed not imported: a world of 1
        return args[0].copy()
    return runner(*args, **params)


def _infer_all_reduce(name: str, avals: list[Aval], op: int, group: int = 0) -> Aval:
    if len(avals) != 2:
        raise op_error(name, f"takes (x, after), got {len(avals)} operands")
    if not 0 <= op < len(OP_NAMES):
        raise op_error(name, f"unknown reduce op code {op}")
    return avals[0]


def _linear_in_x(name: str, op: int) -> None:
    if OP_NAMES[op] not in ("sum", "avg"):
        raise op_error(name, f"the {OP_NAMES[op]} all-reduce has no derivative here "
                       f"(only sum and avg are linear)", NotImplementedError)


def _vjp_all_reduce(g, ins, out, params, need):
    # out_r = sum_s x_s on every rank r, so d/dx_s of sum_r <g_r, out_r> = sum_r g_r
    _linear_in_x("dist_all_reduce", params["op"])
    return [bind(P.dist_all_reduce, g, g, **params), None]


def _jvp_all_reduce(tangents, ins, out, params):
    _linear_in_x("dist_all_reduce", params["op"])
    t = tangents[0]
    return None if t is None else bind(P.dist_all_reduce, t, t, **params)


def _batch_all_reduce(prim, ax, args, batched, params):
    # elementwise across ranks: x's batch axis passes through (x is broadcast along it when
    # only `after`, which is only an ordering, is batched)
    x = all_batched(args[:1], batched[:1], ax)[0]
    return bind(prim, x, args[1], **params), True


_PRIM = P.register(Primitive("dist_all_reduce", "extern", _infer_all_reduce,
                             lambda x, after, op, group=0: _run("dist_all_reduce", x, op=op,
                                                                group=group),
                             vjp=_vjp_all_reduce, jvp=_jvp_all_reduce,
                             params={"op": "int", "group": "int"},
                             arity=2, batch=_batch_all_reduce))
# every rank must run it at every call: constant folding must not evaluate it at compile time
# (ir/passes.py), even when its operand is a constant (a broadcast's zeros off the source rank)
_PRIM.effectful = True


def _infer_start(name: str, avals: list[Aval], op: int, group: int = 0) -> Aval:
    _infer_all_reduce(name, avals, op)
    return Aval((), dt.i64)


def _infer_wait(name: str, avals: list[Aval], op: int, group: int = 0) -> Aval:
    if len(avals) != 3:
        raise op_error(name, f"takes (x, ticket, after), got {len(avals)} operands")
    return _infer_all_reduce(name, avals[:2], op)


def _start_impl(x: Any, after: Any, op: int, group: int = 0) -> Any:
    runner = RUNNERS.get("dist_all_reduce_start")
    seq = 0 if runner is None else runner(x, op=op, group=group)
    return np.full_like(x, seq, dtype=np.int64, shape=())     # on x's device


def _wait_impl(x: Any, ticket: Any, after: Any, op: int, group: int = 0) -> Any:
    runner = RUNNERS.get("dist_all_reduce_wait")
    return x.copy() if runner is None else runner(x, ticket, op=op, group=group)


def _vjp_wait(g, ins, out, params, need):
    _linear_in_x("dist_all_reduce_wait", params["op"])
    return [bind(P.dist_all_reduce, g, g, **params), None, None]


def _jvp_wait(tangents, ins, out, params):
    _linear_in_x("dist_all_reduce_wait", params["op"])
    t = tangents[0]
    return None if t is None else bind(P.dist_all_reduce, t, t, **params)


def _batch_start(prim, ax, args, batched, params):
    x = all_batched(args[:1], batched[:1], ax)[0]
    ticket = bind(prim, x, args[1], **params)
    return all_batched([ticket], [False], ax)[0], True


def _batch_wait(prim, ax, args, batched, params):
    x = all_batched(args[:1], batched[:1], ax)[0]
    return bind(prim, x, *args[1:], **params), True


_START = P.register(Primitive("dist_all_reduce_start", "extern", _infer_start, _start_impl,
                              vjp=lambda g, i, o, p, n: [None, None],
                              jvp=lambda t, i, o, p: None, params={"op": "int", "group": "int"},
                              arity=2,
                              batch=_batch_start))
_WAIT = P.register(Primitive("dist_all_reduce_wait", "extern", _infer_wait, _wait_impl,
                             vjp=_vjp_wait, jvp=_jvp_wait, params={"op": "int", "group": "int"},
                             arity=3,
                             batch=_batch_wait))
_START.effectful = _WAIT.effectful = True


# -- a DDP bucket: the all-reduce of several gradients laid end to end ---------------------------
# `dist_bucket_start(x_1, ..., x_n, after)` starts the all-reduce of the concatenation of the
# flattened x_i (one dtype) and returns a ticket; `dist_bucket_wait(ticket, after, x_1, ...,
# x_n)` returns that reduction, a 1-D array. Unlike a concatenation followed by
# dist_all_reduce_start, the bucket is not a value of the graph: a backend may lay the x_i out
# back to back in one flat array from the start, so that the kernels producing them write the
# bucket in place and the all-reduce runs on it without a copy (runtime/flat_inputs.py: the
# CPU backend does, for operands that nothing reads after the start); `start_flat` is the
# implementation it calls then. The wait's x_i are read for their shapes only (and to pair the
# wait with its start); `after` orders the collectives as above.
def _bucket_dtype(name: str, avals: list[Aval]) -> dt.DType:
    d = avals[0].dtype
    if any(a.dtype is not d for a in avals):
        raise op_error(name, "a bucket holds one dtype, got " + ", ".join(map(str, avals)),
                       TypeError)
    return d


def _infer_bucket_start(name: str, avals: list[Aval], op: int, group: int = 0) -> Aval:
    if len(avals) < 2:
        raise op_error(name, f"takes (x_1, ..., x_n, after), got {len(avals)} operands")
    _bucket_dtype(name, avals[:-1])
    _infer_all_reduce(name, avals[:2], op)
    return Aval((), dt.i64)


def _infer_bucket_wait(name: str, avals: list[Aval], op: int, group: int = 0) -> Aval:
    if len(avals) < 3:
        raise op_error(name, f"takes (ticket, after, x_1, ..., x_n), got {len(avals)} operands")
    if not 0 <= op < len(OP_NAMES):
        raise op_error(name, f"unknown reduce op code {op}")
    return Aval((sum(a.size for a in avals[2:]),), _bucket_dtype(name, avals[2:]))


def _flat(pieces: Any) -> Any:
    """The x_i flattened end to end, as a new array (on their device: NumPy dispatches a
    CuPy array's concatenate to CuPy)."""
    return np.concatenate([p.reshape(-1) for p in pieces])


def _bucket_start_flat(flat: Any, pieces: Any, op: int, group: int = 0) -> Any:
    """Start the all-reduce of `flat`, which holds `pieces` end to end and which the runner
    then owns, in place."""
    runner = RUNNERS.get("dist_bucket_start")
    seq = 0 if runner is None else runner(flat, list(pieces), op=op, group=group)
    return np.full_like(flat, seq, dtype=np.int64, shape=())


def _bucket_start_impl(*args: Any, op: int, group: int = 0) -> Any:
    pieces = args[:-1]
    return _bucket_start_flat(_flat(pieces), pieces, op=op, group=group)


def _bucket_wait_impl(ticket: Any, after: Any, *pieces: Any, op: int, group: int = 0) -> Any:
    runner = RUNNERS.get("dist_bucket_wait")
    return _flat(pieces) if runner is None else runner(ticket, list(pieces), op=op,
                                                       group=group)


def _split_like(flat, ins):
    """flat's segments, shaped as ins (the inverse of _flat, on graph values)."""
    res, off = [], 0
    for x in ins:
        n = math.prod(x.shape)
        seg = bind(P.slice, flat, starts=[off], stops=[off + n], steps=[1])
        res.append(bind(P.reshape, seg, shape=tuple(x.shape)))
        off += n
    return res


def _vjp_bucket_wait(g, ins, out, params, need):
    _linear_in_x("dist_bucket_wait", params["op"])
    return [None, None] + _split_like(bind(P.dist_all_reduce, g, g, **params), ins[2:])


def _jvp_bucket_wait(tangents, ins, out, params):
    _linear_in_x("dist_bucket_wait", params["op"])
    ts = tangents[2:]
    if all(t is None for t in ts):
        return None
    parts = [bind(P.reshape, tangent_or_zeros(t, x), shape=(math.prod(x.shape),))
             for t, x in zip(ts, ins[2:])]
    flat = parts[0] if len(parts) == 1 else bind(P.concatenate, *parts, axis=0)
    return bind(P.dist_all_reduce, flat, flat, **params)


def _batch_bucket_start(prim, ax, args, batched, params):
    pieces = all_batched(args[:-1], batched[:-1], ax)
    ticket = bind(prim, *pieces, args[-1], **params)
    return all_batched([ticket], [False], ax)[0], True         # one ticket for the batch


def _batch_bucket_wait(prim, ax, args, batched, params):
    # the batched x_i end to end, reduced, then regrouped per example: row e of the result
    # is example e's bucket
    pieces = all_batched(args[2:], batched[2:], ax)
    flat = bind(prim, args[0], args[1], *pieces, **params)
    rows, off = [], 0
    for x in pieces:
        n = math.prod(x.shape)
        seg = bind(P.slice, flat, starts=[off], stops=[off + n], steps=[1])
        rows.append(bind(P.reshape, seg, shape=(ax.size, n // ax.size if ax.size else 0)))
        off += n
    return (rows[0] if len(rows) == 1 else bind(P.concatenate, *rows, axis=1)), True


_BUCKET_START = P.register(Primitive("dist_bucket_start", "extern", _infer_bucket_start,
                                     _bucket_start_impl, vjp=lambda g, i, o, p, n:
                                     [None] * len(i), jvp=lambda t, i, o, p: None,
                                     params={"op": "int", "group": "int"},
                                     batch=_batch_bucket_start))
_BUCKET_START.start_flat = _bucket_start_flat
_BUCKET_WAIT = P.register(Primitive("dist_bucket_wait", "extern", _infer_bucket_wait,
                                    _bucket_wait_impl, vjp=_vjp_bucket_wait,
                                    jvp=_jvp_bucket_wait, params={"op": "int", "group": "int"},
                                    batch=_batch_bucket_wait))
# its result is an array of its own that nothing else writes: a backend may keep it as the
# result instead of copying it into a buffer of its own
_BUCKET_WAIT.new_result = True
_BUCKET_START.effectful = _BUCKET_WAIT.effectful = True
