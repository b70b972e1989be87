"""Small torch functions composed from existing ops (eager, gradients and tj.compile come with
them): `isin`, `broadcast_tensors`, `broadcast_shapes`, `block_diag`, `vander`, `trapezoid`
(`trapz`), `cumulative_trapezoid`, `unravel_index`, `combinations`, `renorm`, `inner`, `vdot`,
`chain_matmul`.

isin compares every element with every test element inside tj.compile (O(n*m) work, no
sort); eagerly it is NumPy's isin in the promoted dtype. combinations
gathers by index arrays made when called (itertools), so its gradient is a scatter-add.
"""
from __future__ import annotations

import itertools
import math
import numbers

import numpy as np

from ..ir import dtypes as dt
from . import checks, ops
from .node_names import rename
from .state import STATE
from .products import tensordot
from .creation import _new
from .layout import flip
from .scans import any as any_, cumprod, cumsum
from .stacking import index_select, movedim
from .tensor_base import TensorBase as Tensor


# -- isin ----------------------------------------------------------------------------------------
def isin(elements, test_elements, *, assume_unique: bool = False,
         invert: bool = False) -> Tensor:
    """Whether each element of `elements` is in `test_elements` (elements' shape)."""
    if not isinstance(elements, Tensor) and not isinstance(test_elements, Tensor):
        raise ops._err("isin", "expects at least one tensor argument", TypeError)
    like = elements if isinstance(elements, Tensor) else test_elements
    like = like if like._traced else None
    e, t = ops.as_tensor(elements, like=like), ops.as_tensor(test_elements, like=like)
    if e.dtype is dt.bool_ or t.dtype is dt.bool_:
        raise ops._err("isin", f"unsupported input type bool (torch's too): elements "
                       f"{ops._fmt(e)}, test_elements {ops._fmt(t)}", RuntimeError)
    if not STATE.traces and not e._traced and not t._traced:
        # eager: NumPy's sort-based isin in the promoted dtype, not an n x m comparison
        d = ops.result_dtype(e, t)
        ea, ta = (v._host("isin").astype(d.np, copy=False) for v in (e, t))
        return _new(np.isin(ea, ta, invert=invert), e.device, False)
    flat = ops.reshape(t, (t.numel(),))
    if t.numel() == 0:
        hit = ops.ne(ops.mul(ops.cast(e, dt.i64), 0), 0)
    else:
        hit = any_(ops.eq(ops.unsqueeze(e, -1), flat), -1) if e.ndim else \
            any_(ops.eq(e, flat))
    return ops.logical_not(hit) if invert else hit


# -- broadcasting --------------------------------------------------------------------------------
def broadcast_shapes(*shapes) -> tuple[int, ...]:
    """The shape that tensors of these shapes (ints count as 1-d sizes) broadcast to."""
    norm = [(int(s),) if isinstance(s, numbers.Integral) else tuple(int(d) for d in s)
            for s in shapes]
    try:
        return tuple(int(d) for d in np.broadcast_shapes(*norm))
    except ValueError:
        raise ops._err("broadcast_shapes", f"shape mismatch: objects cannot be broadcast to a "
                       f"single shape: {[list(s) for s in norm]}", RuntimeError) from None


def broadcast_tensors(*tensors) -> tuple[Tensor, ...]:
    """Each tensor broadcast to their common shape."""
    ts = [ops.as_tensor(t) for t in tensors]
    shape = broadcast_shapes(*(t.shape for t in ts))
    return tuple(ops.broadcast_to(t, shape) for t in ts)


# -- block_diag, vander --------------------------------------------------------------------------
def block_diag(*tensors) -> Tensor:
    """The tensors (0-d, 1-d as a row, or 2-d) as the blocks of a block-diagonal matrix."""
    ts = []
    for t in tensors:
        t = ops.as_tensor(t)
        if t.ndim > 2:
            raise ops._err("block_diag", f"input tensors must have 2 or fewer dimensions, got "
                           f"{ops._fmt(t)}", RuntimeError)
        ts.append(ops.reshape(t, (1, 1) if t.ndim == 0 else (1, t.shape[0]) if t.ndim == 1
                              else t.shape))
    if not ts:
        return ops.as_tensor(np.zeros((1, 0), np.float32))
    d = ops.result_dtype(*ts)
    cols = sum(t.shape[1] for t in ts)
    rows, left = [], 0
    for t in ts:
        w = t.shape[1]
        rows.append(ops.pad(ops.cast(t, d), ((0, 0), (left, cols - left - w))))
        left += w
    return ops.cat(rows, 0)


def vander(x, N: int | None = None, increasing: bool = False) -> Tensor:
    """Columns x^(N-1) ... x^0 (x^0 ... x^(N-1) with increasing) of a 1-d x; integer and
    bool inputs give int64."""
    x = ops.as_tensor(x)
    if x.ndim != 1:
        raise ops._err("vander", f"x must be a one-dimensional tensor, got {ops._fmt(x)}",
                       RuntimeError)
    n = x.shape[0] if N is None else int(N)
    if n < 0:
        raise ops._err("vander", f"N must be non-negative, got {N}", RuntimeError)
    if not x.dtype.is_float:
        x = ops.cast(x, dt.i64)
    if n == 0:
        return ops.mul(ops.unsqueeze(x, 1)[:, :0], 1)
    ones = ops.mul(ops.unsqueeze(x, 1), 0)
    ones = ops.add(ones, 1)
    cols = [ones] + ([ops.broadcast_to(ops.unsqueeze(x, 1), (x.shape[0], n - 1))] if n > 1
                     else [])
    out = cumprod(ops.cat(cols, 1), 1)
    return out if increasing else flip(out, (1,))


# -- trapezoid ----------------------------------------------------------------------------------
def _trap_terms(op: str, y: Tensor, x, dx, dim: int) -> tuple[Tensor, int]:
    d = ops._axes(y, dim, None, op)[0] if y.ndim else None
    if d is None:
        raise ops._err(op, f"expected a tensor of at least 1 dim, got {ops._fmt(y)}",
                       IndexError)
    if not y.dtype.is_float:
        y = ops.cast(y, dt.f32)
    n = y.shape[d]
    ym = movedim(y, d, -1)
    mid = ops.div(ops.add(ym[..., 1:], ym[..., :max(n - 1, 0)]), 2)
    if x is not None:
        xt = ops.as_tensor(x, like=y if y._traced else None)
        if xt.ndim == 1:
            if xt.shape[0] != n:
                raise ops._err(op, f"x {ops._fmt(xt)} must have the length {n} of y's dim "
                               f"{dim}", RuntimeError)
            xm = xt
        else:
            xm = movedim(ops.broadcast_to(xt, y.shape) if xt.shape != y.shape else xt, d, -1)
        mid = ops.mul(mid, ops.sub(xm[..., 1:], xm[..., :max(n - 1, 0)]))
    elif dx is not None:
        mid = ops.mul(mid, dx)
    return mid, d


def trapezoid(y, x=None, *, dx=None, dim: int = -1) -> Tensor:
    """The trapezoidal rule's integral of y along dim (sample points x, or spacing dx)."""
    y = ops.as_tensor(y)
    if x is not None and dx is not None:
        raise ops._err("trapezoid", "takes x or dx, not both", TypeError)
    mid, _ = _trap_terms("trapezoid", y, x, dx, dim)
    return ops.sum(mid, -1)


def trapz(y, x=None, *, dx=None, dim: int = -1) -> Tensor:
    """torch.trapz: trapezoidal with x (or dx) as the second positional argument."""
    if x is not None and not isinstance(x, Tensor) and isinstance(x, numbers.Number):
        x, dx = None, x
    return trapezoid(y, x, dx=dx, dim=dim)


def cumulative_trapezoid(y, x=None, *, dx=None, dim: int = -1) -> Tensor:
    """The running trapezoidal integral of y along dim (one element fewer along it)."""
    y = ops.as_tensor(y)
    if x is not None and dx is not None:
        raise ops._err("cumulative_trapezoid", "takes x or dx, not both", TypeError)
    mid, d = _trap_terms("cumulative_trapezoid", y, x, dx, dim)
    return movedim(cumsum(mid, -1), -1, d)


# -- unravel_index, combinations ----------------------------------------------------------------
def unravel_index(indices, shape) -> tuple[Tensor, ...]:
    """The coordinates in `shape` of the flat (row-major) indices, one int64 tensor per dim."""
    idx = ops.as_tensor(indices)
    if not idx.dtype.is_int or idx.dtype is dt.bool_:
        raise ops._err("unravel_index", f"expected 'indices' to be an integer tensor, got "
                       f"{ops._fmt(idx)}", TypeError)
    shape = (int(shape),) if isinstance(shape, numbers.Integral) else tuple(int(s)
                                                                             for s in shape)
    if any(s < 0 for s in shape):
        raise ops._err("unravel_index", f"'shape' cannot have negative values, got "
                       f"{list(shape)}", ValueError)
    total = math.prod(shape)
    msg = f"unravel_index: an index is out of bounds for shape {list(shape)}"
    if not checks.check_index(idx, -total, total, msg) and idx.numel():
        vals = idx._host("unravel_index")
        if vals.min() < -total or vals.max() >= total:
            raise ops._err("unravel_index", f"index [{int(vals.min())}, {int(vals.max())}] is "
                           f"out of bounds for shape {list(shape)}", IndexError)
    idx = ops.cast(idx, dt.i64)
    idx = ops.where(ops.lt(idx, 0), ops.add(idx, total), idx)
    out = []
    for k in range(len(shape)):
        inner = math.prod(shape[k + 1:])
        q = ops.floor_divide(idx, inner) if inner != 1 else idx
        out.append(ops.remainder(q, shape[k]) if k else q)
    return tuple(out)


def combinations(input, r: int = 2, with_replacement: bool = False) -> Tensor:  # noqa: A002
    """The length-r combinations of a 1-d tensor's elements, one per row (itertools' order)."""
    x = ops.as_tensor(input)
    if x.ndim != 1:
        raise ops._err("combinations", f"expect a 1D vector, but got {ops._fmt(x)}",
                       RuntimeError)
    if isinstance(r, bool) or not isinstance(r, numbers.Integral) or r < 0:
        raise ops._err("combinations", f"r must be non-negative, got {r!r}", RuntimeError)
    if r == 0:
        return ops.mul(x[:0], 1)
    gen = itertools.combinations_with_replacement if with_replacement else \
        itertools.combinations
    rows = np.array(list(gen(range(x.shape[0]), r)), np.int64).reshape(-1, r)
    pos = ops.as_tensor(rows.reshape(-1), like=x, const=True)
    return rename(ops.reshape(index_select(x, 0, pos), rows.shape), "IndexBackward0", x)


# -- renorm -------------------------------------------------------------------------------------
def renorm(input, p, dim: int, maxnorm) -> Tensor:  # noqa: A002
    """Each slice along dim whose p-norm exceeds maxnorm, scaled to norm maxnorm
    (maxnorm / (norm + 1e-7), torch's factor)."""
    x = ops.as_tensor(input)
    if not x.dtype.is_float:
        raise ops._err("renorm", f"expected a floating point input, got {ops._fmt(x)}",
                       RuntimeError)
    if isinstance(p, bool) or not isinstance(p, numbers.Real) or p <= 0:
        raise ops._err("renorm", f"non-positive norm not supported, got p={p!r}", RuntimeError)
    if maxnorm < 0:
        raise ops._err("renorm", f"non-negative maxnorm expected, got {maxnorm}", RuntimeError)
    if x.ndim <= 1:
        raise ops._err("renorm", f"input needs at least 2 dimensions, got {ops._fmt(x)}",
                       RuntimeError)
    d = ops._axes(x, dim, None, "renorm")[0]
    others = tuple(a for a in range(x.ndim) if a != d)
    a = ops.abs(x)
    if p == math.inf:
        norm = ops.amax(a, others, keepdims=True)
    elif p == 1:
        norm = ops.sum(a, others, keepdims=True)
    else:
        norm = ops.pow(ops.sum(ops.pow(a, p), others, keepdims=True), 1.0 / p)
    factor = ops.where(ops.gt(norm, maxnorm), ops.div(maxnorm, ops.add(norm, 1e-7)), 1.0)
    return rename(ops.mul(x, ops.cast(factor, x.dtype)), "RenormBackward0", x)


def renorm_(x: Tensor, p, dim: int, maxnorm) -> Tensor:
    from .inplace import inplace
    return inplace(x, lambda old: renorm(old, p, dim, maxnorm), "renorm_")


# -- inner, vdot, chain_matmul -------------------------------------------------------------------
def inner(input, other) -> Tensor:  # noqa: A002
    """Sum over the last dims of both (a product when one is 0-d)."""
    a, b = ops.as_tensor(input), ops.as_tensor(other)
    if a.ndim == 0 or b.ndim == 0:
        return ops.mul(a, b)
    if a.shape[-1] != b.shape[-1]:
        raise ops._err("inner", f"the last dims must match: {ops._fmt(a)} and {ops._fmt(b)}",
                       RuntimeError)
    return tensordot(a, b, dims=([a.ndim - 1], [b.ndim - 1]))


def vdot(input, other) -> Tensor:  # noqa: A002
    """The dot product of two 1-d tensors of one dtype (no conjugation: real dtypes only)."""
    a, b = ops.as_tensor(input), ops.as_tensor(other)
    if a.ndim != 1 or b.ndim != 1 or a.shape != b.shape:
        raise ops._err("vdot", f"expected two 1-d tensors of one size, got {ops._fmt(a)} and "
                       f"{ops._fmt(b)}", RuntimeError)
    if a.dtype is not b.dtype:
        raise ops._err("vdot", f"expected both vectors to have the same dtype, got "
                       f"{ops._fmt(a)} and {ops._fmt(b)}", RuntimeError)
    return ops.sum(ops.mul(a, b))


def chain_matmul(*matrices) -> Tensor:
    """The product of 2-d matrices, left to right (torch's deprecated chain_matmul)."""
    if not matrices:
        raise ops._err("chain_matmul", "expected one or more matrices", RuntimeError)
    ms = [ops.as_tensor(m) for m in matrices]
    for m in ms:
        if m.ndim != 2:
            raise ops._err("chain_matmul", f"tensors must be 2-D, got {ops._fmt(m)}",
                           RuntimeError)
    out = ms[0] if len(ms) > 1 else ops.add(ms[0], 0)
    for m in ms[1:]:
        out = ops.matmul(out, m)
    return out
