"""Statistics in torch's spelling, composed from existing ops (so eager, gradients and
tj.compile come with them): `cummax`, `cummin`, `nansum`, `nanmean`, `mode`, `quantile`,
`nanquantile`, `cov`, `corrcoef`.

cummax/cummin are a log-depth (Hillis-Steele) scan of (value, index) pairs with torch's rule:
a later element wins a tie, and a NaN wins and then stays (the index moves to each later NaN);
the values are then read from the input at those indices, so the gradient goes to the
element each running extreme came from, as torch's. `mode` counts each element's equals in
its row inside tj.compile (O(n^2) work per row; eagerly a sort finds them): the most frequent
value, the smallest on a tie, at the index of its last occurrence (torch's too for rows of up
to 16 elements; for longer rows torch's unstable sort returns some occurrence). quantile
sorts (NaN last) and interpolates between the two order statistics around q*(n-1)
(nanquantile: around q*(count of non-NaN - 1)); the gradient flows
through the sort to the elements read.
"""
from __future__ import annotations

import numbers
from typing import NamedTuple

import numpy as np

from ..ir import dtypes as dt
from . import ops
from .gathering import along
from .math_ops import ceil, floor, lerp, round as rnd
from .node_names import rename
from .series_ops import isnan
from .sorting import sort
from .state import STATE
from .stacking import movedim
from .tensor_base import TensorBase as Tensor


class ValuesIndices(NamedTuple):
    """torch.return_types.cummax / cummin / mode: (values, indices)."""
    values: Tensor
    indices: Tensor


def _one_dim(op: str, x: Tensor, dim) -> int:
    if isinstance(dim, bool) or not isinstance(dim, numbers.Integral):
        raise ops._err(op, f"dim must be an int, got {dim!r}", TypeError)
    axes = ops._axes(x, int(dim), None, op)
    return axes[0] if axes else 0


def _positions(shape: tuple, like: Tensor) -> Tensor:
    """int64 0..n-1 along the last axis of shape (a constant)."""
    n = shape[-1]
    pos = np.broadcast_to(np.arange(n, dtype=np.int64), shape)
    return ops.as_tensor(np.ascontiguousarray(pos), like=like, const=True)


# -- cummax, cummin ------------------------------------------------------------------------------
def _cum_extreme(op: str, x, dim, larger: bool) -> ValuesIndices:
    x = ops.as_tensor(x)
    d = _one_dim(op, x, dim)
    if x.ndim == 0:
        return ValuesIndices(ops.add(x, 0) if x.dtype is not dt.bool_ else ops.ne(x, False),
                             ops.as_tensor(0, dt.i64, like=x))
    xm = movedim(x, d, -1)
    n = xm.shape[-1]
    v = ops.stop_gradient(xm)
    if v.dtype is dt.bool_:
        v = ops.cast(v, dt.i64)
    i = _positions(xm.shape, x)
    s = 1
    while s < n:                # prev[k] = the pair s back (or k's own for k < s: a no-op)
        pv = ops.cat([v[..., :s], v[..., :n - s]], -1)
        pi = ops.cat([i[..., :s], i[..., :n - s]], -1)
        better = ops.ge(v, pv) if larger else ops.le(v, pv)
        take = ops.logical_or(better, isnan(v)) if v.dtype.is_float else better
        v, i = ops.where(take, v, pv), ops.where(take, i, pi)
        s *= 2
    vals = along(xm, i, xm.ndim - 1) if n else xm
    name = "CummaxBackward0" if larger else "CumminBackward0"
    return ValuesIndices(rename(movedim(vals, -1, d), name, x), movedim(i, -1, d))


def cummax(input, dim: int) -> ValuesIndices:  # noqa: A002
    """Running maximum along dim and the index it came from (the last on a tie; NaN wins)."""
    return _cum_extreme("cummax", input, dim, True)


def cummin(input, dim: int) -> ValuesIndices:  # noqa: A002
    """Running minimum along dim and the index it came from (the last on a tie; NaN wins)."""
    return _cum_extreme("cummin", input, dim, False)


# -- nansum, nanmean -----------------------------------------------------------------------------
def nansum(input, dim=None, keepdim: bool = False, *, dtype=None) -> Tensor:  # noqa: A002
    """sum treating NaN as zero (their gradient is zero)."""
    x = ops.as_tensor(input)
    if x.dtype.is_float:
        x = ops.where(isnan(x), 0, x)
    return rename(ops.sum(x, dim=dim, keepdim=keepdim, dtype=dtype), "NansumBackward0")


def nanmean(input, dim=None, keepdim: bool = False, *, dtype=None) -> Tensor:  # noqa: A002
    """mean over the non-NaN elements (NaN where there are none)."""
    x = ops.as_tensor(input)
    if dtype is not None:
        x = ops.cast(x, dtype)
    if not x.dtype.is_float:
        raise ops._err("nanmean", f"expected input to have floating point dtype but got "
                       f"{ops._fmt(x)}", RuntimeError)
    count = ops.sum(ops.cast(ops.logical_not(isnan(x)), x.dtype), dim=dim, keepdim=keepdim)
    return ops.div(nansum(x, dim, keepdim), count)


# -- mode ----------------------------------------------------------------------------------------
def _mode_index(a: np.ndarray) -> np.ndarray:
    """Eagerly, by sorting (O(n log n) per row): the index (keepdim) of the last occurrence
    of each row's most frequent value, the smallest of equally frequent ones."""
    rows = a.reshape(-1, a.shape[-1])
    srt = np.sort(rows, -1)
    n = srt.shape[1]
    at = np.broadcast_to(np.arange(n), srt.shape)
    new_run = np.ones(srt.shape, bool)
    new_run[:, 1:] = srt[:, 1:] != srt[:, :-1]
    end_run = np.ones(srt.shape, bool)
    end_run[:, :-1] = new_run[:, 1:]
    start = np.maximum.accumulate(np.where(new_run, at, 0), 1)
    end = np.minimum.accumulate(np.where(end_run, at, n)[:, ::-1], 1)[:, ::-1]
    best = srt[np.arange(len(srt)), np.argmax(end - start, 1)][:, None]
    last = n - 1 - np.argmax((rows == best)[:, ::-1], 1)
    return last.astype(np.int64).reshape(a.shape[:-1] + (1,))


def mode(input, dim: int = -1, keepdim: bool = False) -> ValuesIndices:  # noqa: A002
    """The most frequent value along dim (the smallest of equally frequent ones) and the index
    of its last occurrence."""
    x = ops.as_tensor(input)
    d = _one_dim("mode", x, dim)
    if x.ndim == 0:
        return ValuesIndices(ops.add(x, 0), ops.as_tensor(0, dt.i64, like=x))
    if x.shape[d] == 0:
        raise ops._err("mode", f"expected a non-empty dim {dim} in {ops._fmt(x)}", IndexError)
    xm = movedim(x, d, -1)
    if not STATE.traces and not x._traced:
        idx = ops.as_tensor(_mode_index(xm._host("mode")), like=x, const=True)
    else:
        v = ops.stop_gradient(xm)
        v = ops.cast(v, dt.i64) if v.dtype is dt.bool_ else v
        same = ops.eq(ops.unsqueeze(v, -1), ops.unsqueeze(v, -2))
        counts = ops.sum(ops.cast(same, dt.i64), -1)
        top = ops.eq(counts, ops.amax(counts, -1, keepdims=True))
        best = ops.amin(ops.where(top, v, ops.amax(v, -1, keepdims=True)), -1, keepdims=True)
        pos = _positions(xm.shape, x)
        idx = ops.amax(ops.where(ops.eq(v, best), pos, -1), -1, keepdims=True)
    vals = rename(along(xm, idx, xm.ndim - 1), "ModeBackward0", x)
    vals, idx = movedim(vals, -1, d), movedim(idx, -1, d)
    if not keepdim:
        vals, idx = ops.squeeze(vals, d), ops.squeeze(idx, d)
    return ValuesIndices(vals, idx)


# -- quantile, nanquantile -----------------------------------------------------------------------
_INTERP = ("linear", "lower", "higher", "midpoint", "nearest")


def _quantile(op: str, input, q, dim, keepdim: bool, interpolation: str,  # noqa: A002
              ignore_nan: bool) -> Tensor:
    x = ops.as_tensor(input)
    if x.dtype not in (dt.f32, dt.f64):
        raise ops._err(op, f"input tensor must be either float or double dtype, got "
                       f"{ops._fmt(x)}", RuntimeError)
    if interpolation not in _INTERP:
        raise ops._err(op, f"interpolation must be one of {list(_INTERP)}, got "
                       f"{interpolation!r}", ValueError)
    scalar_q = isinstance(q, numbers.Real) and not isinstance(q, bool)
    qt = ops.as_tensor(q, x.dtype if scalar_q else None, like=x if x._traced else None)
    if qt.dtype is not x.dtype:
        raise ops._err(op, f"q tensor {ops._fmt(qt)} must be of the same dtype as the input "
                       f"{ops._fmt(x)}", RuntimeError)
    if qt.ndim > 1:
        raise ops._err(op, f"q must be a scalar or 1-d tensor, got {ops._fmt(qt)}",
                       RuntimeError)
    if not qt._traced:
        qv = qt._host(op)
        if qv.size and (np.any(qv < 0) or np.any(qv > 1) or np.any(np.isnan(qv))):
            raise ops._err(op, "q values must be in the range [0, 1]", RuntimeError)
    if x.numel() == 0:
        raise ops._err(op, f"input tensor must be non-empty, got {ops._fmt(x)}", RuntimeError)
    scalar_q = qt.ndim == 0
    if dim is None:
        xm, d = ops.reshape(x, (x.numel(),)), None
    else:
        d = _one_dim(op, x, dim)
        xm = movedim(ops.reshape(x, (1,)) if x.ndim == 0 else x, d, -1)
    n = xm.shape[-1]
    srt = sort(xm, -1).values                    # NaN sorts last
    nq = max(qt.numel(), 1)
    q1 = ops.reshape(qt, (nq,))
    lead = xm.shape[:-1]
    if ignore_nan:
        valid = ops.sum(ops.cast(ops.logical_not(isnan(xm)), x.dtype), -1, keepdims=True)
        rank = ops.mul(q1, ops.sub(valid, 1))      # lead + (nq,)
    else:
        rank = ops.broadcast_to(ops.mul(q1, n - 1), lead + (nq,))
    rank = ops.clip(rank, 0, n - 1)
    lo_f, hi_f = floor(rank), ceil(rank)
    if interpolation == "nearest":
        lo_f = hi_f = rnd(rank)
    elif interpolation == "lower":
        hi_f = lo_f
    elif interpolation == "higher":
        lo_f = hi_f
    lo, hi = ops.cast(lo_f, dt.i64), ops.cast(hi_f, dt.i64)
    lo_v, hi_v = along(srt, lo, srt.ndim - 1), along(srt, hi, srt.ndim - 1)
    if interpolation == "linear":
        out = lerp(lo_v, hi_v, ops.sub(rank, lo_f))
    elif interpolation == "midpoint":
        out = lerp(lo_v, hi_v, ops.as_tensor(0.5, x.dtype, like=x))
    else:
        out = lo_v
    if ignore_nan:
        bad = ops.eq(valid, 0)
    else:
        bad = isnan(srt[..., n - 1:])
    out = ops.where(bad, float("nan"), out)
    out = movedim(out, -1, 0)                    # (nq,) + lead
    if keepdim:
        kept = (1,) * x.ndim if d is None else x.shape[:d] + (1,) + x.shape[d + 1:]
        out = ops.reshape(out, (nq,) + kept)
    if scalar_q:
        out = ops.reshape(out, out.shape[1:])
    return out


def quantile(input, q, dim=None, keepdim: bool = False, *,  # noqa: A002
             interpolation: str = "linear") -> Tensor:
    """The q-th quantiles along dim (of all elements when None); NaN where a row holds NaN."""
    return _quantile("quantile", input, q, dim, keepdim, interpolation, False)


def nanquantile(input, q, dim=None, keepdim: bool = False, *,  # noqa: A002
                interpolation: str = "linear") -> Tensor:
    """quantile ignoring NaN (NaN where a row holds nothing else)."""
    return _quantile("nanquantile", input, q, dim, keepdim, interpolation, True)


# -- cov, corrcoef -------------------------------------------------------------------------------
def _weights(op: str, w, n: int, x: Tensor, integral: bool) -> Tensor | None:
    if w is None:
        return None
    w = ops.as_tensor(w, like=x if x._traced else None)
    name = "fweights" if integral else "aweights"
    if w.ndim > 1 or w.numel() != n:
        raise ops._err(op, f"expected {name} to be a 1-d tensor of {n} elements (the number "
                       f"of observations), got {ops._fmt(w)}", RuntimeError)
    if integral and not w.dtype.is_int:
        raise ops._err(op, f"expected fweights to have an integral dtype, got {ops._fmt(w)}",
                       RuntimeError)
    if not integral and not w.dtype.is_float:
        raise ops._err(op, f"expected aweights to have a floating point dtype, got "
                       f"{ops._fmt(w)}", RuntimeError)
    if not w._traced and w.numel() and w._host(op).min() < 0:
        raise ops._err(op, f"{name} cannot be negative", RuntimeError)
    return ops.reshape(w, (n,))


def cov(input, *, correction: int = 1, fweights=None, aweights=None) -> Tensor:  # noqa: A002
    """Covariance of the variables in input's rows (observations in columns; a 1-d input is
    one variable), with frequency and observation weights, as torch.cov."""
    x = ops.as_tensor(input)
    if x.ndim > 2:
        raise ops._err("cov", f"expected input to have two or fewer dimensions but got "
                       f"{ops._fmt(x)}", RuntimeError)
    if x.ndim < 2:
        x = ops.reshape(x, (1, x.numel()))
    if not x.dtype.is_float:
        x = ops.cast(x, dt.f32)
    nobs = x.shape[1]
    fw = _weights("cov", fweights, nobs, x, True)
    aw = _weights("cov", aweights, nobs, x, False)
    w = fw
    if aw is not None:
        w = aw if w is None else ops.mul(ops.cast(w, aw.dtype), aw)
    if w is None:
        w_sum = ops.as_tensor(float(nobs), x.dtype, like=x)
        avg = ops.div(ops.sum(x, 1), nobs) if nobs else ops.mul(ops.sum(x, 1), float("nan"))
    else:
        w = ops.cast(w, x.dtype) if not w.dtype.is_float else w
        w_sum = ops.sum(w)
        avg = ops.div(ops.sum(ops.mul(x, w), 1), w_sum)
    if w is None or aw is None:
        norm = ops.sub(w_sum, correction)
    else:
        norm = ops.sub(w_sum, ops.div(ops.mul(ops.sum(ops.mul(w, aw)), correction), w_sum))
    norm = ops.maximum(norm, ops.as_tensor(0, norm.dtype, like=norm))
    xc = ops.sub(x, ops.unsqueeze(avg, 1))
    xw = xc if w is None else ops.mul(xc, w)
    c = ops.matmul(xc, ops.transpose(xw, 0, 1))
    out = ops.div(c, norm)
    return ops.reshape(out, ()) if out.shape == (1, 1) else out     # torch squeezes


def corrcoef(input) -> Tensor:  # noqa: A002
    """Pearson correlation coefficients of input's rows (clipped to [-1, 1])."""
    c = cov(input)
    if c.ndim == 0:
        return ops.div(c, c)
    d = ops.sqrt(ops.sum(ops.mul(c, ops.as_tensor(np.eye(c.shape[0], dtype=bool), like=c,
                                                  const=True)), 1))
    c = ops.div(ops.div(c, ops.unsqueeze(d, 1)), ops.unsqueeze(d, 0))
    return ops.clip(c, -1, 1)


__all__ = ["cummax", "cummin", "nansum", "nanmean", "mode", "quantile", "nanquantile", "cov",
           "corrcoef"]
