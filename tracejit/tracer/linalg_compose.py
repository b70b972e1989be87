"""torch.linalg functions composed from the factorizations and matmul (their gradients are
those of the pieces): matrix_power, multi_dot, vecdot, cond, and torch.cholesky_solve /
cholesky_inverse."""
from __future__ import annotations

import math
import operator

import numpy as np

from . import ops
from .linalg_ops import inv, matrices, mT, solve_triangular
from .linalg_spectral import svdvals
from .math_norms import matrix_norm
from .operands import _err, _fmt, as_tensor
from .tensor_base import TensorBase as Tensor


def matrix_power(A, n: int) -> Tensor:
    """A^n for square matrices by repeated squaring; n = 0 gives identities, n < 0 powers of
    the inverse (LinAlgError for a singular A)."""
    op = "linalg.matrix_power"
    a = as_tensor(A)
    if a.ndim < 2 or a.shape[-1] != a.shape[-2]:
        raise _err(op, f"A must be batches of square matrices, got {_fmt(a)}")
    try:
        n = operator.index(n)
    except TypeError:
        raise _err(op, f"n must be an int, got {n!r}", TypeError) from None
    if n == 0:
        eye = np.broadcast_to(np.eye(a.shape[-1], dtype=a.dtype.np), a.shape)
        # (through A, as torch's: the result takes part in autograd, with a zero gradient)
        return ops.add(ops.mul(a, 0), ops.as_tensor(np.ascontiguousarray(eye), like=a))
    if n < 0:
        a, n = inv(a), -n
    out = None
    while n:
        if n & 1:
            out = a if out is None else ops.matmul(out, a)
        n >>= 1
        if n:
            a = ops.matmul(a, a)
    return out


def multi_dot(tensors) -> Tensor:
    """The product of a sequence of matrices; the first may be a 1-D row vector and the last a
    1-D column vector (their axes are dropped from the result)."""
    op = "linalg.multi_dot"
    ts = [as_tensor(t) for t in tensors]
    if len(ts) < 2:
        raise _err(op, f"expected at least 2 tensors but got {len(ts)}")
    first_vec, last_vec = ts[0].ndim == 1, ts[-1].ndim == 1
    if first_vec:
        ts[0] = ops.reshape(ts[0], (1,) + ts[0].shape)
    if last_vec:
        ts[-1] = ops.reshape(ts[-1], ts[-1].shape + (1,))
    for i, t in enumerate(ts):
        if t.ndim != 2:
            raise _err(op, f"tensor {i} must be 2D (1D allowed for the first and last), "
                       f"got {_fmt(t)}")
    out = ts[0]
    for t in ts[1:]:
        if out.shape[-1] != t.shape[0]:
            raise _err(op, f"tensors cannot be multiplied: {_fmt(out)} and {_fmt(t)}")
        out = ops.matmul(out, t)
    if first_vec:
        out = ops.reshape(out, out.shape[1:])
    if last_vec:
        out = ops.reshape(out, out.shape[:-1])
    return out


def vecdot(x, y, *, dim: int = -1) -> Tensor:
    """sum(x * y) along `dim`, broadcasting (real tensors: torch's conj is the identity)."""
    return ops.sum(ops.mul(as_tensor(x), as_tensor(y)), dim)


def cond(A, p=None) -> Tensor:
    """The condition number: the ratio of the extreme singular values for p None, 2, -2;
    norm(A, p) * norm(A^-1, p) for 'fro', 'nuc', 1, -1, inf, -inf (square A)."""
    op = "linalg.cond"
    a = matrices(op, A, square=p not in (None, 2, -2))
    if p in (None, 2, -2):
        s = svdvals(a)
        hi, lo = ops.amax(s, -1), ops.amin(s, -1)
        return ops.div(hi, lo) if p != -2 else ops.div(lo, hi)
    if p not in ("fro", "nuc", 1, -1, math.inf, -math.inf):
        raise _err(op, f"order {p!r} is not supported (None, 2, -2, 'fro', 'nuc', 1, -1, "
                   "inf, -inf)", RuntimeError)
    return ops.mul(matrix_norm(a, p), matrix_norm(inv(a), p))


def cholesky_solve(B, L, upper: bool = False) -> Tensor:
    """X with (L L^T) X = B (U^T U with upper=True), L a Cholesky factor; only its triangle
    is read, so (unlike torch's) the gradient for L is zero outside it."""
    op = "cholesky_solve"
    lo = matrices(op, L, name="L")
    b = matrices(op, B, square=False, name="B")
    lower = mT(lo) if upper else lo                     # A = lower @ lower^T either way
    return solve_triangular(mT(lower), solve_triangular(lower, b, upper=False), upper=True)


def cholesky_inverse(L, upper: bool = False) -> Tensor:
    """(L L^T)^-1 (U^T U with upper=True) from a Cholesky factor."""
    lo = matrices("cholesky_inverse", L, name="L")
    eye = np.broadcast_to(np.eye(lo.shape[-1], dtype=lo.dtype.np), lo.shape)
    return cholesky_solve(ops.as_tensor(np.ascontiguousarray(eye), like=lo), lo, upper)


__all__ = ["matrix_power", "multi_dot", "vecdot", "cond", "cholesky_solve",
           "cholesky_inverse"]
