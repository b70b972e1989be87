"""In-place ops (add_, mul_, zero_, __setitem__, ...): a functional update written back into
the tensor's own storage, with the version counter bumped so that saved tensors notice."""
from __future__ import annotations

import numpy as np

from ..ir.core import user_location
from . import ops
from . import bitwise, forward_ad, view_writes, views
from .forward_ad import FWD
from .grad_handles import follow_retained
from .lazy_copies import take_storage
from .operands import check_store
from ..ir.primitives import P, zeros_like
from .backward_nodes import Node
from .no_grad_ir import differentiable, straight_through, zero_gradient
from .state import STATE, internal_no_grad
from .tensor_base import TensorBase as Tensor, check_inplace_result, lift


def inplace(x: Tensor, update, op: str) -> Tensor:
    """Replace x's value by update(x) in place; autograd sees x's new history. On a view the
    update is written through to its base; a base's live views follow it (view_writes.py)."""
    if FWD.levels and not getattr(update, "dual", False):    # dual tensors: see forward_ad
        return forward_ad.inplace_dual(x, update, op, inplace)
    rec = getattr(x, "_view", None)
    if rec is None:
        if not x._retains_grad:
            return _inplace(x, update, op)
        old = (x.grad_fn, x._out_idx)
        _inplace(x, update, op)
        follow_retained(x, *old)
        return x
    if type(rec) is views.ViewOf:
        return view_writes.inplace_view(x, rec, update, op, inplace)      # (_follow: retain_grad)
    old = (x.grad_fn, x._out_idx)
    _inplace(x, update, op)
    follow_retained(x, *old)
    view_writes.rederive(x, rec)
    return x


def _inplace(x: Tensor, update, op: str) -> Tensor:
    records = STATE.grad_enabled
    if records and x._requires_grad and x.is_leaf:
        raise RuntimeError(f"{op}: a leaf Variable that requires grad is being used in an "
                           f"in-place operation (at {user_location()}); wrap it in "
                           f"`with tj.no_grad():` or operate on x.detach()")
    if x._traced:
        src = x
        if records and (x._requires_grad or getattr(update, "reads_grad", False)):
            # as eagerly: nodes recorded by `update` save the old value, not x, whose value
            # changes now (a Value is immutable: no copy)
            src = Tensor(x._data)
            src.grad_fn, src._out_idx = x.grad_fn, x._out_idx
            src._requires_grad = x._requires_grad
        new = update(src)
        # as eagerly, a value saved for backward before this write is stale: unpacking it
        # raises rather than reading the new value
        x._version[0] += 1
        of = getattr(x, "_data_of", None)
        if of is not None and STATE.traces and of[1] is STATE.traces[-1]:
            # x is `c.data` of a capture c: the update goes into c's storage, as eagerly
            check_inplace_result(x, new, op)
            new = ops.cast(new, x.dtype)
            write_capture(of[0], new)
            view_writes.follow_writes(of[0])
        if not records and STATE.user_off and x.dtype.is_float:
            # under no_grad x keeps its history, as eagerly; to the IR's reverse mode the new
            # value carries the old one's gradient (no_grad_ir.straight_through)
            x._data = straight_through(x._data, _traced_value(new, x))
            return x
        new_data = new._data
        if records and op in OverwriteNode.OVERWRITES and x.dtype.is_float and \
                differentiable([x._data]):
            # the graph keeps a zero-gradient link to the old value (no_grad_ir.zero_gradient)
            new_data = zero_gradient(x._data, _traced_value(new, x))
        if records and x._requires_grad and not new._requires_grad:
            x._data = new_data
            OverwriteNode.take(x, x, op)
            return x
        x._data, x.grad_fn, x._out_idx = new_data, new.grad_fn, new._out_idx
        x._requires_grad = new._requires_grad
        return x
    src = x
    if records and (x._requires_grad or getattr(update, "reads_grad", False)):
        # nodes recorded by `update` may save the old value: give them a snapshot of it (also
        # when only the other operand requires grad: t.mul_(b) saves t for b's gradient);
        # of a capture in a trace, its current traced value (a copy of its array would be a
        # constant of the trace, stale at the next call)
        tape = None
        if x._captured() and not x._requires_grad:
            v = STATE.traces[-1].capture(x)
            # (written before in the trace with tape history: that value, trace.py's write)
            tape = STATE.traces[-1].tape_read(x, v)
            src = Tensor(v)
        else:
            src = Tensor(x._data.copy())
        src.grad_fn, src._out_idx, src._requires_grad = x.grad_fn, x._out_idx, x._requires_grad
        src = src if tape is None else tape
    new = update(src)
    check_inplace_result(x, new, op)
    if x._captured():                 # stored into x after each call of the compiled function,
        ctx = STATE.traces[-1]        # also when the new value is a constant (zero_, fill_)
        new = ops.cast(new, x.dtype)
        new_v = new._data if new._traced else ctx.capture(new)
        if records and op in OverwriteNode.OVERWRITES and x.dtype.is_float and \
                not new._requires_grad:
            new_v = _overwrite_capture(ctx, x, new_v)
        read_as = None
        if not records and STATE.user_off and x._requires_grad and not ctx.backward_ran:
            # under no_grad a captured parameter stays what later reads differentiate (its
            # gradient accumulates into it, as eagerly): those reads see the new value with
            # the old one's gradient (not after a backward inside the trace: an optimizer's
            # step, never differentiated; the value stored back is new_v itself, so the
            # extra ops are dead code when nothing reads it again)
            read_as = straight_through(ctx.capture(x), new_v)
        # (a trace for a caller under no_grad records as one with grad on, unless the
        # function's own no_grad is on: user_off)
        ctx.write(x, new_v, read_as, history=records or not STATE.user_off,
                  tape=new if records else None)
        return x
    if new._traced:                   # tracing, and x is an eager tensor
        # a constant made inside the trace: from here on it holds the traced value
        x._data, x.grad_fn, x._out_idx = new._data, new.grad_fn, new._out_idx
        x._requires_grad = new._requires_grad
        return x
    if not getattr(x._data.flags, "writeable", True):    # CuPy's flags have no writeable
        take_storage(x)
    np.copyto(x._data, new._data, casting="unsafe")
    x._version[0] += 1
    if records and new._requires_grad:
        if new.dtype is not x.dtype:
            new = ops.cast(new, x.dtype)
        if x._requires_grad and op in OverwriteNode.REPLACING:
            # (torch's CopyBackwards: the old history gets a zero gradient, not none)
            OverwriteNode.take(x, src, op, new)
        else:
            x.grad_fn, x._out_idx, x._requires_grad = new.grad_fn, new._out_idx, True
    elif records and x._requires_grad:      # the new value no longer depends on the old history
        OverwriteNode.take(x, src, op)
    return x


def _overwrite_capture(ctx, x: Tensor, new_v):
    """zero_/fill_/copy_ (of a value without history) of capture `x` that this trace read or
    wrote before: as torch's ZeroBackward0 & co., the result keeps the old value's gradient
    path (with a zero gradient; no_grad_ir.zero_gradient), so a compiled call's outputs read
    from it require grad whenever that old value did (a copy_ of an argument that requires
    grad, then zero_). The passes fold the link away where no gradient is taken."""
    cur = ctx.read_ids().get(id(x))
    if cur is None or not differentiable([cur]):
        return new_v
    return zero_gradient(cur, new_v)


def _traced_value(new: Tensor, x: Tensor):
    """`new` (an in-place op's result for traced x) as a Value of x's graph and dtype."""
    if not new._traced:         # a constant folded eagerly (zero_, fill_)
        value = np.broadcast_to(np.asarray(new._data, x.dtype.np), tuple(x.shape))
        return x._data.graph.emit(P.constant, [], {"value": value.copy()})
    if new.dtype is not x.dtype:
        with internal_no_grad():
            new = ops.cast(new, x.dtype)
    return new._data


class OverwriteNode(Node):
    """The history of a tensor that requires grad overwritten by a value that does not depend
    on it (zero_, fill_, copy_): as torch's ZeroBackward0/FillBackward2/CopyBackwards, it
    still requires grad, its old history gets a zero gradient and the new value (`src`, if
    it requires grad) the gradient itself."""

    __slots__ = ("_name",)
    keeps_saved = False
    NAMES = {"zero_": "ZeroBackward0", "fill_": "FillBackward2"}     # (torch 2.13's)
    REPLACING = ("copy_", "fill_")      # in-place ops whose new value ignores the old one
    OVERWRITES = ("zero_", "copy_", "fill_")

    def __init__(self, old: Tensor, op: str, src: Tensor | None = None) -> None:
        super().__init__([old] if src is None else [old, src])
        self._name = self.NAMES.get(op, "CopyBackwards")

    @classmethod
    def take(cls, x: Tensor, old: Tensor, op: str, src: Tensor | None = None) -> None:
        """x (overwritten) takes the node onto `old`, a tensor with x's previous history, and
        `src`, its new value."""
        x.grad_fn, x._out_idx, x._requires_grad = cls(old, op, src), 0, True

    def name(self) -> str:
        return self._name

    def apply(self, grads: list, create_graph: bool) -> list:
        g = grads[0]
        zero = None if g is None else zeros_like(g.detach())
        return [zero] if len(self.next_functions) == 1 else [zero, g]


def store(t: Tensor, value, op: str = "copy_") -> Tensor:
    """Write `value` (an array of t's shape and dtype, on t's device) into eager tensor t's
    storage as an in-place op that records no autograd history: t's version counter moves, a
    view writes through to its base, and the live views of t or of its base follow. For code
    that computes new values outside the tracer's ops: the optimizers' fused update, DDP's
    reducer, the in-place collectives (their results written into t._data by hand did none
    of this)."""
    rec = getattr(t, "_view", None)
    if type(rec) is views.ViewOf:
        with views._grad(False):
            return view_writes.inplace_view(t, rec, lambda old: Tensor(value), op, inplace)
    d = t._data
    if not getattr(d.flags, "writeable", True):     # a lazy copy (CuPy's flags have none)
        d = take_storage(t)
    d[...] = value
    t._version[0] += 1
    if rec is not None:
        view_writes.rederive(t, rec)
    return t


def write_capture(t: Tensor, new: Tensor) -> None:
    """Store `new` (same shape and dtype as capture `t`) into `t` after each call of the
    compiled function being traced."""
    ctx = STATE.traces[-1]
    ctx.write(t, new._data if new._traced else ctx.capture(new))


def set_data(t: Tensor, other) -> None:
    """`t.data = other` for a capture `t` of the innermost trace: a write-back into `t`."""
    new = other if isinstance(other, Tensor) else ops.as_tensor(other)
    if tuple(new.shape) != tuple(t.shape) or new.dtype is not t.dtype:
        raise RuntimeError(
            f"`.data = ...` on a tensor captured by a compiled function (shape {list(t.shape)}, "
            f"{t.dtype.name}) with a value of shape {list(new.shape)}, {new.dtype.name} "
            f"(at {user_location()}): inside @tj.compile a captured tensor's .data can only be "
            f"replaced by a value of the same shape and dtype; assign outside the compiled "
            f"function, or use .data.copy_(...)")
    write_capture(t, new.detach())


def method(name: str):
    """The Tensor method `name` (add_, zero_, ...) of the table below."""
    fn = INPLACE[name]

    def method(self, *args, **kwargs):
        def update(old):
            return fn(old, *args, **kwargs)
        # (an operand that requires grad: its node may save the old value, see _inplace)
        update.reads_grad = STATE.grad_enabled and \
            any(getattr(a, "_requires_grad", False) for a in (*args, *kwargs.values()))
        return inplace(self, update, name)
    method.__name__ = name
    return method


def _copy(x: Tensor, src) -> Tensor:
    return _not_itself(ops.broadcast_to(ops.cast(ops.as_tensor(src), x.dtype), x.shape), src)


def _fill(x: Tensor, v) -> Tensor:
    check_store("fill_", v, x.dtype)
    return _not_itself(ops.broadcast_to(ops.as_tensor(v, x.dtype, like=x), x.shape), v)


def _not_itself(new: Tensor, src) -> Tensor:
    """The new value of copy_/fill_, which is `src` itself (or the tensor lifting a NumPy
    `src`) when of x's shape and dtype."""
    if new is src and new._requires_grad:
        # x needs a node of its own onto src's history (torch's CopyBackwards,
        # FillBackward3). Taking src's own node made a hook or retain_grad on x see src's
        # other gradients too, and for a leaf src (no node) x became a leaf of its own: its
        # gradient stopped there and src got none, silently. (x + -0.0 is x exactly.)
        return ops.add(new, -0.0)
    # a capture of the trace (a tensor or array from outside it) is read as one of its
    # inputs: taken as it is, its value now became a constant of the graph, stale at the
    # next call (compiled fuzzer seed 3309); one written in the trace with tape history is
    # read with it (trace.py's write): x then needs a node of its own, as above
    lifted = lift(new)
    return ops.add(lifted, -0.0) if lifted is not new and lifted._requires_grad else lifted


INPLACE = {
    "add_": lambda x, y, alpha=1: ops.add(x, ops.mul(y, alpha) if alpha != 1 else y),
    # (alpha through sub itself: a bool operand scaled first became an int64 one, and ran
    # where torch refuses bool subtraction)
    "sub_": lambda x, y, alpha=1: ops.sub(x, y, alpha=alpha),
    "mul_": ops.mul,
    "div_": ops.div,
    "pow_": ops.pow,
    "clamp_": ops.clip,
    "clip_": ops.clip,
    "zero_": lambda x: ops.as_tensor(np.zeros(x.shape, x.dtype.np), like=x, const=True),
    "fill_": _fill,
    "copy_": _copy,
    "exp_": ops.exp, "tanh_": ops.tanh, "neg_": ops.neg, "sqrt_": ops.sqrt, "abs_": ops.abs,
    "bitwise_left_shift_": bitwise.bitwise_left_shift,
    "bitwise_right_shift_": bitwise.bitwise_right_shift,
}
