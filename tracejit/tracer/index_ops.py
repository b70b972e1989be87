"""torch's index writes composed from the scatter_add and gather primitives: `index_add`,
`scatter` (of a tensor or a value), `scatter_reduce` ('sum', 'mean', 'amax', 'amin', 'prod')
with their in-place forms, and `masked_select`.

Each is a sum of scatter-adds and `where`s, so gradients, compile and fusion are the
primitives' own. A position some index names is "hit": `scatter` replaces it, so the gradient
to the input is zero there. Where an index names one position twice, torch leaves `scatter`'s
answer undefined (its CPU kernel keeps the last write); the last write wins here too, eagerly
(from the index's values) and inside a compiled function (a stable sort of the positions at run
time, see _last_writes_traced).
scatter_reduce's 'amax'/'amin'/'prod' have no scatter primitive under them: they run eagerly
(NumPy's ufunc.at) with torch's gradient (split evenly among the elements equal to the result
for amax/amin, the product of the others for prod) and raise a clear error inside a trace.
`masked_select`'s result has a data-dependent size: eager only, as `nonzero`.
"""
from __future__ import annotations

import numbers

import numpy as np

from ..ir import dtypes as dt
from . import checks, gathering, ops, sorting
from .copies import clone, unchanged
from .inplace import inplace
from .node_names import rename
from .state import STATE
from .tensor_base import TensorBase as Tensor


def _same_dtype(op: str, x: Tensor, s: Tensor) -> None:
    if s.dtype is not x.dtype:
        raise ops._err(op, f"self {ops._fmt(x)} and source {ops._fmt(s)} must have the same "
                       f"scalar type", RuntimeError)


# -- index_add ----------------------------------------------------------------------------------
def index_add(input, dim: int, index, source, *, alpha=1) -> Tensor:  # noqa: A002
    """input with alpha * source[..., j, ...] added at index[j] along dim (repeated indices
    accumulate); the gradient to source is the incoming gradient read at index."""
    x = ops.as_tensor(input)
    s = ops.as_tensor(source, like=x if x._traced else None)
    idx = ops.as_tensor(index, like=x if x._traced else None)
    _same_dtype("index_add", x, s)
    if not idx.dtype.is_int or idx.ndim > 1:
        raise ops._err("index_add", f"index must be a 0-d or 1-d integer tensor, got "
                       f"{ops._fmt(idx)}", RuntimeError)
    d = ops._axes(x, dim, None, "index_add")
    d = d[0] if d else 0
    xs, ss = (x.shape or (1,)), (s.shape or (1,))
    m = idx.numel()
    if len(xs) != len(ss) or ss[d] != m or any(a != b for i, (a, b) in
                                               enumerate(zip(xs, ss)) if i != d):
        raise ops._err("index_add", f"source {ops._fmt(s)} must have the input's shape "
                       f"{ops._fmt(x)} with {m} (the index's length) along dim {dim}",
                       RuntimeError)
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Number):
        raise ops._err("index_add", f"alpha must be a number, got {alpha!r}", TypeError)
    checks.rows_in_range(idx, xs[d], "index_add", f"dim {dim} of size {xs[d]}")
    x1 = ops.reshape(x, xs)
    s1 = ops.reshape(s, ss)
    logical = x.dtype is dt.bool_
    if alpha != 1 and not logical:
        s1 = ops.mul(s1, alpha)
    view = [1] * len(xs)
    view[d] = m
    idx_b = ops.broadcast_to(ops.reshape(idx, tuple(view)), ss)
    if s1.numel() == 0:
        # nothing added; source still gets its (empty) zero gradient, as torch's
        out = unchanged(x1, s1)
    elif logical:
        # torch adds bools as a logical or (alpha counts as a bool): counts of the Trues
        if not alpha:
            s1 = ops.logical_and(s1, False)
        counts = gathering.scatter_add(ops.cast(x1, dt.i64), d, idx_b, ops.cast(s1, dt.i64))
        out = ops.ne(counts, 0)
    else:
        out = gathering.scatter_add(x1, d, idx_b, s1)
    return rename(ops.reshape(out, x.shape), "IndexAddBackward0", x)


def index_add_(x: Tensor, dim: int, index, source, *, alpha=1) -> Tensor:
    return inplace(x, lambda old: index_add(old, dim, index, source, alpha=alpha), "index_add_")


# -- scatter -------------------------------------------------------------------------------------
def _zeros(x: Tensor, dtype=None) -> Tensor:
    """Zeros of x's shape, with no gradient (x * 0 is NaN where x is inf or NaN: scatter then
    missed the hits on such positions and kept them)."""
    return ops.broadcast_to(ops.as_tensor(0, dtype or x.dtype, like=x), x.shape)


def _hits(x: Tensor, d: int, idx: Tensor) -> Tensor:
    """How many index entries name each position of x (float64 counts; exact)."""
    ones = ops.add(ops.mul(ops.cast(idx, dt.f64), 0), 1.0)
    return gathering.scatter_add(_zeros(x, dt.f64), d, idx, ones)


def _last_writes(x_shape: tuple, idx: Tensor, d: int) -> np.ndarray | Tensor | None:
    """A bool mask over idx of the entries whose write wins (the last one naming each
    position, torch's CPU kernel's). For an eager host index, a NumPy mask, or None when no
    position is named twice; for a traced one, a traced mask (see _last_writes_traced)."""
    if STATE.traces or idx._traced:
        return _last_writes_traced(x_shape, idx, d)
    pos = gathering._flat_positions(x_shape, idx, d)._host("scatter")
    rev = pos[::-1]
    _, first = np.unique(rev, return_index=True)
    if first.shape[0] == pos.shape[0]:
        return None
    keep = np.zeros(pos.shape[0], bool)
    keep[pos.shape[0] - 1 - first] = True
    return keep.reshape(idx.shape)


def _last_writes_traced(x_shape: tuple, idx: Tensor, d: int) -> Tensor:
    """The last-write mask from index values known only at run time: a stable sort of the
    entries' flat positions puts each position's writers together in order, and an entry wins
    where the next sorted entry names another position; the sorted mask is scattered back to
    the entries' own places (a permutation: no two land together)."""
    pos = gathering._flat_positions(x_shape, idx, d)
    n = pos.shape[0]
    order = sorting._argsort("scatter", pos, 0, False)
    spos = gathering.gather(pos, 0, order)
    nxt = ops.cat([spos[1:], ops.add(ops.mul(spos[:1], 0), -1)], 0)
    last = ops.cast(ops.ne(spos, nxt), dt.i64)
    keep = gathering.scatter_add(ops.mul(last, 0), 0, order, last)
    return ops.reshape(ops.gt(keep, 0), idx.shape) if n else ops.reshape(keep, idx.shape)


def _src(op: str, x: Tensor, idx: Tensor, src) -> Tensor:
    s = ops.as_tensor(src, like=x if x._traced else None)
    _same_dtype(op, x, s)
    if s.ndim != idx.ndim or any(idx.shape[a] > s.shape[a] for a in range(idx.ndim)):
        raise ops._err(op, f"src {ops._fmt(s)} must have the index's dims and be at least as "
                       f"large as index {ops._fmt(idx)}", RuntimeError)
    if s.shape != idx.shape:
        s = s[tuple(slice(0, n) for n in idx.shape)]
    return s


def scatter(input, dim: int, index, src=None, *, value=None, reduce=None) -> Tensor:  # noqa: A002
    """input with src[..., j, ...] (or the number `value`) written at index[..., j, ...] along
    dim; reduce='add'/'multiply' accumulate instead (torch's older spelling)."""
    x = ops.as_tensor(input)
    if src is not None and value is not None:
        raise ops._err("scatter", "takes src or value, not both", TypeError)
    if src is None and value is None:
        raise ops._err("scatter", "needs src (a tensor) or value (a number)", TypeError)
    if src is not None and not isinstance(src, Tensor) and isinstance(src, numbers.Number):
        src, value = None, src
    if reduce is not None:
        if reduce not in ("add", "multiply"):
            raise ops._err("scatter", f"reduce argument must be either add or multiply, got "
                           f"{reduce!r}", RuntimeError)
        d, idx = gathering._index("scatter", x, dim, index)
        s = (ops.broadcast_to(ops.as_tensor(value, x.dtype, like=x), idx.shape)
             if src is None else _src("scatter", x, idx, src))
        return scatter_reduce(x, dim, idx, s, "sum" if reduce == "add" else "prod")
    d, idx = gathering._index("scatter", x, dim, index)
    if idx.numel() == 0:        # a new tensor, as always (x itself would alias the input)
        if src is None:
            return clone(x)
        s = ops.as_tensor(src)
        _same_dtype("scatter", x, s)    # (torch checks the dtypes of an empty index's src too)
        return unchanged(x, s)
    if x.ndim == 0:
        x1 = ops.reshape(x, (1,))
        i1 = ops.reshape(idx, (1,))
        s1 = None if src is None else ops.reshape(ops.as_tensor(src), (-1,))[:1]
        return ops.reshape(scatter(x1, 0, i1, s1, value=value), ())
    hits = _hits(x, d, idx)
    hit = ops.gt(hits, 0)
    if src is None:
        if isinstance(value, Tensor) or not isinstance(value, (numbers.Number, np.bool_)):
            raise ops._err("scatter", f"value must be a number, got {value!r}", TypeError)
        return rename(ops.where(hit, ops.as_tensor(value, x.dtype, like=x), x),
                      "ScatterBackward1", x)
    s = _src("scatter", x, idx, src)
    keep = _last_writes(x.shape, idx, d)
    if keep is not None:        # (a literal 0, not s * 0: a losing inf would add a NaN)
        m = keep if isinstance(keep, Tensor) else ops.as_tensor(keep, like=s, const=True)
        s = ops.where(m, s, 0)
    placed = gathering.scatter_add(_zeros(x), d, idx, s)
    return rename(ops.where(hit, placed, x), "ScatterBackward0", x)


def scatter_(x: Tensor, dim: int, index, src=None, *, value=None, reduce=None) -> Tensor:
    return inplace(x, lambda old: scatter(old, dim, index, src, value=value, reduce=reduce),
                   "scatter_")


def scatter_add_(x: Tensor, dim: int, index, src) -> Tensor:
    return inplace(x, lambda old: gathering.scatter_add(old, dim, index, src), "scatter_add_")


# -- scatter_reduce ------------------------------------------------------------------------------
_REDUCES = ("sum", "prod", "mean", "amax", "amin")


def scatter_reduce(input, dim: int, index, src, reduce: str, *,  # noqa: A002
                   include_self: bool = True) -> Tensor:
    """torch.scatter_reduce: each position named by index reduced over src's entries for it
    (and its own value with include_self); positions no index names keep input's value."""
    x = ops.as_tensor(input)
    if reduce not in _REDUCES:
        raise ops._err("scatter_reduce", f"reduce argument must be one of {list(_REDUCES)}, "
                       f"got {reduce!r}", RuntimeError)
    d, idx = gathering._index("scatter_reduce", x, dim, index)
    s = _src("scatter_reduce", x, idx, src)
    if idx.numel() == 0:
        return unchanged(x, s)
    if x.ndim == 0:
        return ops.reshape(scatter_reduce(ops.reshape(x, (1,)), 0, ops.reshape(idx, (1,)),
                                          ops.reshape(s, (1,)), reduce,
                                          include_self=include_self), ())
    hits = _hits(x, d, idx)
    hit = ops.gt(hits, 0)
    base = x if include_self else ops.where(hit, _zeros(x), x)
    if reduce in ("sum", "mean"):
        tot = gathering.scatter_add(base, d, idx, s)
        if reduce == "sum":
            return rename(tot, "ScatterReduceBackward0", x)
        cnt = ops.cast(ops.add(hits, 1.0 if include_self else 0.0), x.dtype)
        cnt = ops.where(hit, cnt, ops.add(ops.mul(cnt, 0), 1))
        mean = ops.div(tot, cnt) if x.dtype.is_float else ops.floor_divide(tot, cnt)
        return rename(mean, "ScatterReduceBackward0", x)
    return _eager_reduce(x, d, idx, s, reduce, include_self, hit)


_UFUNC = {"amax": np.maximum, "amin": np.minimum, "prod": np.multiply}


def _eager_reduce(x: Tensor, d: int, idx: Tensor, s: Tensor, reduce: str, include_self: bool,
                  hit: Tensor) -> Tensor:
    """amax/amin/prod computed by NumPy's ufunc.at; the gradient is composed so that the
    result's value is exactly NumPy's: r + (y - stop_gradient(y)) with y a differentiable
    expression whose gradient is torch's."""
    what = (f"scatter_reduce(reduce={reduce!r}) (no compiled form: it runs eagerly only; use "
            f"'sum' or 'mean' inside tj.compile)")
    xa, ia, sa = x._host(what), idx._host(what), s._host(what)
    pos = gathering._flat_positions(x.shape, Tensor(ia), d)._host(what)
    flat = xa.reshape(-1).copy()
    if not include_self:
        hit_np = np.zeros(flat.shape[0], bool)
        hit_np[pos] = True
        fill = {"amax": -np.inf, "amin": np.inf, "prod": 1}[reduce]
        if x.dtype.is_int:
            info = np.iinfo(flat.dtype)
            fill = {"amax": info.min, "amin": info.max, "prod": 1}[reduce]
        flat[hit_np] = fill
    vals = sa.reshape(-1)
    _UFUNC[reduce].at(flat, pos, vals)
    if x.dtype.is_float:        # NaN wins amax/amin (torch propagates it)
        nan = np.zeros(flat.shape[0], bool)
        np.logical_or.at(nan, pos, np.isnan(vals))
        if include_self:
            nan |= np.isnan(xa.reshape(-1))
        if reduce != "prod":
            flat[nan] = np.nan
    r = flat.reshape(x.shape)
    out = ops.as_tensor(r, like=x, const=True)
    if not (x._requires_grad or s._requires_grad) or not x.dtype.is_float:
        return out
    r_at = gathering.gather(out, d, idx)
    if reduce == "prod":
        # d r / d s_j = r / s_j (torch's rule where s_j != 0; zeros are not special-cased)
        ys = ops.mul(s, ops.stop_gradient(ops.div(r_at, s)))
        y = gathering.scatter_add(ops.mul(ops.stop_gradient(x), 0), d, idx, ys)
        if include_self:
            y = ops.add(y, ops.where(hit, ops.mul(x, ops.stop_gradient(ops.div(out, x))),
                                     ops.mul(x, 0)))
    else:
        eq_s = ops.cast(ops.eq(s, r_at), x.dtype)
        eq_x = ops.cast(ops.logical_and(ops.eq(x, out), hit), x.dtype) if include_self else \
            ops.mul(ops.stop_gradient(x), 0)
        ties = gathering.scatter_add(ops.stop_gradient(eq_x), d, idx, eq_s)
        ties = ops.stop_gradient(ops.where(ops.gt(ties, 0), ties, ops.add(ops.mul(ties, 0), 1)))
        y = gathering.scatter_add(ops.mul(x, ops.div(eq_x, ties)), d, idx,
                                  ops.mul(s, ops.div(eq_s, gathering.gather(ties, d, idx))))
    y = ops.where(hit, y, x)
    keep = ops.where(hit, ops.add(out, ops.sub(y, ops.stop_gradient(y))), x)
    return rename(keep, "ScatterReduceBackward0", x)


def scatter_reduce_(x: Tensor, dim: int, index, src, reduce: str, *,
                    include_self: bool = True) -> Tensor:
    return inplace(x, lambda old: scatter_reduce(old, dim, index, src, reduce,
                                                 include_self=include_self), "scatter_reduce_")


# -- masked_select ------------------------------------------------------------------------------
def masked_select(input, mask) -> Tensor:  # noqa: A002
    """The elements of input (broadcast with mask) where the bool mask is True, as a 1-d
    tensor in row-major order. Eager only: the result's length depends on the mask's data."""
    x = ops.as_tensor(input)
    m = ops.as_tensor(mask, like=x if x._traced else None)
    if m.dtype is not dt.bool_:
        raise ops._err("masked_select", f"expected a bool mask, got {ops._fmt(m)}",
                       RuntimeError)
    try:
        shape = tuple(np.broadcast_shapes(x.shape, m.shape))
    except ValueError:
        raise ops._err("masked_select", f"mask {ops._fmt(m)} does not broadcast with "
                       f"{ops._fmt(x)}", RuntimeError) from None
    arr = m._host("masked_select (the result's length depends on the mask's data; use "
                  "tj.where(mask, x, 0) for a fixed shape)")
    pos = np.flatnonzero(np.broadcast_to(arr, shape)).astype(np.int64)
    flat = ops.reshape(ops.broadcast_to(x, shape), (int(np.prod(shape, dtype=np.int64)),))
    return rename(gathering._gather_checked("masked_select", flat, 0,
                                            ops.as_tensor(pos, like=x, const=True), 0),
                  "MaskedSelectBackward0", x)
