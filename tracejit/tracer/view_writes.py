"""In-place ops on views, and views following in-place ops on their root (views.py records
the views): an in-place op on a view writes through as a functional put into its root (torch's
CopySlices), and after any in-place op on a root its live views are derived again from its new
value (their data and grad_fn follow), eagerly and inside a trace. The positions a view reads
are found lazily, only when an in-place op on it needs them (see views.py's docstring)."""
from __future__ import annotations

from typing import Callable

import numpy as np

from ..ir.core import user_location
from ..ir.primitives import P, bind
from . import ops
from .grad_handles import follow_retained
from .lazy_copies import take_storage
from .state import STATE, no_grad
from .tensor_base import TensorBase as Tensor, check_inplace_result, lift
from .views import DATA, DETACH, MULTI, ViewOf, Views, _grad, _owner


def positions(rec: ViewOf) -> np.ndarray:
    """The root positions (flat, row-major) the view reads, in the view's shape."""
    if rec.pos is None:
        rec.pos, rec.mask = _read_positions(rec.root.shape, rec.fwd)
        n, flat = rec.mask.size, rec.pos.reshape(-1)
        rec.dup = int(np.count_nonzero(rec.mask)) != flat.size
        rec.ident = flat.size == n and not rec.dup and bool(np.all(flat == np.arange(n)))
    return rec.pos


def _read_positions(shape: tuple, fwd: Callable) -> tuple[np.ndarray, np.ndarray]:
    """(the positions, flat and row-major, of a base of `shape` that the view fwd(base)
    reads, in the view's shape; a mask of them over the base's positions). A mask, not
    np.unique: the put needs it anyway, and hashing every position of a big base for each
    view cost milliseconds."""
    n = int(np.prod(shape))
    with _grad(False):
        pos = np.asarray(fwd(Tensor(np.arange(n, dtype=np.int64).reshape(shape)))._data)
    mask = np.zeros(n, bool)
    mask[pos.reshape(-1)] = True
    return pos, mask


def _put(old: Tensor, new: Tensor, flat: np.ndarray, mask: np.ndarray) -> Tensor:
    """old with new's elements written at its flat positions `flat` (`mask` marks them): a
    differentiable functional put (torch's CopySlices), old's gradient zero where written."""
    upd = bind(P.scatter_add, ops.as_tensor(flat, like=old, const=True),
               ops.reshape(new, (-1,)), axis=0, shape=(mask.size,))
    m = ops.as_tensor(mask, like=old, const=True)
    return ops.reshape(ops.where(m, upd, ops.reshape(old, (-1,))), old.shape)


def writable_alias(x: Tensor, root: Tensor) -> np.ndarray | None:
    """x's elements as a writable NumPy view of its root's memory, when x's array is one
    (an eager view op gives a read-only view of its input: a lazy copy, to other code); None
    when the root's array is not its own (a lazy copy itself) or x's array is a copy (after
    the root took new storage: the root's in-place path derives x again)."""
    a, r = x._data, root._data
    if type(a) is not np.ndarray or type(r) is not np.ndarray or not r.flags.writeable or \
            _owner(a) is not _owner(r) or not np.may_share_memory(a, r):
        return None
    w = a.view()
    try:
        w.flags.writeable = True
    except ValueError:              # memory NumPy will not write (a read-only buffer)
        return None
    return w


def _expanded(a: np.ndarray) -> bool:
    """Whether the array reads an element twice (a zero stride: expand, broadcast_to)."""
    return any(s == 0 and n > 1 for s, n in zip(a.strides, a.shape))


def _check(x: Tensor, rec: ViewOf, op: str) -> None:
    root = rec.root
    if rec.kind in (DETACH, DATA) or not STATE.grad_enabled:
        return
    if root._requires_grad and root.is_leaf:
        raise RuntimeError(f"{op}: a view of a leaf Variable that requires grad is being used "
                           f"in an in-place operation (at {user_location()})")
    if rec.kind == MULTI and (root._requires_grad or x._requires_grad):
        raise RuntimeError(
            f"{op}: output of a function that returns multiple views (split, chunk, unbind) is "
            f"a view and is being modified inplace (at {user_location()}). Such functions do "
            f"not allow the output views to be modified inplace. You should replace the "
            f"inplace operation by an out-of-place one.")
    if rec.no_grad and root._requires_grad:
        raise RuntimeError(
            f"{op}: a view was created in no_grad mode and is being modified inplace with grad "
            f"mode enabled (at {user_location()}). Given that this use case is ambiguous and "
            f"error-prone, it is forbidden. You can clarify your code by moving both the view "
            f"and the inplace either both inside the no_grad block (if you don't want the "
            f"inplace to be tracked) or both outside (if you want the inplace to be tracked).")


def inplace_view(x: Tensor, rec: ViewOf, update: Callable, op: str,
                 root_inplace: Callable) -> Tensor:
    """An in-place op on view x: x's new value is put into its root by the root's own in-place
    path (`root_inplace`, inplace.inplace), after which every live view (x too) follows."""
    if not _live(rec.root):
        # the base was made inside a trace that has ended (x escaped it): x stands alone
        x._view = None
        return root_inplace(x, update, op)
    _check(x, rec, op)
    root = rec.root
    # eagerly, x's array is usually a view of the root's memory: then a write without
    # autograd history goes straight there, and the root positions x reads are not needed
    # (finding them runs x's view ops on an arange of the whole root: an optimizer or
    # clip_grad_norm_ stepping gradients that are views of one flat buffer paid that per
    # gradient and step)
    alias = None if STATE.traces else writable_alias(x, root)
    pos = positions(rec) if alias is None else None
    if rec.dup if alias is None else _expanded(alias):
        raise RuntimeError(
            f"{op}: unsupported operation: more than one element of the written-to tensor "
            f"refers to a single memory location (an expanded view {ops._fmt(x)}) (at "
            f"{user_location()}). Please clone() the tensor before performing the operation.")
    src = x
    if STATE.grad_enabled and (x._requires_grad or getattr(update, "reads_grad", False)) \
            and not x._captured():
        # nodes recorded by `update` may save the old value, which the put overwrites (also
        # when only the other operand requires grad: v.mul_(b) saves v for b's gradient);
        # traced, a tensor of its own (a Value is immutable: no copy), as inplace._inplace's:
        # x's version counter moves with the put
        src = Tensor(x._data if x._traced else x._data.copy())
        src.grad_fn, src._out_idx, src._requires_grad = x.grad_fn, x._out_idx, x._requires_grad
    new = update(src)
    check_inplace_result(x, new, op)
    new = ops.cast(new, x.dtype)
    if not STATE.traces and type(root._data) is np.ndarray and type(new._data) is np.ndarray \
            and not (STATE.grad_enabled and (root._requires_grad or new._requires_grad)):
        # no autograd history to record: store straight into the root's memory
        d = root._data
        if alias is not None:
            np.copyto(alias, new._data)
        elif rec.ident:
            if not d.flags.writeable:        # a lazy copy: the root gets its own buffer
                d = take_storage(root)
            np.copyto(d, new._data.reshape(d.shape))
        else:
            if not d.flags.writeable:
                d = take_storage(root)
            np.put(d, pos, new._data)
        if rec.kind != DATA:
            root._version[0] += 1
        rederive(root, root._view)
        return x

    if pos is None:
        pos = positions(rec)

    def put(old: Tensor) -> Tensor:
        if rec.ident and not (old._requires_grad and STATE.grad_enabled):
            # (with history, the put below: its where gives the old value a zero gradient,
            # as torch's CopySlices, where the new value alone would give it none)
            return ops.reshape(new, root.shape)
        flat = pos.reshape(-1)
        if rec.mask is None:
            rec.mask = np.zeros(root.numel(), bool)
            rec.mask[flat] = True
        return _put(old, new, flat, rec.mask)

    if rec.kind in (DETACH, DATA):
        # the root's data changes, its autograd history does not (as torch)
        keep = (root.grad_fn, root._out_idx, root._requires_grad, root._version[0])
        with no_grad():     # (traced: the root's new value keeps its gradient, no_grad_ir.py)
            root_inplace(root, put, op)
        root.grad_fn, root._out_idx, root._requires_grad = keep[:3]
        if rec.kind == DATA:
            root._version[0] = keep[3]
        if x._traced and new._traced and STATE.grad_enabled:
            # (traced: x's value is the IR's too, not its root's stop_gradient'd detach; also
            # where `new` has no tape history: a compiled function's arguments have none, the
            # IR's reverse mode differentiates them through x)
            x._data = new._data
            if rec.via is not None and not new._requires_grad:
                _base_history(rec, new, tape=False)
        if STATE.grad_enabled and new._requires_grad:
            # torch's detach()/.data is no autograd view of its base: x itself takes the new
            # value's history (d.add_(b): b's gradient flows through d; it was dropped)
            x.grad_fn, x._out_idx, x._requires_grad = new.grad_fn, new._out_idx, True
            if rec.via is not None:
                _base_history(rec, new)
            _follow_base(root, x if rec.via is None else rec.via, x)
        return x
    root_inplace(root, put, op)
    return x


def _base_history(rec: ViewOf, new: Tensor, tape: bool = True) -> None:
    """View x of d = t.detach() (rec.via) took `new`, a value with history: d, x's base to
    torch, takes it too, as a put of `new` into d's old value (torch's CopySlices on d).
    d's data already holds the new value (it shares its root's storage). tape=False: traced
    `new` without tape history (from a compiled function's arguments): d's traced value
    alone becomes the put, which the IR's reverse mode differentiates."""
    d = rec.via
    pos, mask = _read_positions(tuple(d.shape), rec.via_fwd)
    old = Tensor(d._data)       # (the put reads old's values only where x is not)
    if d._requires_grad:
        old.grad_fn, old._out_idx, old._requires_grad = d.grad_fn, d._out_idx, True
    put = _put(old, new, pos.reshape(-1), mask)
    if tape:
        d.grad_fn, d._out_idx, d._requires_grad = put.grad_fn, put._out_idx, True
    if d._traced and put._traced:
        d._data = put._data


def _follow_base(root: Tensor, d: Tensor, written: Tensor) -> None:
    """d (a detach()/.data tensor, `root`'s) took a history in place: its live autograd views
    but `written` derive theirs from it, as torch regenerates a view's grad_fn from its base."""
    views = getattr(root, "_view", None)
    if type(views) is not Views:
        return
    for r in views.refs:
        v = r()
        rec = getattr(v, "_view", None) if v is not None else None
        if v is written or type(rec) is not ViewOf or rec.via is not d:
            continue
        new = rec.via_fwd(d)
        if v._traced:
            v._data = new._data
        v.grad_fn, v._out_idx, v._requires_grad = new.grad_fn, new._out_idx, new._requires_grad


def rederive(root: Tensor, rec: Views) -> None:
    """After an in-place op on `root`: its live views take their values (and grad_fn) from
    its new value."""
    traces = STATE.traces
    graph = traces[-1].graph if traces else None
    # eagerly, a view whose array is a NumPy view of the root's memory and that has no
    # history needs nothing (_follow's first return, tested here inline: writing each of N
    # gradients that are views of one buffer walks the N views N times)
    shared = _owner(root._data) if not traces and type(root._data) is np.ndarray and \
        not root._requires_grad else None
    alive = []
    for r in rec.refs:
        v = r()
        if v is None or type(getattr(v, "_view", None)) is not ViewOf:
            continue
        d = v._data
        if shared is not None and type(d) is np.ndarray and not v._requires_grad and \
                (d if d.base is None else d.base) is shared:
            alive.append(r)
            continue
        if v._traced and v._data.graph is not graph:
            if _live(v):
                alive.append(r)     # of an enclosing trace (tj.vmap inside a compile)
            continue                # else made inside a trace that has ended
        alive.append(r)
        _follow(root, v, v._view, traces)
    rec.refs = alive


def _live(t: Tensor) -> bool:
    """t is eager, or traced in an active trace."""
    return not t._traced or any(c.graph is t._data.graph for c in STATE.traces)


def _follow(root: Tensor, v: Tensor, vr: ViewOf, traces: list) -> None:
    if traces and v._captured():
        # a view made outside the trace: its reads in the trace see the new value; after the
        # call the root's write-back reaches it (runtime/captures.py)
        ctx = traces[-1]
        base = lift(root)
        # the root written by a value with tape history (TraceContext.write): v's reads take
        # their view of it, as eagerly the view's grad_fn derives from its base's
        tape = base is ctx.tape_read(root, base._data) and not vr.no_grad and \
            STATE.grad_enabled
        with _grad(tape):
            new = vr.fwd(base)
        ctx.alias(v, new._data, new if tape else None)
        return
    if not v._traced and not root._traced and not root._captured() and \
            _owner(v._data) is _owner(root._data) and \
            not (v._requires_grad or root._requires_grad):
        return                      # shares the root's memory, and no history to follow
    # (a traced view made with grad on stays differentiable to the IR's reverse mode: in a
    # trace, values that derive from arguments do not require grad on the tape)
    with _grad(v._requires_grad or (not vr.no_grad and (STATE.grad_enabled or v._traced))):
        new = vr.fwd(root)
        if new is root:     # an identity view (x[:]): a node of its own, as mark gives it; the
            new = bind(P.reshape, root, shape=root.shape)   # root's (a leaf: none) cut it off
    if vr.kind in (DETACH, DATA) and v.grad_fn is not None:
        v._data = new._data     # a history of its own (inplace_view): its base's is not its
        return
    if vr.kind in (DETACH, DATA) and v.grad_fn is not None:
        v._data = new._data     # a history of its own (inplace_view): its base's is not its
        return
    old = (v.grad_fn, v._out_idx)
    v._data, v.grad_fn, v._out_idx = new._data, new.grad_fn, new._out_idx
    v._requires_grad = new._requires_grad
    follow_retained(v, *old)


def follow_writes(t: Tensor) -> None:
    """t (a capture) got its new value after a compiled call: its views follow."""
    rec = getattr(t, "_view", None)
    if type(rec) is Views:
        rederive(t, rec)


# the functional spellings (tj.reshape, tj.narrow, ...), exported by tracejit/__init__.py
