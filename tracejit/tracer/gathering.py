"""torch.gather, take_along_dim and scatter_add composed from the gather and scatter_add
primitives over the flattened input, plus meshgrid and ravel.

An index tensor names positions along one dim; every other coordinate is the element's own
(an iota), so the flat position is `sum(iota_a * stride_a) + index * stride_dim` and one
primitive does the work. The gradient is the primitives' own: gather's is a scatter-add, and
scatter_add's (with respect to src) a gather. An index of one element along dim with x's
shape elsewhere is the take_along primitive instead (its gradient a select, no scatter).
"""
from __future__ import annotations

import math

import numpy as np

from ..ir import dtypes as dt
from ..ir.primitives import P, bind
from . import checks, ops
from .copies import unchanged
from .node_names import rename
from .selection import positions
from .state import STATE
from .tensor_base import TensorBase as Tensor


def _index(op: str, x: Tensor, dim, index, negative: bool = False) -> tuple[int, Tensor]:
    """The dim (checked) and the int64 index (same ndim as x), its values checked against
    [0, n) ([-n, n) with `negative`): now when eager, when the compiled call runs otherwise."""
    idx = index if isinstance(index, Tensor) else ops.as_tensor(index, like=x if x._traced
                                                                else None)
    if not idx.dtype.is_int:
        raise ops._err(op, f"index must be an integer tensor, got {ops._fmt(idx)}", RuntimeError)
    if max(idx.ndim, 1) != max(x.ndim, 1) and idx.numel():    # torch lets an empty one be
        raise ops._err(op, f"index {ops._fmt(idx)} must have as many dims as the input "
                       f"{ops._fmt(x)}", RuntimeError)
    d = ops._axes(x, dim, None, op)
    d = d[0] if d else 0
    n = x.shape[d] if x.ndim else 1
    lo = -n if negative else 0
    if not checks.check_index(idx, lo, n, f"{op}: an index is out of bounds for dim {dim} of "
                              f"size {n} in {ops._fmt(x)}", cls=RuntimeError) and idx.numel():
        vals = idx._host(op)
        if vals.min() < lo or vals.max() >= n:
            raise ops._err(op, f"index [{int(vals.min())}, {int(vals.max())}] is out of bounds "
                           f"for dim {dim} of size {n} in {ops._fmt(x)}", RuntimeError)
    return d, ops.cast(idx, dt.i64)


def _flat_positions(x_shape: tuple, idx: Tensor, d: int) -> Tensor:
    """Row-major positions in x of the elements named by idx along d."""
    strides = [math.prod(x_shape[a + 1:]) for a in range(len(x_shape))]
    if type(idx._data) is np.ndarray and not STATE.traces and not STATE.subst:
        # an eager host index (no gradient): one NumPy expression, not an op (and its node
        # checks) per axis
        pos = idx._data.astype(np.int64, copy=False) * strides[d]
        for a in range(len(x_shape)):
            if a != d and idx.shape[a] > 1:
                along_a = [1] * idx.ndim
                along_a[a] = idx.shape[a]
                pos = pos + (np.arange(idx.shape[a], dtype=np.int64) * strides[a]).reshape(along_a)
        return Tensor(np.ascontiguousarray(pos).reshape(idx.numel()))
    pos = ops.mul(idx, strides[d]) if strides[d] != 1 else idx
    for a in range(len(x_shape)):
        if a != d and idx.shape[a] > 1:
            pos = ops.add(pos, ops.mul(positions(idx, idx.shape, a), strides[a]))
    return ops.reshape(pos, (idx.numel(),))


def gather(input, dim: int, index, *, sparse_grad: bool = False) -> Tensor:  # noqa: A002
    """out[..., j, ...] = input[..., index[..., j, ...], ...] along dim (index's shape)."""
    x = ops.as_tensor(input)
    d, idx = _index("gather", x, dim, index)
    return rename(_gather_checked("gather", x, d, idx, dim), "GatherBackward0", x)


def _gather_checked(op: str, x: Tensor, d: int, idx: Tensor, dim) -> Tensor:
    """gather along d with an int64 index whose values _index has checked (in [0, n))."""
    if idx.numel() == 0:
        return ops.reshape(bind(P.gather, ops.reshape(x, (x.numel(),)),
                                ops.reshape(idx, (0,)), axis=0), idx.shape)
    if x.ndim == 0:
        flat = _gather_checked(op, ops.reshape(x, (1,)), 0, ops.reshape(idx, (idx.numel(),)),
                               dim)
        return ops.reshape(flat, idx.shape)
    if any(idx.shape[a] > x.shape[a] for a in range(x.ndim) if a != d):
        raise ops._err(op, f"index {ops._fmt(idx)} is larger than the input "
                       f"{ops._fmt(x)} outside dim {dim}", RuntimeError)
    return along(x, idx, d)


def along(x: Tensor, idx: Tensor, d: int) -> Tensor:
    """torch.gather's read, out[..., j, ...] = x[..., idx[..., j, ...], ...] along d, for an
    int64 idx (x's ndim >= 1, idx no larger than x outside d) whose values the caller has
    checked against [0, n) or made so (argsort's): no run-time check of its own.

    One element per position along d (an NLL's gather(logp, 1, target[:, None]), topk(k=1))
    reads with the take_along primitive, whose gradient is a select against the index that
    fuses into its consumer. More read from the flattened x at the flat positions, in x's own
    layout (no transpose of x for a leading d, nor of the gradient back): the gradient is one
    scatter-add into zeros of x's size, accumulating repeated indices (torch's)."""
    if idx.shape == x.shape[:d] + (1,) + x.shape[d + 1:]:
        one = ops.reshape(idx, x.shape[:d] + x.shape[d + 1:])
        checks.in_bounds(one, x.shape[d])
        return ops.unsqueeze(bind(P.take_along, x, one, axis=d), d)
    flat = _flat_positions(x.shape, idx, d)
    checks.in_bounds(flat, x.numel())
    return ops.reshape(bind(P.gather, ops.reshape(x, (x.numel(),)), flat, axis=0), idx.shape)


def take_along_dim(input, indices, dim=None) -> Tensor:  # noqa: A002
    """gather after broadcasting input and indices against each other outside dim, negative
    indices counting from the end; with dim=None, of the flattened input."""
    x, idx = ops.as_tensor(input), ops.as_tensor(indices)
    if dim is None:         # a gather from the flat input: negative indices are errors (torch)
        x, idx = ops.reshape(x, (x.numel(),)), ops.reshape(idx, (idx.numel(),))
        d, idx = _index("take_along_dim", x, 0, idx)
        return rename(_gather_checked("take_along_dim", x, d, idx, 0), "GatherBackward0")
    if x.ndim != idx.ndim:
        raise ops._err("take_along_dim", f"input {ops._fmt(x)} and indices {ops._fmt(idx)} "
                       f"must have the same number of dims", RuntimeError)
    d = ops._axes(x, dim, None, "take_along_dim")[0]
    try:
        rest = np.broadcast_shapes(tuple(1 if a == d else s for a, s in enumerate(x.shape)),
                                   tuple(1 if a == d else s for a, s in enumerate(idx.shape)))
    except ValueError:
        raise ops._err("take_along_dim", f"input {ops._fmt(x)} and indices {ops._fmt(idx)} "
                       f"do not broadcast outside dim {dim}", RuntimeError) from None
    x = ops.broadcast_to(x, rest[:d] + (x.shape[d],) + rest[d + 1:])
    idx = ops.broadcast_to(idx, rest[:d] + (idx.shape[d],) + rest[d + 1:])
    # the user's indices checked against [-n, n) (torch reads others silently modulo n)
    d, idx = _index("take_along_dim", x, dim, idx, negative=True)
    return rename(_gather_checked("take_along_dim", x, d, _wrap_negative(idx, x.shape[d]), dim),
                  "GatherBackward0", x)


def _wrap_negative(idx: Tensor, n: int) -> Tensor:
    """take_along_dim counts negative indices from the end (gather does not)."""
    return ops.where(ops.lt(idx, 0), ops.add(idx, n), idx)


def scatter_add(input, dim: int, index, src) -> Tensor:  # noqa: A002
    """input with src[..., j, ...] added at index[..., j, ...] along dim (src may be larger
    than index: its leading part is used, as torch)."""
    x = ops.as_tensor(input)
    if isinstance(src, Tensor) and src.dtype is not x.dtype:
        # torch refuses; casting src to x's dtype truncated float sources into an int input
        raise ops._err("scatter_add", f"self {ops._fmt(x)} and src {ops._fmt(src)} must have "
                       f"the same scalar type", RuntimeError)
    if x.dtype is dt.bool_:         # bools add as a logical or (torch's answer)
        return ops.ne(scatter_add(ops.cast(x, dt.i64), dim, index, ops.cast(src, dt.i64)), 0)
    d, idx = _index("scatter_add", x, dim, index)
    s = ops.as_tensor(src, x.dtype, like=x if x._traced else None)
    if s.ndim != idx.ndim or any(idx.shape[a] > s.shape[a] for a in range(idx.ndim)):
        raise ops._err("scatter_add", f"src {ops._fmt(s)} must have the index's dims and be "
                       f"at least as large as index {ops._fmt(idx)}", RuntimeError)
    if x.ndim == 0 or idx.numel() == 0:
        # (no index: a new tensor all the same, x itself would alias the input)
        return unchanged(x, s) if idx.numel() == 0 else ops.add(x, ops.sum(s))
    if any(idx.shape[a] > x.shape[a] for a in range(x.ndim) if a != d):
        raise ops._err("scatter_add", f"index {ops._fmt(idx)} is larger than the input "
                       f"{ops._fmt(x)} outside dim {dim}", RuntimeError)
    if s.shape != idx.shape:
        s = bind(P.slice, s, starts=(0,) * s.ndim, stops=idx.shape, steps=(1,) * s.ndim)
    flat = _flat_positions(x.shape, idx, d)
    upd = bind(P.scatter_add, flat, ops.reshape(s, (idx.numel(),)), axis=0,
               shape=(x.numel(),))
    return ops.add(x, ops.reshape(upd, x.shape))


def meshgrid(*tensors, indexing: str | None = None) -> tuple[Tensor, ...]:
    """Coordinate grids of 1-d (or 0-d) tensors; indexing 'ij' (torch's default) or 'xy'."""
    if len(tensors) == 1 and isinstance(tensors[0], (list, tuple)):
        tensors = tuple(tensors[0])
    xs = [ops.reshape(ops.as_tensor(t), (-1,)) if ops.as_tensor(t).ndim == 0 else
          ops.as_tensor(t) for t in tensors]
    if any(x.ndim != 1 for x in xs):
        raise ops._err("meshgrid", "expects 0-d or 1-d tensors, got "
                       + ", ".join(ops._fmt(x) for x in xs), RuntimeError)
    indexing = indexing or "ij"
    if indexing not in ("ij", "xy"):
        raise ops._err("meshgrid", f"indexing must be 'ij' or 'xy', got {indexing!r}")
    swap = indexing == "xy" and len(xs) >= 2
    order = [1, 0] + list(range(2, len(xs))) if swap else list(range(len(xs)))
    shape = tuple(xs[i].shape[0] for i in order)
    out = []
    for i, x in enumerate(xs):
        at = order.index(i)
        view = tuple(x.shape[0] if a == at else 1 for a in range(len(xs)))
        out.append(ops.broadcast_to(ops.reshape(x, view), shape))
    return tuple(out)


def ravel(x) -> Tensor:
    x = ops.as_tensor(x)
    return ops.reshape(x, (x.numel(),))
