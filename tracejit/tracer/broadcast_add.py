"""`x + bias` on the eager path as one op with one backward node (torch's AddBackward0/
SubBackward0), where the registry's add reads operands of one shape: an explicit broadcast
primitive (a node of its own, ExpandBackward0) and the add (AddBackward0) were two.

For small host tensors of one float dtype outside any trace, NumPy's add broadcasts the
operands itself, and the node's backward is the registry's rules composed: add's VJP (the
gradient to both operands, negated for sub's second) followed by broadcast's VJP for an
operand that was broadcast (`sum_to_shape`, the float32-accumulating reduction). Without
create_graph that runs on arrays; with it (or traced, or on a device) it records, like any
rule. The node saves nothing: add's and sub's gradients read no operand."""
from __future__ import annotations

from typing import Callable

import numpy as np

from ..ir.primitives import P, neg, sum_to_shape
from .backward_nodes import _NO_EDGE, Node, leaf_edge
from .eager import _ERR_VAR, _IGNORE, Arr, quiet_call
from .forward_ad import FWD
from .state import GRAD_OFF, SPECIAL_MODES, STATE, note_reads
from .tensor_base import SUBCLASSES, TensorBase as Tensor, wrap_array

# the broadcast result size up to which this path is taken: above it, eager's compiled-kernel
# path (runtime/eager_kernels.py) may beat NumPy, and it sees only same-shape operands
MAX_ELEMENTS = 1 << 14
_FLOATS = frozenset((np.dtype(np.float32).num, np.dtype(np.float64).num))
_UFUNCS = {"add": np.add, "sub": np.subtract}


def applies(a, b, size: int) -> bool:
    """Whether a (op) b, two tensors whose shapes differ but broadcast to `size` elements, takes
    this path: host arrays of one float dtype, no trace, checkpoint recomputation or dual
    tensors."""
    da, db = a._data, b._data
    return size <= MAX_ELEMENTS and type(da) is np.ndarray and type(db) is np.ndarray and \
        da.dtype.num in _FLOATS and da.dtype == db.dtype and type(a) in SUBCLASSES and \
        type(b) in SUBCLASSES and (not SPECIAL_MODES[0] or not STATE.traces and
                                   not STATE.subst and not FWD.levels)


def front(op: str, fallback: Callable) -> Callable:
    """dispatch.fast_binary's step for `a op b` (add or sub) of two shapes: `apply` reached
    in one frame for a shape that is a trailing part of the other's (x + bias, bias + x),
    where fallback(op, a, b, sa, sb) (ops._one_dtype, given every other pair) built the
    broadcast shape in a Python loop and `applies` re-tested what fast_binary had tested
    (host arrays of one float dtype, no trace, checkpoint or dual tensors: no special mode)."""
    def broadcast(a: Tensor, b: Tensor, sa: tuple, sb: tuple) -> Tensor | None:
        na, nb = len(sa), len(sb)
        if na > nb and sa[na - nb:] == sb:
            size = a._data.size
        elif nb > na and sb[nb - na:] == sa:
            size = b._data.size
        else:
            return fallback(op, a, b, sa, sb)
        if size <= MAX_ELEMENTS and a._data.dtype.num in _FLOATS:
            return apply(op, a, b)
        return fallback(op, a, b, sa, sb)
    return broadcast


def apply(op: str, a: Tensor, b: Tensor) -> Tensor:
    """a + b or a - b (op), for operands that `applies` accepted."""
    if _ERR_VAR is None:                    # pragma: no cover - other NumPy versions
        res = quiet_call(_UFUNCS[op], a._data, b._data)
    else:
        tok = _ERR_VAR.set(_IGNORE)         # (quiet_call's error mode, without its frame)
        try:
            res = _UFUNCS[op](a._data, b._data)
        finally:
            _ERR_VAR.reset(tok)
    out = wrap_array(res)
    ra, rb = a._requires_grad, b._requires_grad
    if ra or rb:
        if SPECIAL_MODES[0] and STATE.reads is not None:
            note_reads((a, b))
        if not GRAD_OFF[0] or STATE.grad_enabled:
            # (the node made without an __init__ call: x + bias at every step of a model)
            node = out.grad_fn = _new(BroadcastAddNode)
            ga, gb = a.grad_fn, b.grad_fn
            node.next_functions = (
                ((ga, a._out_idx) if ga is not None else leaf_edge(a)) if ra else _NO_EDGE,
                ((gb, b._out_idx) if gb is not None else leaf_edge(b)) if rb else _NO_EDGE)
            node.freed = False
            node.out_hooks = node.retained = node._name = None
            node.op = op
            node.shapes = (a._data.shape, b._data.shape)
            out._requires_grad = True
    return out


_new = object.__new__


class BroadcastAddNode(Node):
    """The backward of a broadcasting add or sub: the gradient, summed back to each operand's
    shape (negated for sub's second operand). Made by `apply` without an __init__ call."""

    __slots__ = ("op", "shapes", "_name")   # (_name: set when it ends a composite: addmm's)
    keeps_saved = False              # nothing saved: it can run again, as torch's

    def name(self) -> str:
        if self._name is not None:
            return self._name
        return "AddBackward0" if self.op == "add" else "SubBackward0"

    def apply(self, grads: list, create_graph: bool) -> list:
        g = grads[0]
        if g is None:
            return [None, None]
        if not create_graph and type(g._data) is np.ndarray and not STATE.traces:
            return self.apply_arrays(g)
        (na, _), (nb, _) = self.next_functions
        ga = sum_to_shape(g, self.shapes[0]) if na is not None else None
        gb = sum_to_shape(g, self.shapes[1]) if nb is not None else None
        if gb is not None and self.op == "sub":
            gb = neg(gb)
        return [ga, gb]

    def apply_arrays(self, g: Arr) -> list:
        """The backward on an Arr (a pass that records nothing): on a host array the
        registry's implementations straight on the arrays, as a replayed VJP plan runs them
        (vjp_plans.py), not bound op by op; on a device array the rules bound to the Arr."""
        d = g._data
        if type(d) is not np.ndarray:
            return self.apply([g], False)
        (na, _), (nb, _) = self.next_functions
        ga = Arr(_sum_to(d, self.shapes[0])) if na is not None else None
        gb = None
        if nb is not None:
            gb = _sum_to(d, self.shapes[1])
            if self.op == "sub":        # (of a 0-d array, a ufunc gives a NumPy scalar)
                gb = np.asarray(quiet_call(np.negative, gb))
            gb = Arr(gb)
        return [ga, gb]


_AXES: dict = {}        # (gradient's shape, operand's shape) -> the axes summed; bounded


def _sum_to(g: np.ndarray, shape: tuple) -> np.ndarray:
    """primitives.sum_to_shape on an array: the sum primitive's implementation (its
    accumulation rule) over the broadcast axes, then the reshape."""
    gs = g.shape
    if gs == shape:
        return g
    axes = _AXES.get((gs, shape))
    if axes is None:
        lead = g.ndim - len(shape)
        axes = tuple(range(lead)) + tuple(lead + i for i, d in enumerate(shape)
                                          if d == 1 and gs[lead + i] != 1)
        if len(_AXES) >= 4096:
            _AXES.clear()
        _AXES[(gs, shape)] = axes
    impl = P.sum.impl
    # (float32/64: the accumulation rule itself, without in_float32's check for 16-bit floats)
    s = (impl.unwrapped if g.dtype.num in _FLOATS else impl)(g, axes=axes)
    # (a sum over every axis is a NumPy scalar, not an array: it became a leaf's .grad,
    # whose next in-place accumulation crashed in np.copyto)
    return (s if type(s) is np.ndarray else np.asarray(s)).reshape(shape)
