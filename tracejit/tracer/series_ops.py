"""Ops along a dim or between point sets, composed from primitives in torch's spelling:
`logcumsumexp`, `logaddexp`, `diff`, `cross`, `cdist`, and the float tests `isnan`, `isinf`,
`isfinite`.

logcumsumexp is a Hillis-Steele scan of logaddexp: log2(n) steps, each one shifted copy (a
slice and a pad of -inf) combined with the max-shifted, exactly-stable logaddexp, so no
element is exponentiated against a far larger one (the exp-cumsum-log shortcut loses every
entry far below the row's maximum). cdist is the p-norm of the pairwise differences through
norms.norm, whose gradient at a zero distance is 0 (torch's).
"""
from __future__ import annotations

import numbers

import numpy as np

from ..ir import dtypes as dt
from . import ops
from .copies import clone
from .layout import narrow as _narrow
from .node_names import rename
from .norms import norm
from .sorting import _dim
from .tensor_base import TensorBase as Tensor


# -- float tests --------------------------------------------------------------------------------
def isnan(input) -> Tensor:  # noqa: A002
    x = ops.as_tensor(input)
    return ops.ne(x, x) if x.dtype.is_float else ops.ne(ops.mul(x, 0), 0)


def isinf(input) -> Tensor:  # noqa: A002
    x = ops.as_tensor(input)
    return ops.eq(ops.abs(x), np.inf) if x.dtype.is_float else ops.ne(ops.mul(x, 0), 0)


def isfinite(input) -> Tensor:  # noqa: A002
    x = ops.as_tensor(input)
    return ops.lt(ops.abs(x), np.inf) if x.dtype.is_float else ops.eq(ops.mul(x, 0), 0)


# -- logaddexp, logcumsumexp --------------------------------------------------------------------
def logaddexp(input, other) -> Tensor:  # noqa: A002
    """log(exp(a) + exp(b)) without overflow: m + log(exp(a - m) + exp(b - m)), m = max(a, b)
    (m taken as 0 where both are -inf, so the result is -inf, not NaN)."""
    a = ops.as_tensor(input)
    b = ops.as_tensor(other, like=a if a._traced else None)
    if not a.dtype.is_float:
        a = ops.cast(a, dt.f32)
    if not b.dtype.is_float:
        b = ops.cast(b, a.dtype)
    m = ops.stop_gradient(ops.maximum(a, b))
    m = ops.where(ops.lt(ops.abs(m), np.inf), m, 0.0)
    return ops.add(m, ops.log(ops.add(ops.exp(ops.sub(a, m)), ops.exp(ops.sub(b, m)))))


def logcumsumexp(input, dim: int) -> Tensor:  # noqa: A002
    """log(cumsum(exp(x))) along dim, stable for any spread of values."""
    x = ops.as_tensor(input)
    if not x.dtype.is_float:
        raise ops._err("logcumsumexp", f"expects a floating point input, got {ops._fmt(x)}",
                       RuntimeError)
    d = _dim("logcumsumexp", x, dim)
    if x.ndim == 0 or x.shape[d] <= 1:
        return ops.add(x, 0.0) if x.ndim == 0 or x.shape[d] == 1 else x
    n = x.shape[d]
    out = x
    shift = 1
    while shift < n:
        # out[i] <- logaddexp(out[i], out[i - shift]); positions before `shift` add -inf
        head = [(0, 0)] * x.ndim
        head[d] = (shift, 0)
        kept = _narrow(out, d, 0, n - shift)
        prev = ops.pad(kept, head, value=-np.inf)
        out = logaddexp(out, prev)
        shift *= 2
    return rename(out, "LogcumsumexpBackward0", x)


# -- diff, cross --------------------------------------------------------------------------------
def diff(input, n: int = 1, dim: int = -1, prepend=None, append=None) -> Tensor:  # noqa: A002
    """The n-th forward difference along dim (after concatenating prepend and append)."""
    x = ops.as_tensor(input)
    if x.ndim == 0:
        raise ops._err("diff", "expects input to be at least one-dimensional", RuntimeError)
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 0:
        raise ops._err("diff", f"order must be non-negative, got {n!r}", RuntimeError)
    d = _dim("diff", x, dim)
    parts = []
    for extra, name in ((prepend, "prepend"), (append, "append")):
        if extra is None:
            parts.append(None)
            continue
        e = ops.as_tensor(extra, like=x if x._traced else None)
        if e.ndim == 0:
            e = ops.broadcast_to(e, x.shape[:d] + (1,) + x.shape[d + 1:])
        if e.ndim != x.ndim or e.shape[:d] + e.shape[d + 1:] != x.shape[:d] + x.shape[d + 1:]:
            raise ops._err("diff", f"{name} {ops._fmt(e)} must match the input {ops._fmt(x)} "
                           f"outside dim {dim}", RuntimeError)
        parts.append(e)
    x0 = x
    seq = [t for t in (parts[0], x, parts[1]) if t is not None]
    if len(seq) > 1:
        x = ops.cat(seq, d)
    for _ in range(int(n)):
        m = x.shape[d]
        if m == 0:
            break
        a, b = _narrow(x, d, 1, m - 1), _narrow(x, d, 0, m - 1)
        # (bools: torch's difference is logical xor, at every order)
        x = ops.ne(a, b) if x.dtype is dt.bool_ else ops.sub(a, b)
    return clone(x) if x is x0 else x      # (n=0, or an empty dim: a new tensor, as torch)


def cross(input, other, dim=None) -> Tensor:  # noqa: A002
    """The 3-vector cross product along dim (the first dim of size 3 when None, as the
    deprecated torch.cross; torch.linalg.cross uses -1)."""
    a = ops.as_tensor(input)
    b = ops.as_tensor(other, like=a if a._traced else None)
    try:
        shape = tuple(np.broadcast_shapes(a.shape, b.shape))
    except ValueError:
        raise ops._err("cross", f"{ops._fmt(a)} and {ops._fmt(b)} do not broadcast",
                       RuntimeError) from None
    if dim is None:
        dims = [i for i, s in enumerate(shape) if s == 3]
        if not dims:
            raise ops._err("cross", f"no dimension of size 3 in {ops._fmt(a)}", RuntimeError)
        dim = dims[0]
    a, b = ops.broadcast_to(a, shape), ops.broadcast_to(b, shape)
    d = _dim("cross", a, dim)
    if shape[d] != 3:
        raise ops._err("cross", f"inputs {ops._fmt(a)} must have size 3 along dim {dim}",
                       RuntimeError)
    ai = [_narrow(a, d, i, 1) for i in range(3)]
    bi = [_narrow(b, d, i, 1) for i in range(3)]
    c = [ops.sub(ops.mul(ai[(i + 1) % 3], bi[(i + 2) % 3]),
                 ops.mul(ai[(i + 2) % 3], bi[(i + 1) % 3])) for i in range(3)]
    return rename(ops.cat(c, d), "LinalgCrossBackward0")


# -- cdist --------------------------------------------------------------------------------------
def cdist(x1, x2, p: float = 2.0, compute_mode: str = "use_mm_for_euclid_dist_if_necessary"
          ) -> Tensor:
    """Pairwise p-norm distances between the rows of x1 [..., P, M] and x2 [..., R, M]:
    [..., P, R]. Computed from the differences directly (exact; memory P x R x M)."""
    a = ops.as_tensor(x1)
    b = ops.as_tensor(x2, like=a if a._traced else None)
    if a.ndim < 2 or b.ndim < 2:
        raise ops._err("cdist", f"only supports at least 2D tensors, got x1 {ops._fmt(a)}, x2 "
                       f"{ops._fmt(b)}", RuntimeError)
    if a.shape[-1] != b.shape[-1]:
        raise ops._err("cdist", f"x1 {ops._fmt(a)} and x2 {ops._fmt(b)} must have the same "
                       f"number of columns", RuntimeError)
    if not a.dtype.is_float or not b.dtype.is_float:
        raise ops._err("cdist", f"only supports floating-point dtypes, got {ops._fmt(a)}, "
                       f"{ops._fmt(b)}", RuntimeError)
    if isinstance(p, bool) or not isinstance(p, numbers.Real) or p < 0:
        raise ops._err("cdist", f"only supports non-negative p values, got {p!r}",
                       RuntimeError)
    try:
        batch = tuple(np.broadcast_shapes(a.shape[:-2], b.shape[:-2]))
    except ValueError:
        raise ops._err("cdist", f"batch dims of x1 {ops._fmt(a)} and x2 {ops._fmt(b)} do not "
                       f"broadcast", RuntimeError) from None
    diff_ = ops.sub(ops.unsqueeze(a, -2), ops.unsqueeze(b, -3))         # [..., P, R, M]
    if a.shape[-1] == 0:
        zeros = ops.sum(diff_, -1)
        return ops.broadcast_to(zeros, batch + zeros.shape[-2:])
    if p == 0:
        out = ops.sum(ops.cast(ops.ne(diff_, 0), diff_.dtype), -1)
    else:
        out = norm(diff_, float(p), -1)
    return rename(ops.broadcast_to(out, batch + out.shape[-2:]) if out.shape[:-2] != batch
                  else out, "CdistBackward0")


__all__ = ["cdist", "cross", "diff", "isfinite", "isinf", "isnan", "logaddexp",
           "logcumsumexp"]
