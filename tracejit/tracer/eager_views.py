"""Views made straight from NumPy on the eager path: basic indexing (`x[t]`, `x[:, a:b]`) and
transposes (`x.T`, `x.t()`, `x.mT`) of a host tensor outside any trace.

Such a view of a tensor that records no gradient is a read-only NumPy view of its base's
memory, exactly what the slice/reshape/transpose primitives give eagerly, so it is made
without dispatching them (an LSTM step slices its inputs and its gates per time step, and
dispatching a slice and a reshape cost ~10x the NumPy view). A tensor that requires grad
gets the nodes it got before (a slice, and a reshape for an int index, or a transpose: one
backward node each); a key of slices only and a transpose record their one node on NumPy's
view without dispatching the primitive (_recorded_view), an int index dispatches both. Either
way the result is recorded as a view
(views.mark), so in-place ops write through and follow as before. Everything else (traces, checkpoint recomputation, dual tensors, devices other than
the host, keys NumPy reads differently from torch) takes the general path."""
from __future__ import annotations

from typing import Callable

import numpy as np

from ..ir.primitives import P
from . import eager, views
from .backward_nodes import prim_node
from .host_views import eager_host, host_view  # noqa: F401 - indexing reads eager_host here
from .state import GRAD_OFF, SPECIAL_MODES, STATE, note_reads
from .tensor_base import SUBCLASSES, TensorBase as Tensor, wrap_array


_BOUND = frozenset((int, type(None)))


def numpy_key(x: Tensor, key) -> tuple | None:
    """NumPy's key for x[key] when the key is Python ints (in range) and slices (positive
    steps), at most one per axis of x: NumPy then reads the same elements as torch. None for
    any other key (the general path reads it, and raises its errors)."""
    shape = x._data.shape
    if type(key) is int:            # x[t]: the common case, checked without a loop
        if not shape or not -shape[0] <= key < shape[0]:
            return None
        return key, Ellipsis
    if type(key) is slice:
        key = (key,)
    elif type(key) is not tuple or not key:
        return None
    if len(key) > len(shape):
        return None
    for k, n in zip(key, shape):
        tk = type(k)
        if tk is slice:
            # Python ints or None only: other bounds (tensors, NumPy ints) the general path reads
            st = k.step
            if st is not None and (type(st) is not int or st <= 0) or \
                    type(k.start) not in _BOUND or type(k.stop) not in _BOUND:
                return None
        elif tk is not int or not -n <= k < n:
            return None
    # (the trailing Ellipsis: NumPy gives a 0-d view, not a scalar, for a 1-D x[i])
    return key + (Ellipsis,)


def _slice_params(shape: tuple, key: tuple) -> tuple:
    """The slice primitive's (starts, stops, steps) for a numpy_key, whether an int dropped an
    axis, and the result's shape."""
    starts, stops, steps, out = [], [], [], []
    dropped = False
    for k, n in zip(key[:-1], shape):
        if type(k) is slice:
            a, b, s = k.indices(n)
            if b < a:
                b = a
            starts.append(a), stops.append(b), steps.append(s)
            out.append(-(-(b - a) // s))
        else:
            k %= n
            starts.append(k), stops.append(k + 1), steps.append(1)
            dropped = True
    for n in shape[len(key) - 1:]:
        starts.append(0), stops.append(n), steps.append(1)
        out.append(n)
    return tuple(starts), tuple(stops), tuple(steps), dropped, tuple(out)


def index_view(x: Tensor, np_key: tuple, fwd: Callable) -> Tensor:
    """x[key] for an eager host tensor (eager_host) and its numpy_key, recorded as a view of x
    recomputed by `fwd`."""
    if not x._requires_grad:
        return views.mark(x, host_view(x._data[np_key]), fwd)
    shape = x._data.shape
    starts, stops, steps, dropped, out_shape = _slice_params(shape, np_key)
    if not dropped:
        # one slice (an LSTM's gate x[:, a:b]; x[:] too, a new view object as torch's): NumPy's
        # view and the slice's node, recorded here as dispatch would
        params = {"starts": starts, "stops": stops, "steps": steps}
        return views.mark(x, _recorded_view(P.slice, x, params, x._data[np_key]), fwd)
    # an int dropped an axis: a slice (unless it keeps everything) and a reshape, one node each
    out = x
    if steps.count(1) != len(steps) or starts != (0,) * len(starts) or stops != shape:
        out = x.__tj_bind__(P.slice, (x,), {"starts": starts, "stops": stops, "steps": steps})
    out = out.__tj_bind__(P.reshape, (out,), {"shape": out_shape})
    return views.mark(x, out, fwd)


# (x's shape, dtype number, the key's signature) -> _IndexPlan (or _NO_PLAN where numpy_key
# refuses the key): what numpy_key, _slice_params, the inference cache and torch's node name
# give for that key, all functions of the shape, dtype and key only. An LSTM slices its gates
# the same way at every step; deriving them per call was about half of a gate slice's cost.
_INDEX: dict = {}
_INDEX_MAX = 4096
_NO_PLAN = object()


class _IndexPlan:
    __slots__ = ("np_key", "norm", "avals", "is_float", "name")

    def __init__(self, np_key: tuple, node_name: str | None) -> None:
        self.np_key = np_key
        self.norm = self.avals = None       # (an int drops an axis: slice and reshape applied)
        self.is_float = False
        self.name = node_name


def _signature(key):
    """A hashable stand-in for a key of Python ints and slices with int or None bounds (3.11's
    slices do not hash), or None for any other key. Exact types: True == 1 as a dict key, but a
    bool is not an index here (numpy_key refuses it; the general path reads it as a mask)."""
    tk = type(key)
    if tk is int:
        return key
    if tk is slice:         # (not (k,)'s signature: torch names x[:] and x[:,] differently)
        sig = _signature((key,))
        return None if sig is None else (slice, sig)
    if tk is not tuple:
        return None
    if len(key) == 2:       # x[:, a:b] (an LSTM's gate slices): the loop below, unrolled
        k0, k1 = key
        if type(k0) is slice and type(k1) is slice:
            a0, b0, s0, a1, b1, s1 = k0.start, k0.stop, k0.step, k1.start, k1.stop, k1.step
            if (a0 is None or type(a0) is int) and (b0 is None or type(b0) is int) and \
                    (s0 is None or type(s0) is int) and (a1 is None or type(a1) is int) and \
                    (b1 is None or type(b1) is int) and (s1 is None or type(s1) is int):
                return ((a0, b0, s0), (a1, b1, s1))
            return None
    sig = []
    for k in key:
        t = type(k)
        if t is slice:      # (bounds None or exact ints; tested without a set lookup)
            a = k.start
            b = k.stop
            s = k.step
            if (a is None or type(a) is int) and (b is None or type(b) is int) and \
                    (s is None or type(s) is int):
                sig.append((a, b, s))
            else:
                return None
        elif t is int:
            sig.append(k)
        else:
            return None
    return tuple(sig)


def _index_plan(x: Tensor, key, name_of: Callable | None):
    np_key = numpy_key(x, key)
    if np_key is None:
        return _NO_PLAN
    d = x._data
    plan = _IndexPlan(np_key, None if name_of is None else name_of(key, d.shape))
    starts, stops, steps, dropped, _ = _slice_params(d.shape, np_key)
    if not dropped:
        params = {"starts": starts, "stops": stops, "steps": steps}
        plan.norm, _, plan.is_float, plan.avals = eager.infer(P.slice, params, [d])
    return plan


def cached_index(x: Tensor, key, getitem: Callable,
                 name_of: Callable | None = None) -> Tensor | None:
    """x[key] for an eager host tensor (eager_host) and a key of ints and slices that numpy_key
    takes, as index_view makes it (its new node named `name_of(key, shape)`, if given), from the plan cached for x's shape and dtype and the key; None for
    any other key (the caller's general path). `getitem(r, key)` recomputes the view."""
    sig = key if type(key) is int else _signature(key)      # (x[t]: no call)
    if sig is None:
        return None
    d = x._data
    ck = (d.shape, d.dtype.num, sig)
    plan = _INDEX.get(ck)
    if plan is None:
        if len(_INDEX) >= _INDEX_MAX:
            _INDEX.clear()
        plan = _INDEX[ck] = _index_plan(x, key, name_of)
    if plan is _NO_PLAN:
        return None
    # (the view is recomputed as x[np_key]: the key with a trailing Ellipsis, which selects
    # the same; the plan's tuple is shared, where the user's key was three objects per view)
    if not x._requires_grad:
        arr = d[plan.np_key]
        arr.setflags(False)         # (host_view, without its frame: x[t] of a model's inputs)
        return views.mark_host(x, wrap_array(arr), getitem, plan.np_key,
                               not GRAD_OFF[0] or STATE.grad_enabled)
    if plan.norm is None:
        out = index_view(x, plan.np_key, lambda r: getitem(r, key))
    else:
        arr = d[plan.np_key]
        arr.setflags(False)         # (host_view, without its frame: an LSTM's gate slices)
        out = wrap_array(arr)
        if SPECIAL_MODES[0] and STATE.reads is not None:
            note_reads((x,))
        grad_on = not GRAD_OFF[0] or STATE.grad_enabled
        if grad_on and plan.is_float:
            out.grad_fn = prim_node(P.slice, plan.norm, (x,), out, plan.avals)
            out._requires_grad = True
        out = views.mark_host(x, out, getitem, plan.np_key, grad_on)
    if plan.name is not None and out.grad_fn is not None:
        out.grad_fn._name = plan.name       # (a node of its own, never x's: see node_names)
    return out


def _recorded_view(prim, x: Tensor, params: dict, arr: np.ndarray) -> Tensor:
    """`prim` (a view primitive: slice, transpose) applied to x, a host tensor that requires
    grad, whose value is `arr`, NumPy's view of x's array: what dispatch.apply_primitive
    records (the cached inference's params and Avals, one PrimNode), without running the
    primitive's implementation to make the view again (a gate slice's cost was mostly that)."""
    norm, _, is_float, avals = eager.infer(prim, params, [x._data])
    out = host_view(arr)
    if SPECIAL_MODES[0] and STATE.reads is not None:
        note_reads((x,))
    if is_float and (not GRAD_OFF[0] or STATE.grad_enabled):
        # (PrimNode.record, inlined: the new tensor's _out_idx is already 0)
        out.grad_fn = prim_node(prim, norm, (x,), out, avals)
        out._requires_grad = True
    return out


# how each view is recomputed from its base (views.py's ViewOf.fwd): the plain ops, which
# record no view themselves
_reversed_axes = views.full_transpose.__wrapped_view__
_swap_last = views.matrix_transpose.__wrapped_view__
_t_fwd = views.t.__wrapped_view__


# (shape, dtype number, perm) -> the transpose's (normalized params, whether a float, Avals)
# from the inference cache: a weight's `.T` at every step of a loop finds them here without
# building the params and infer's key
_TRANSPOSES: dict = {}


def _transposed(x: Tensor, perm: tuple, fwd: Callable, name: str) -> Tensor:
    d = x._data
    out = host_view(d.transpose(perm))
    if x._requires_grad:
        key = (d.shape, d.dtype.num, perm)
        hit = _TRANSPOSES.get(key)
        if hit is None:
            if len(_TRANSPOSES) >= 1024:
                _TRANSPOSES.clear()
            norm, _, is_float, avals = eager.infer(P.transpose, {"perm": perm}, [d])
            hit = _TRANSPOSES[key] = (norm, is_float, avals)
        # (_recorded_view with the entry found here)
        if SPECIAL_MODES[0] and STATE.reads is not None:
            note_reads((x,))
        grad_on = not GRAD_OFF[0] or STATE.grad_enabled
        if grad_on and hit[1]:
            node = out.grad_fn = prim_node(P.transpose, hit[0], (x,), out, hit[2])
            out._requires_grad = True
            node._name = name           # (torch's name: a node of its own, see rename)
        return views.mark_host(x, out, fwd, grad_on=grad_on)
    return views.mark_host(x, out, fwd, grad_on=not GRAD_OFF[0] or STATE.grad_enabled)


def full_transpose(x: Tensor) -> Tensor:
    """x.T: the axes reversed."""
    if eager_host(x):
        n = x._data.ndim
        if n == 2:              # (W.T per RNN step: the perm without building it)
            return _transposed(x, _REVERSED_2, _reversed_axes, "PermuteBackward0")
        if n > 2:
            return _transposed(x, tuple(range(n - 1, -1, -1)), _reversed_axes,
                               "PermuteBackward0")
    return views.full_transpose(x)


_REVERSED_2 = (1, 0)


def matrix_transpose(x: Tensor) -> Tensor:
    """x.mT: the last two axes swapped."""
    n = x.ndim
    if n >= 2 and eager_host(x):
        return _transposed(x, (*range(n - 2), n - 1, n - 2), _swap_last, "TransposeBackward0")
    return views.matrix_transpose(x)


def t(x: Tensor) -> Tensor:
    """x.t(): a 2-D tensor's transpose (0-D and 1-D as they are, through views.t)."""
    if type(x) in SUBCLASSES and x.ndim == 2 and eager_host(x):
        return _transposed(x, (1, 0), _t_fwd, "TBackward0")
    return views.t(x)
