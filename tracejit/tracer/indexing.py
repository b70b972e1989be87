"""Tensor indexing: basic (ints, slices, None, ...) and integer-array indexing, plus
`__setitem__` expressed as a functional update."""
from __future__ import annotations

import math
import warnings

import numpy as np

from ..ir import dtypes as dt
from ..ir.core import user_location
from ..ir.primitives import P, bind
from ..devices import is_host
from . import checks, eager_views, ops, views
from .inplace import inplace
from .node_names import index_node_name, rename
from .operands import check_store
from .state import SPECIAL_MODES
from .tensor_base import SUBCLASSES, TensorBase as Tensor


def _err(msg: str, cls=IndexError) -> Exception:
    return cls(f"index: {msg} (at {user_location()})")


def _is_bool_index(k) -> bool:
    if isinstance(k, Tensor):
        return k.dtype is dt.bool_
    return isinstance(k, (np.ndarray, list)) and np.asarray(k).dtype == np.bool_


def _small_int_key(key):
    """torch's rule for uint8, int8 and int16 index tensors (and arrays): a uint8 one is a
    mask (deprecated in torch, with a warning: use bool), int8/int16 ones are refused."""
    ks = key if isinstance(key, tuple) else (key,)
    if not any(isinstance(k, (Tensor, np.ndarray)) and k.dtype in _SMALL for k in ks):
        return key
    out = []
    for k in ks:
        d = k.dtype if isinstance(k, (Tensor, np.ndarray)) else None
        if d is dt.u8 or d == np.uint8:
            warnings.warn(f"index: indexing with a uint8 tensor is deprecated, as in torch "
                          f"(it is a mask: use a bool tensor) (at {user_location()})",
                          UserWarning, stacklevel=3)
            k = ops.ne(k, 0) if isinstance(k, Tensor) else k != 0
        elif d in _SMALL:
            raise _err(f"tensors used as indices must be int64, int32, uint8 or bool, got "
                       f"{d.name if isinstance(d, dt.DType) else d} (as torch)")
        out.append(k)
    return tuple(out) if isinstance(key, tuple) else out[0]


_SMALL = (dt.u8, dt.i8, dt.i16, np.dtype(np.uint8), np.dtype(np.int8), np.dtype(np.int16))


def _expand_key(x: Tensor, key) -> list:
    """The key as a list with Ellipsis expanded and boolean masks turned into integer arrays."""
    out = []
    for k in (key if isinstance(key, tuple) else (key,)):
        if _is_bool_index(k):
            arr = k._concrete("boolean mask indexing (its result shape depends on the data; "
                              "use tj.where(mask, x, 0) instead)") if isinstance(k, Tensor) \
                else np.asarray(k)
            out.extend(np.nonzero(arr))
        else:
            out.append(k)
    n_real = sum(1 for k in out if k is not None and k is not Ellipsis)
    n_ell = sum(1 for k in out if k is Ellipsis)
    if n_ell > 1:
        raise _err("an index can only have a single ellipsis")
    if n_real > x.ndim:
        raise _err(f"too many indices for {ops._fmt(x)}: {n_real} given")
    if n_ell:
        i = next(j for j, k in enumerate(out) if k is Ellipsis)
        out[i:i + 1] = [slice(None)] * (x.ndim - n_real)
    return out


def _scalar_mask(key) -> bool | None:
    """The value of a 0-d boolean index that is the whole key (x[True], x[t > 0] for a 0-d
    t), or None for any other key."""
    k = key[0] if isinstance(key, tuple) and len(key) == 1 else key
    if isinstance(k, (bool, np.bool_)):
        return bool(k)
    if isinstance(k, Tensor) and k.dtype is dt.bool_ and k.ndim == 0:
        return bool(k._concrete("boolean mask indexing (its result shape depends on the "
                                "data; use tj.where(mask, x, 0) instead)"))
    if isinstance(k, np.ndarray) and k.dtype == np.bool_ and k.ndim == 0:
        return bool(k)
    return None


def getitem(x: Tensor, key) -> Tensor:
    key = _small_int_key(key)
    m = _scalar_mask(key)
    if m is not None:
        # as torch (and NumPy): a new leading axis of length 1 (True) or 0 (False)
        return getitem(ops.reshape(x, (1, *x.shape)), np.array([m]))
    key = _expand_key(x, key)
    xshape = x.shape                     # (a property making a tuple: read once)
    ndim = len(xshape)
    starts, stops, steps, shape = [], [], [], []
    adv: list[tuple[int, object]] = []       # (axis in the sliced result, integer array)
    axis = 0
    out_axis = 0
    for k in key:
        if axis >= ndim and k is not None:
            break
        if k is None:
            shape.append(1)
            out_axis += 1
            continue
        n = xshape[axis]
        if isinstance(k, slice):
            if k.step is not None and k.step <= 0:
                raise _err("step must be greater than zero (negative steps are not supported)",
                           ValueError)
            a, b, s = k.indices(n)
            b = max(a, b)
            starts.append(a), stops.append(b), steps.append(s)
            shape.append(-(-(b - a) // s))
            out_axis += 1
        elif isinstance(k, (int, np.integer)) and not isinstance(k, bool):
            i = int(k)
            if not -n <= i < n:
                raise _err(f"index {i} is out of bounds for axis {axis} with size {n} "
                           f"in {ops._fmt(x)}")
            i %= n
            starts.append(i), stops.append(i + 1), steps.append(1)
        else:
            idx = k if isinstance(k, Tensor) else np.asarray(k)
            if idx.size == 0 and not isinstance(k, (Tensor, np.ndarray)):
                idx = idx.astype(np.int64)      # x[[]]: an empty list indexes nothing (torch)
            if not (idx.dtype.is_int if isinstance(idx, Tensor) else idx.dtype.kind in "iu"):
                raise _err(f"indices must be integers, slices, None, ... or integer/boolean "
                           f"arrays, got {type(k).__name__}", TypeError)
            starts.append(0), stops.append(n), steps.append(1)
            adv.append((out_axis, idx, n))
            shape.append(n)
            out_axis += 1
        axis += 1
    while axis < ndim:
        starts.append(0), stops.append(xshape[axis]), steps.append(1)
        shape.append(xshape[axis])
        axis += 1
        out_axis += 1
    y = x
    starts, stops, steps = tuple(starts), tuple(stops), tuple(steps)
    if (starts, stops) != ((0,) * ndim, xshape) or steps.count(1) != ndim:
        # (tuples: hashable params take eager's inference cache without an exception)
        y = bind(P.slice, x, starts=starts, stops=stops, steps=steps)
    y = ops.reshape(y, tuple(shape))
    return _advanced(y, adv) if adv else y


def _norm_index(idx, n: int, like: Tensor) -> Tensor:
    if isinstance(idx, Tensor):
        t = ops.cast(idx, dt.i64)
        msg = f"index: an index is out of bounds for an axis of size {n}"
        if not checks.check_index(t, -n, n, msg) and t.numel():
            # eagerly now: wrapped below, -n-1 would otherwise read row n-1
            if is_host(t._data):
                if _check_bounds(t._data, n) >= 0:
                    return t        # outside traces, nothing to wrap: no where/lt/add ops
                # (an integer index has no gradient: its wrapped copy needs no node)
                return Tensor(np.where(t._data < 0, t._data + n, t._data))
            elif int(checks.count_outside(t, -n, n).item()):    # one scalar back, not idx
                raise _err(msg.split(": ", 1)[1])
        return ops.where(ops.lt(t, 0), ops.add(t, n), t)
    idx = np.asarray(idx, dtype=np.int64)
    _check_bounds(idx, n)
    # index arrays are constants of a trace: their bounds were checked just above
    return ops.as_tensor(np.where(idx < 0, idx + n, idx), like=like, const=True)


def _check_bounds(idx: np.ndarray, n: int) -> int:
    """Raise if an index lies outside [-n, n); return the smallest index (0 if none)."""
    if not idx.size:
        return 0
    lo, hi = int(idx.min()), int(idx.max())
    if lo < -n or hi >= n:
        raise _err(f"index {hi if hi >= n else lo} is out of bounds for an axis of size {n}")
    return lo


def _advanced(y: Tensor, adv) -> Tensor:
    axes = [a for a, _, _ in adv]
    adjacent = axes == list(range(axes[0], axes[0] + len(axes)))
    if not adjacent:          # NumPy puts the indexed dims first when they are not adjacent
        rest = [i for i in range(y.ndim) if i not in axes]
        y = ops.permute(y, tuple(axes + rest))
        axes = list(range(len(axes)))
    first = axes[0]
    idxs = [_norm_index(i, n, y) for _, i, n in adv]
    if len(idxs) == 1:          # an embedding lookup: nothing to broadcast or linearize
        return bind(P.gather, y, idxs[0], axis=first)
    try:
        bshape = np.broadcast_shapes(*(i.shape for i in idxs))
    except ValueError:
        raise _err("shape mismatch: indexing arrays could not be broadcast together") from None
    flat = None
    for (_, _, n), i in zip(adv, idxs):       # row-major linear index over the indexed dims
        i = ops.broadcast_to(i, bshape)
        flat = i if flat is None else ops.add(ops.mul(flat, n), i)
    sizes = [y.shape[a] for a in axes]
    merged = ops.reshape(y, y.shape[:first] + (math.prod(sizes),) + y.shape[first + len(axes):])
    return bind(P.gather, merged, flat, axis=first)


def setitem(x: Tensor, key, value) -> None:
    """x[key] = value, as an in-place functional update (recorded for autograd)."""
    key = _small_int_key(key)
    check_store("__setitem__", value, x.dtype)
    keys = key if isinstance(key, tuple) else (key,)
    np_key = tuple(k._host("assignment through a tensor index (use tj.where inside "
                           "@tj.compile)") if isinstance(k, Tensor) else k for k in keys)
    pos = np.arange(x.numel(), dtype=np.int64).reshape(x.shape)
    try:
        pos = pos[np_key if isinstance(key, tuple) else np_key[0]]
    except IndexError as e:
        raise _err(str(e)) from None
    mask = np.zeros(x.numel(), bool)
    mask[pos.reshape(-1)] = True
    keep = None
    if pos.size > np.count_nonzero(mask):
        _, last = np.unique(pos.reshape(-1)[::-1], return_index=True)
        keep = np.sort(pos.size - 1 - last)

    def update(old: Tensor) -> Tensor:
        v = ops.as_tensor(value, old.dtype, like=old)     # a number goes to old's device
        extra = v.ndim - pos.ndim
        if extra > 0 and all(n == 1 for n in v.shape[:extra]):
            v = ops.reshape(v, v.shape[extra:])    # (leading unit axes drop, as torch's)
        try:
            v = ops.broadcast_to(ops.cast(v, old.dtype), pos.shape)
        except ValueError:
            raise _err(f"cannot assign {ops._fmt(v)} to a selection of shape {list(pos.shape)}",
                       ValueError) from None
        flat = pos.reshape(-1)
        v = ops.reshape(v, (-1,))
        if keep is not None:        # a position named twice takes its last value, as torch
            v = bind(P.gather, v, ops.as_tensor(keep, like=old, const=True), axis=0)
            flat = flat[keep]
        flat_pos = ops.as_tensor(flat, like=old, const=True)
        upd = bind(P.scatter_add, flat_pos, v, axis=0, shape=(x.numel(),))
        m = ops.as_tensor(mask, like=old, const=True)
        return ops.reshape(ops.where(m, upd, ops.reshape(old, (-1,))), x.shape)
    inplace(x, update, "__setitem__")


def _is_basic(key) -> bool:
    keys = key if isinstance(key, tuple) else (key,)
    return all(k is None or k is Ellipsis or isinstance(k, slice) or
               (isinstance(k, (int, np.integer)) and not isinstance(k, (bool, np.bool_)))
               for k in keys)


def getitem_view(x: Tensor, key) -> Tensor:
    """x[key] (Tensor.__getitem__): basic indexing (ints, slices, None, ...) makes a view of x
    (views.py); an integer-array or mask index makes a copy, as torch."""
    # (eager_views.eager_host(x), its first tests without its frame: every x[t] and gate slice)
    if type(x) in SUBCLASSES and type(x._data) is np.ndarray and \
            (not SPECIAL_MODES[0] or eager_views.eager_host(x)):
        if type(key) in SUBCLASSES and type(key._data) is np.ndarray and \
                key._data.dtype.kind == "i" and key._data.dtype.itemsize >= 4 and \
                x._data.ndim:
            # an embedding lookup C[X]: one gather. Its impl is the lookup's one bounds check
            # (eager errors name the op and the user's file:line) and NumPy's take wraps
            # negative indices, as the gradient's scatter-add does: nothing to do here
            out = bind(P.gather, x, key, axis=0)
            return out if out.grad_fn is None or key._data.ndim else \
                rename(out, "SelectBackward0")      # (x[tensor(i)] selects, as torch)
        key = _small_int_key(key)
        out = eager_views.cached_index(x, key, getitem, index_node_name)
        if out is not None:         # (a repeated key: what the lines below derive, cached)
            return out
        np_key = eager_views.numpy_key(x, key)
        if np_key is not None:      # ints and slices: NumPy's view, or one primitive
            out = eager_views.index_view(x, np_key, lambda r: getitem(r, key))
            return out if out.grad_fn is None else _named(out, x, key)
    out = getitem(x, key)
    if _is_basic(key):
        if out is x and x.ndim:         # x[:], x[...]: a new view object, as torch's
            out = bind(P.slice, x, starts=[0] * x.ndim, stops=list(x.shape),
                       steps=[1] * x.ndim)
        out = views.mark(x, out, lambda r: getitem(r, key))
    return out if out.grad_fn is None else _named(out, x, key)


def _named(out: Tensor, x: Tensor, key) -> Tensor:
    """out = x[key] with torch's node name (its indexing takes other steps than ours)."""
    return rename(out, index_node_name(key, x.shape), x)
