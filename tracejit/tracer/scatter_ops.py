"""torch's writes and reads at flat positions, composed from gather/scatter: `take`, `put`,
`index_put`, `masked_scatter` (with their in-place forms), `diagonal_scatter`,
`select_scatter`, `slice_scatter` and `as_strided`.

Each becomes a replacing write (the last write winning where a position repeats, every write
getting its position's gradient, as torch's backward) or gathering.scatter_add (accumulate) on
the flattened input, or a gather from it, so gradients,
compile and fusion are those ops' own. The `*_scatter` ops and `as_strided` know their
positions when called (a NumPy array of row-major positions); `take`/`put`/`index_put` check
their indices now when eager and when a compiled call runs. `as_strided` reads the input as a
row-major (contiguous) buffer: it refuses a non-contiguous view, whose torch storage order
tracejit does not keep, rather than answer differently; `storage_offset` counts from the
tensor's first element (an explicit one on a view is refused: torch counts it from the base's
storage).
"""
from __future__ import annotations

import math
import numbers

import numpy as np

from ..ir import dtypes as dt
from . import checks, gathering, index_ops, ops
from .inplace import inplace
from .masking import nonzero
from .memory_format import is_contiguous
from .node_names import rename
from .scans import cumsum
from .series_ops import isfinite
from .tensor_base import TensorBase as Tensor


def _flat(x: Tensor) -> Tensor:
    return ops.reshape(x, (x.numel(),))


def _checked_flat_index(op: str, idx: Tensor, n: int) -> Tensor:
    """int64 flat positions from idx (negative ones counting from the end), values in [-n, n)
    checked now or when the compiled call runs."""
    if not idx.dtype.is_int:
        raise ops._err(op, f"index must be an integer (int64) tensor, got {ops._fmt(idx)}",
                       IndexError)
    msg = f"{op}: an index is out of range for a tensor of {n} elements"
    if not checks.check_index(idx, -n, n, msg) and idx.numel():
        vals = idx._host(op)
        if vals.min() < -n or vals.max() >= n:
            raise ops._err(op, f"index [{int(vals.min())}, {int(vals.max())}] is out of range "
                           f"for a tensor of {n} elements", IndexError)
    idx = ops.cast(idx, dt.i64)
    return ops.where(ops.lt(idx, 0), ops.add(idx, n), idx)


def _same_dtype(op: str, x: Tensor, s: Tensor) -> None:
    if s.dtype is not x.dtype:
        raise ops._err(op, f"self {ops._fmt(x)} and source {ops._fmt(s)} must have the same "
                       f"dtype", RuntimeError)


def _replace(x: Tensor, d: int, idx: Tensor, s: Tensor) -> Tensor:
    """x with s written at idx along d, the last write winning a position named twice (as
    index_ops.scatter), but every write getting the incoming gradient at its position, as
    torch's put/index_put backward (grad.take(index)) gives it."""
    hit = ops.gt(index_ops._hits(x, d, idx), 0)
    keep = index_ops._last_writes(x.shape, idx, d)
    if keep is not None:
        m = keep if isinstance(keep, Tensor) else ops.as_tensor(keep, like=s, const=True)
        if s.dtype.is_float:
            # a losing write adds s - s: exactly 0 for a finite s (a plain 0 otherwise, where
            # inf - inf would be NaN), yet passes its gradient on
            lose = ops.where(isfinite(s), ops.sub(s, ops.stop_gradient(s)), 0)
            s = ops.where(m, s, lose)
        else:
            s = ops.where(m, s, 0)
    placed = gathering.scatter_add(index_ops._zeros(x), d, idx, s)
    return ops.where(hit, placed, x)


def _write(x_flat: Tensor, pos: Tensor, vals: Tensor, accumulate: bool) -> Tensor:
    """x_flat (1-d) with vals (1-d, as pos) written (or added) at positions pos."""
    if pos.numel() == 0:
        return ops.add(x_flat, ops.mul(ops.sum(vals), 0)) if vals.dtype.is_float else \
            ops.add(x_flat, 0)
    if accumulate:
        return gathering.scatter_add(x_flat, 0, pos, vals)
    return _replace(x_flat, 0, pos, vals)


# -- take, put ----------------------------------------------------------------------------------
def take(input, index) -> Tensor:  # noqa: A002
    """input read as a 1-d tensor at index (index's shape; negative counts from the end)."""
    x = ops.as_tensor(input)
    idx = ops.as_tensor(index, like=x if x._traced else None)
    n = x.numel()
    pos = _checked_flat_index("take", idx, n)
    out = gathering._gather_checked("take", _flat(x), 0, _flat(pos), 0)
    return rename(ops.reshape(out, idx.shape), "TakeBackward0", x)


def put(input, index, source, accumulate: bool = False) -> Tensor:  # noqa: A002
    """input (read as 1-d) with source's elements written at index (added with accumulate)."""
    x = ops.as_tensor(input)
    like = x if x._traced else None
    idx, s = ops.as_tensor(index, like=like), ops.as_tensor(source, like=like)
    _same_dtype("put", x, s)
    if idx.numel() != s.numel():
        raise ops._err("put", f"source {ops._fmt(s)} and index {ops._fmt(idx)} must have the "
                       f"same number of elements", RuntimeError)
    pos = _checked_flat_index("put", idx, x.numel())
    out = _write(_flat(x), _flat(pos), _flat(s), accumulate)
    return rename(ops.reshape(out, x.shape), "PutBackward0", x)


def put_(x: Tensor, index, source, accumulate: bool = False) -> Tensor:
    return inplace(x, lambda old: put(old, index, source, accumulate), "put_")


# -- index_put ----------------------------------------------------------------------------------
def _index_tensors(op: str, x: Tensor, indices) -> list[Tensor]:
    if isinstance(indices, Tensor) or not isinstance(indices, (tuple, list)):
        raise ops._err(op, f"indices must be a tuple of tensors, got {type(indices).__name__}",
                       TypeError)
    out: list[Tensor] = []
    for i in indices:
        if i is None:
            raise ops._err(op, "a None entry in indices is not supported (index those dims "
                           "with an arange)", NotImplementedError)
        t = ops.as_tensor(i, like=x if x._traced else None)
        if t.dtype is dt.bool_ or t.dtype is dt.u8:
            out.extend(nonzero(t, as_tuple=True))     # a mask: eager only, as nonzero
        elif t.dtype.is_int:
            out.append(t)
        else:
            raise ops._err(op, f"tensors used as indices must be long, int, byte or bool "
                           f"tensors, got {ops._fmt(t)}", IndexError)
    if len(out) > max(x.ndim, 1):
        raise ops._err(op, f"too many indices ({len(out)}) for {ops._fmt(x)}", IndexError)
    return out


def index_put(input, indices, values, accumulate: bool = False) -> Tensor:  # noqa: A002
    """x[indices] = values (x[indices] += values with accumulate; repeated positions then
    add up), out of place: indices is a tuple of integer (or bool mask) tensors that index
    the leading dims, broadcast together."""
    x = ops.as_tensor(input)
    idx = _index_tensors("index_put", x, indices)
    v = ops.as_tensor(values, like=x if x._traced else None)
    _same_dtype("index_put", x, v)
    xs = x.shape or (1,)
    k = len(idx)
    try:
        b = tuple(np.broadcast_shapes(*(i.shape for i in idx))) if idx else ()
    except ValueError:
        raise ops._err("index_put", "shape mismatch: indexing tensors could not be broadcast "
                       f"together with shapes {[list(i.shape) for i in idx]}",
                       IndexError) from None
    rest = xs[k:]
    target = b + rest
    try:
        v = ops.broadcast_to(v, target)
    except Exception:
        raise ops._err("index_put", f"shape mismatch: value tensor {ops._fmt(v)} cannot be "
                       f"broadcast to indexing result of shape {list(target)}",
                       RuntimeError) from None
    rows = math.prod(xs[:k])
    row = None
    for j, i in enumerate(idx):
        n = xs[j]
        p = _checked_flat_index("index_put", ops.broadcast_to(i, b), n)
        stride = math.prod(xs[j + 1:k])
        term = ops.mul(p, stride) if stride != 1 else p
        row = term if row is None else ops.add(row, term)
    m, r = math.prod(b), math.prod(rest)
    x2 = ops.reshape(x, (rows, r))
    v2 = ops.reshape(v, (m, r))
    if m == 0 or r == 0:
        out = ops.add(x2, ops.mul(ops.sum(v2), 0)) if x.dtype.is_float else ops.add(x2, 0)
    else:
        pos = ops.broadcast_to(ops.reshape(row, (m, 1)), (m, r))
        out = (gathering.scatter_add(x2, 0, pos, v2) if accumulate
               else _replace(x2, 0, pos, v2))
    return rename(ops.reshape(out, x.shape), "IndexPutBackward0", x)


def index_put_(x: Tensor, indices, values, accumulate: bool = False) -> Tensor:
    return inplace(x, lambda old: index_put(old, indices, values, accumulate), "index_put_")


# -- masked_scatter -----------------------------------------------------------------------------
def masked_scatter(input, mask, source) -> Tensor:  # noqa: A002
    """input with the positions where mask (broadcast to input) is true filled, in row-major
    order, by source's leading elements."""
    x = ops.as_tensor(input)
    like = x if x._traced else None
    m, s = ops.as_tensor(mask, like=like), ops.as_tensor(source, like=like)
    if m.dtype is not dt.bool_:
        raise ops._err("masked_scatter", f"expected a bool mask, got {ops._fmt(m)}",
                       RuntimeError)
    _same_dtype("masked_scatter", x, s)
    try:
        m = ops.broadcast_to(m, x.shape)
    except Exception:
        raise ops._err("masked_scatter", f"mask {ops._fmt(m)} does not broadcast to the input "
                       f"{ops._fmt(x)}", RuntimeError) from None
    mf = _flat(m)
    nsrc = s.numel()
    if mf.numel() == 0:
        return ops.add(x, ops.mul(ops.sum(s), 0)) if x.dtype.is_float else ops.add(x, 0)
    rank = cumsum(ops.cast(mf, dt.i64), 0)
    count = ops.reshape(rank[-1:], (1,))
    msg = ("masked_scatter: the mask has more true elements than source has elements "
           f"({nsrc})")
    if not checks.check_index(count, 0, nsrc + 1, msg, cls=RuntimeError):
        c = int(count._host("masked_scatter")[0])
        if c > nsrc:
            raise ops._err("masked_scatter", f"mask has {c} true elements, more than source's "
                           f"{nsrc} ({ops._fmt(s)})", RuntimeError)
    if nsrc == 0:
        return ops.add(x, 0)
    at = ops.clip(ops.sub(rank, 1), 0, nsrc - 1)
    picked = gathering.along(_flat(s), at, 0)
    out = ops.where(mf, picked, _flat(x))
    return rename(ops.reshape(out, x.shape), "MaskedScatterBackward0", x)


def masked_scatter_(x: Tensor, mask, source) -> Tensor:
    return inplace(x, lambda old: masked_scatter(old, mask, source), "masked_scatter_")


# -- diagonal/select/slice_scatter: positions known when called ---------------------------------
def _scatter_at(op: str, x: Tensor, pos: np.ndarray, src, name: str) -> Tensor:
    s = ops.as_tensor(src, like=x if x._traced else None)
    if s.dtype is not x.dtype:      # (torch casts src here, where put/index_put refuse)
        s = ops.cast(s, x.dtype)
    if tuple(s.shape) != tuple(pos.shape):
        raise ops._err(op, f"expected src to have a size equal to the slice of self: src "
                       f"{ops._fmt(s)}, slice shape {list(pos.shape)}", RuntimeError)
    p = ops.as_tensor(np.ascontiguousarray(pos.reshape(-1), np.int64), like=x, const=True)
    out = _write(_flat(x), p, _flat(s), False)
    return rename(ops.reshape(out, x.shape), name, x)


def _grid(x: Tensor) -> np.ndarray:
    return np.arange(x.numel(), dtype=np.int64).reshape(x.shape)


def diagonal_scatter(input, src, offset: int = 0, dim1: int = 0,  # noqa: A002
                     dim2: int = 1) -> Tensor:
    """input with its diagonal (as torch.diagonal(input, offset, dim1, dim2)) replaced by src."""
    x = ops.as_tensor(input)
    if x.ndim < 2:
        raise ops._err("diagonal_scatter", f"needs at least 2 dims, got {ops._fmt(x)}",
                       RuntimeError)
    d1, d2 = ops._axes(x, dim1, None, "diagonal_scatter")[0], \
        ops._axes(x, dim2, None, "diagonal_scatter")[0]
    if d1 == d2:
        raise ops._err("diagonal_scatter", f"dim1 and dim2 cannot be the same: {dim1}, {dim2}",
                       RuntimeError)
    pos = np.diagonal(_grid(x), offset, d1, d2)
    return _scatter_at("diagonal_scatter", x, pos, src, "DiagonalScatterBackward0")


def select_scatter(input, src, dim: int, index: int) -> Tensor:  # noqa: A002
    """input with input.select(dim, index) replaced by src."""
    x = ops.as_tensor(input)
    if x.ndim == 0:
        raise ops._err("select_scatter", "cannot select from a 0-d tensor", IndexError)
    d = ops._axes(x, dim, None, "select_scatter")[0]
    n = x.shape[d]
    if isinstance(index, bool) or not isinstance(index, numbers.Integral) or \
            not -n <= index < n:
        raise ops._err("select_scatter", f"index {index!r} out of range for dim {dim} of size "
                       f"{n}", IndexError)
    pos = np.take(_grid(x), int(index), axis=d)
    return _scatter_at("select_scatter", x, pos, src, "SelectScatterBackward0")


def slice_scatter(input, src, dim: int = 0, start=None, end=None,  # noqa: A002
                  step: int = 1) -> Tensor:
    """input with input[..., start:end:step, ...] (along dim) replaced by src."""
    x = ops.as_tensor(input)
    if x.ndim == 0:
        raise ops._err("slice_scatter", "cannot slice a 0-d tensor", IndexError)
    if not isinstance(step, numbers.Integral) or step <= 0:
        raise ops._err("slice_scatter", f"slice step must be positive, got {step!r}",
                       RuntimeError)
    d = ops._axes(x, dim, None, "slice_scatter")[0]
    sl = [slice(None)] * x.ndim
    sl[d] = slice(start, end, step)
    pos = _grid(x)[tuple(sl)]
    return _scatter_at("slice_scatter", x, pos, src, "SliceScatterBackward0")


# -- as_strided ---------------------------------------------------------------------------------
def as_strided(input, size, stride, storage_offset=None) -> Tensor:  # noqa: A002
    """torch.as_strided on a contiguous input: out[i0, i1, ...] = flat[offset + sum(ik *
    stride[k])], a copy (not a view); the gradient sums over positions read more than once."""
    x = ops.as_tensor(input)
    size, stride = tuple(int(s) for s in size), tuple(int(s) for s in stride)
    if len(size) != len(stride):
        raise ops._err("as_strided", f"mismatch in length of strides and shape: {list(size)} "
                       f"and {list(stride)}", RuntimeError)
    if any(s < 0 for s in size) or any(s < 0 for s in stride):
        raise ops._err("as_strided", f"negative size or stride: {list(size)}, {list(stride)}",
                       RuntimeError)
    if not is_contiguous(x):
        raise ops._err("as_strided", f"the input {ops._fmt(x)} is a non-contiguous view; "
                       "tracejit reads as_strided's input as a row-major buffer: call "
                       ".contiguous() first", NotImplementedError)
    if storage_offset is not None and getattr(x, "_view", None) is not None:
        raise ops._err("as_strided", f"an explicit storage_offset on a view {ops._fmt(x)}: "
                       "torch counts it from the start of the view's base storage, which "
                       "tracejit does not keep; call .clone() first (the offset then counts "
                       "from its first element)", NotImplementedError)
    off = int(storage_offset or 0)
    pos = np.full(size, off, np.int64)
    for k, (n, st) in enumerate(zip(size, stride)):
        shape = [1] * len(size)
        shape[k] = n
        pos = pos + (np.arange(n, dtype=np.int64) * st).reshape(shape)
    if pos.size and (pos.min() < 0 or pos.max() >= x.numel()):
        raise ops._err("as_strided", f"size {list(size)}, stride {list(stride)}, storage "
                       f"offset {off} read element {int(pos.max())}, out of bounds for "
                       f"{ops._fmt(x)} of {x.numel()} elements", RuntimeError)
    if pos.size == 0:
        zero = ops.as_tensor(np.zeros(size, x.dtype.np), like=x, const=True)
        return ops.add(zero, ops.mul(ops.sum(x), 0)) if x.dtype.is_float else zero
    p = ops.as_tensor(pos.reshape(-1), like=x, const=True)
    out = gathering.along(_flat(x), p, 0)
    return rename(ops.reshape(out, size), "AsStridedBackward0", x)
