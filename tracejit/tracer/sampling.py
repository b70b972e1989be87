"""`randperm` and `multinomial`, drawing from tracejit's Philox generator (tracer/rng.py), so
`tj.manual_seed` makes them reproducible; they work eagerly and inside `tj.compile` (where the
draws are the graph's random op and the sort its argsort). The numbers differ from PyTorch's
(another generator); the distributions are the same.

- randperm(n): the stable argsort of n float64 uniforms (53 random bits each, so a tie, which
  would favour the earlier position, has probability below n^2 / 2^54).
- multinomial(probs, k, replacement=True): inverse CDF: for a uniform u, the number of
  categories whose running total is <= u * total; zero-probability categories are never drawn.
- multinomial(probs, k, replacement=False): PyTorch's own method, the k largest of
  probs / E with E ~ Exp(1) (one exponential per category), which samples without replacement
  in proportion to the weights.
Rows of `probs` need not sum to 1. Eagerly, negative, non-finite or all-zero rows are a
ValueError naming the op, as is asking for more categories than have nonzero weight without
replacement; traced values cannot be checked (as in PyTorch's CUDA kernels, bad rows give
unspecified indices).
"""
from __future__ import annotations

import numpy as np

from ..ir import dtypes as dt
from ..ir.primitives import P, bind
from . import ops
from .rng import rand
from .scans import cumsum
from .tensor_base import TensorBase as Tensor


def randperm(n: int, *, dtype=None, device=None, requires_grad: bool = False) -> Tensor:
    """A random permutation of 0..n-1 (int64 unless `dtype` says otherwise)."""
    n = int(n)
    if n < 0:
        raise ops._err("randperm", f"n must be non-negative, got {n}")
    u = rand(n, dtype=dt.f64, device=device)
    perm = bind(P.argsort, u, axis=0, descending=False)
    return ops.cast(perm, dtype) if dtype is not None else perm


def _check_rows(p: Tensor, k: int, replacement: bool) -> None:
    if p._traced:
        return
    a = p._data
    a = a.get() if hasattr(a, "get") else np.asarray(a)      # a GPU array: one explicit copy
    a = a.astype(np.float64)
    if not np.isfinite(a).all() or (a < 0).any():
        raise ops._err("multinomial", "probabilities must be finite and non-negative")
    if a.size and (a.sum(-1) <= 0).any():
        raise ops._err("multinomial", "every row of probabilities needs a positive sum")
    if not replacement and a.size and ((a > 0).sum(-1) < k).any():
        raise ops._err("multinomial", f"cannot draw {k} samples without replacement: a row "
                       f"has fewer categories of nonzero probability")


def multinomial(probs, num_samples: int, replacement: bool = False, *, generator=None) -> Tensor:
    """int64 category indices drawn from the (unnormalized) weights in the last dimension of a
    1-D or 2-D `probs`: shape (num_samples,) or (rows, num_samples)."""
    if generator is not None:
        raise ops._err("multinomial", "generator= is not supported: tracejit draws from the "
                       "default generator (seed it with tj.manual_seed)", TypeError)
    p = ops.as_tensor(probs)
    if p.ndim not in (1, 2) or not p.dtype.is_float:
        raise ops._err("multinomial", f"probs must be a 1-D or 2-D float tensor, got "
                       f"{ops._fmt(p)}", TypeError if not p.dtype.is_float else ValueError)
    k, n = int(num_samples), p.shape[-1]
    if k <= 0:
        raise ops._err("multinomial", f"num_samples must be positive, got {k}")
    if not replacement and k > n:
        raise ops._err("multinomial", f"cannot draw {k} samples without replacement from "
                       f"{n} categories")
    _check_rows(p, k, replacement)
    single = p.ndim == 1
    rows = ops.reshape(ops.cast(p, dt.f64), (1, n) if single else p.shape)
    rows = ops.stop_gradient(rows)
    r = rows.shape[0]
    dev = None if rows._traced else rows.device
    if replacement:
        total = cumsum(rows, 1)                                   # (r, n)
        u = ops.mul(rand(r, k, 1, dtype=dt.f64, device=dev), total[:, n - 1:n][:, None, :])
        below = ops.le(total[:, None, :], u)                      # (r, k, n)
        idx = ops.sum(ops.cast(below, dt.i64), -1)
        # rounding can leave u past the last running total: take the last category with weight
        last = ops.sum(ops.cast(ops.lt(total, total[:, n - 1:n]), dt.i64), -1, keepdims=True)
        out = ops.minimum(idx, last)
    else:
        e = ops.neg(ops.log(ops.sub(1.0, rand(r, n, dtype=dt.f64, device=dev))))  # Exp(1)
        keys = ops.div(rows, e)
        order = bind(P.argsort, keys, axis=1, descending=True)
        out = order[:, :k]
    return ops.reshape(out, (k,)) if single else out
