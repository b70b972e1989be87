"""What grad mode means to a traced graph. The IR's reverse mode (ir.autodiff) cannot see grad
mode, so ops traced under the user's no_grad (and friends) are made explicit in the graph:

- an op's float result becomes `stop_gradient(no_grad=True)`: a constant to reverse mode, as
  the eager engine records no node for it; forward mode still passes its tangent through,
  as PyTorch's forward AD ignores no_grad (tj.jvp/jacfwd of a compiled function match torch);
- an in-place update of a traced tensor under no_grad keeps the tensor's history, as eagerly:
  its new value `new` is written as `new` to every value but with the old value's gradient
  (straight through): where(old finite, sg(new) - (sg(old) - old), sg(new)). The difference
  sg(old) - old is exactly 0 wherever old is finite, so the value is `new` bit for bit."""
from __future__ import annotations

import numpy as np

from ..ir.core import Value
from ..ir.primitives import P

# producers whose results no gradient reaches
_NO_GRAD_SOURCES = frozenset({"constant", "stop_gradient", "iota"})


def differentiable(vals) -> bool:
    """Some float operand that a gradient could reach: not a constant, nor stop_gradient's,
    nor a result `no_grad_result` found no gradient reaches."""
    for v in vals:
        ins = v.producer
        if v.dtype.is_float and (ins is None or ins.prim.name not in _NO_GRAD_SOURCES) and \
                v not in v.graph.gradless:
            return True
    return False


def barrier(v: Value) -> Value:
    """v as a constant to reverse mode (an op's result under no_grad)."""
    return v.graph.emit(P.stop_gradient, [v], {"no_grad": True})


def no_grad_result(out: Value, vals) -> Value:
    """`out`, the float result of an op on `vals` traced under the user's no_grad, as a
    constant to reverse mode: a barrier where a gradient could reach an operand; else `out`
    itself, recorded as a value no gradient reaches, so that the ops on it need no barrier
    either. (An optimizer step barriered nearly every op: nanoGPT's AdamW step traced 931
    stop_gradients, each read from a state tensor or a hyperparameter's cast.)"""
    if differentiable(vals):
        return barrier(out)
    out.graph.gradless.add(out)
    return out


def straight_through(old: Value, new: Value) -> Value:
    """`new`'s value with `old`'s gradient (an in-place update under no_grad); `new` has old's
    shape and dtype."""
    if not differentiable([old]):
        return new
    g = old.graph
    sg_new = barrier(new)
    diff, _, finite = _link(old)
    return g.emit(P.where, [finite, g.emit(P.sub, [sg_new, diff], {}), sg_new], {})


def zero_gradient(old: Value, new: Value) -> Value:
    """`new`'s value, linked to `old` with a zero gradient (an overwrite of a value with
    history: zero_, fill_, copy_): reverse mode still sees the link, so a compiled output
    overwritten so requires grad, as torch's (ZeroBackward0 & co.) does. The link is
    new - (sg(old) - old) * 0, exactly `new` where old is finite (and `new` elsewhere)."""
    if not differentiable([old]):
        return new
    g = old.graph
    diff, zero, finite = _link(old)
    linked = g.emit(P.sub, [new, g.emit(P.mul, [diff, zero], {})], {})
    return g.emit(P.where, [finite, linked, new], {})


def _link(old: Value) -> tuple[Value, Value, Value]:
    """(sg(old) - old: 0 in value with old's gradient negated, zeros of old's shape, where
    that difference is 0, i.e. old is finite) for the two links above."""
    g = old.graph
    diff = g.emit(P.sub, [barrier(old), old], {})
    zero = g.emit(P.constant, [], {"value": np.zeros((), old.dtype.np)})
    if old.shape:
        zero = g.emit(P.broadcast, [zero], {"shape": tuple(old.shape)})
    finite = g.emit(P.eq, [barrier(diff), zero], {})
    return diff, zero, finite
