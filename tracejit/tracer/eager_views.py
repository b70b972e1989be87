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
from .backward_nodes import PrimNode
from .host_views import eager_host, host_view  # noqa: F401 - indexing reads eager_host here
from .state import STATE, note_reads
from .tensor_base import SUBCLASSES, TensorBase as Tensor


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


def _recorded_view(prim, x: Tensor, params: dict, arr: np.ndarray) -> Tensor:
    """`prim` (a view primitive: slice, transpose) applied to x, a host tensor that requires
    grad, whose value is `arr`, NumPy's view of x's array: what dispatch.apply_primitive
    records (the cached inference's params and Avals, one PrimNode), without running the
    primitive's implementation to make the view again (a gate slice's cost was mostly that)."""
    norm, _, is_float, avals = eager.infer(prim, params, [x._data])
    out = host_view(arr)
    if STATE.reads is not None:
        note_reads((x,))
    if STATE.grad_enabled and is_float:
        # (PrimNode.record, inlined: the new tensor's _out_idx is already 0)
        out.grad_fn = PrimNode(prim, norm, (x,), out, avals)
        out._requires_grad = True
    return out


# how each view is recomputed from its base (views.py's ViewOf.fwd): the plain ops, which
# record no view themselves
_reversed_axes = views.full_transpose.__wrapped_view__
_swap_last = views.matrix_transpose.__wrapped_view__
_t_fwd = views.t.__wrapped_view__


def _transposed(x: Tensor, perm: tuple, fwd: Callable) -> Tensor:
    if x._requires_grad:
        out = _recorded_view(P.transpose, x, {"perm": perm}, x._data.transpose(perm))
    else:
        out = host_view(x._data.transpose(perm))
    return views.mark(x, out, fwd)


def full_transpose(x: Tensor) -> Tensor:
    """x.T: the axes reversed."""
    if x.ndim >= 2 and eager_host(x):
        return _transposed(x, tuple(range(x._data.ndim - 1, -1, -1)), _reversed_axes)
    return views.full_transpose(x)


def matrix_transpose(x: Tensor) -> Tensor:
    """x.mT: the last two axes swapped."""
    n = x.ndim
    if n >= 2 and eager_host(x):
        return _transposed(x, (*range(n - 2), n - 1, n - 2), _swap_last)
    return views.matrix_transpose(x)


def t(x: Tensor) -> Tensor:
    """x.t(): a 2-D tensor's transpose (0-D and 1-D as they are, through views.t)."""
    if type(x) in SUBCLASSES and x.ndim == 2 and eager_host(x):
        return _transposed(x, (1, 0), _t_fwd)
    return views.t(x)
