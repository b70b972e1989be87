"""Runtime checks of compiled programs: indices that only exist when the program runs.

Eagerly, an out-of-range index raises before anything is computed. A compiled program learns
its indices only when it runs, and its generated code clamps them (memory stays safe), so an
out-of-range index would silently read the wrong row. Instead, every index a trace cannot check
is counted: `record` adds the number of its values outside the allowed range to the trace, and
`finish` folds all of them into one int32 scalar graph output (0, or 1 + the number of the first
failing check), which the compiled call reads after running (see runtime/entry.py) and turns
into the error the eager op raises (IndexError, or RuntimeError where torch raises that), naming
the op and the user's file:line."""
from __future__ import annotations

from ..ir import dtypes as dt
from ..ir.core import Value, user_location
from . import ops
from .state import STATE
from .tensor_base import TensorBase as Tensor


def count_outside(idx: Tensor, lo: int, hi: int, allowed: int | None = None) -> Tensor:
    """How many values of integer tensor idx lie outside [lo, hi) (other than `allowed`)."""
    bad = ops.logical_or(ops.lt(idx, lo), ops.ge(idx, hi))
    if allowed is not None:
        bad = ops.logical_and(bad, ops.ne(idx, allowed))
    return ops.sum(ops.cast(bad, dt.i32))


def record(ctx, count: Tensor, message: str, cls: type = IndexError) -> None:
    """A check of trace `ctx`: the call raises cls(message) when `count` is not 0. (The IR
    value is kept, not the tensor: a tensor held past the trace would be an escape.)"""
    ctx.checks.append((count._data, (message, cls)))


def check_operand(ctx, op: str, idx: Value, n: int) -> None:
    """Primitive `op` indexes an axis of length n with idx, which may count from the end: check
    idx in [-n, n) when the call runs, once per (index, length) in a trace. Constants are
    skipped: the library checks them when it makes them."""
    key = (id(idx), n)
    if key in ctx.checked or (idx.producer is not None and idx.producer.prim.name == "constant"):
        return
    ctx.checked.add(key)
    record(ctx, count_outside(Tensor(idx), -n, n),
           f"{op}: an index is out of bounds for an axis of size {n} (at {user_location()})")


def in_bounds(idx: Tensor, n: int) -> None:
    """The library has already checked traced idx against [0, n) (or made it so): a primitive
    indexing an axis of length n with it adds no check of its own."""
    if STATE.traces and idx._traced:
        ctx = next((c for c in reversed(STATE.traces) if c.graph is idx._data.graph), None)
        if ctx is not None:
            ctx.checked.add((id(idx._data), n))


def check_index(idx: Tensor, lo: int, hi: int, message: str, allowed: int | None = None,
                cls: type = IndexError) -> bool:
    """Inside a trace, check the values of idx (traced, or an eager tensor the trace captures)
    against [lo, hi) (`allowed` besides) when the compiled call runs; cls(message) (the op's own
    eager error) is raised then, with the user's file:line. False outside a trace, where
    the caller checks the values now."""
    traces = STATE.traces
    if not traces:
        return False
    ctx = traces[-1]
    if idx._traced:
        ctx = next((c for c in reversed(traces) if c.graph is idx._data.graph), ctx)
    if idx.numel():
        count = count_outside(idx, lo, hi, allowed)
        if not count._traced:           # a constant of the trace: its values are known now
            if int(count.item()):
                raise cls(f"{message} (at {user_location()})")
        else:
            record(ctx, count, f"{message} (at {user_location()})", cls)
    return True


def rows_in_range(idx: Tensor, n: int, op: str, axis: str) -> None:
    """torch's lookups (index_select, embedding) refuse negative indices, where indexing and
    the gather primitive count them from the end: idx must lie in [0, n), checked now for an
    eager index or when the compiled call runs. `axis` names the indexed axis in the error."""
    if check_index(idx, 0, n, f"{op}: index out of range in self for {axis}") or not idx.numel():
        return
    vals = idx._host(op)
    if vals.min() < 0 or vals.max() >= n:
        raise ops._err(op, f"index out of range in self: indices [{int(vals.min())}, "
                           f"{int(vals.max())}] for {axis}", IndexError)


def finish(ctx) -> Value | None:
    """The one output standing for all of ctx's checks, or None if it has none."""
    if not ctx.checks:
        return None
    code = None
    for i, (count, _) in enumerate(ctx.checks):
        this = ops.where(ops.ne(Tensor(count), 0), i + 1, 0)
        code = this if code is None else ops.maximum(code, this)
    return ops.cast(code, dt.i32)._data


def failure(errors: list[tuple[str, type]], code) -> Exception | None:
    """The error for the finished checks' output value `code` (an array), or None."""
    k = int(code)
    if not k:
        return None
    message, cls = errors[k - 1]
    return cls(message)
