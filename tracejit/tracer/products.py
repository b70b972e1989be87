"""Products and diagonals composed from existing primitives, in PyTorch's spelling: `outer`,
`dot`, `mv`, `addmm`, `baddbmm`, `addbmm`, `tensordot`, `kron`, `diagonal`, `diag`, `trace`.

Products are matmuls between reshapes (or broadcast multiplies, which fuse); a diagonal is a
gather of the flattened matrix at iota-computed positions; `diag` of a vector builds the
matrix with a `where` over iota comparisons, so no O(n^2) constant enters a trace.
"""
from __future__ import annotations

import math
import numbers

import numpy as np

from ..ir import dtypes as dt
from ..ir.primitives import P, bind
from . import ops
from .layout import bmm
from .node_names import rename
from .selection import positions
from .tensor_base import TensorBase as Tensor


def _need(op: str, x: Tensor, ndim: int, what: str) -> None:
    if x.ndim != ndim:
        raise ops._err(op, f"{what} must be {ndim}-d, got {ops._fmt(x)}", RuntimeError)


def _times(a: Tensor, b: Tensor) -> Tensor:
    """a * b; of two bools, their logical and (a bool, as torch's outer and kron give)."""
    if a.dtype is dt.bool_ and b.dtype is dt.bool_:
        return ops.logical_and(a, b)
    return ops.mul(a, b)


def outer(a, b) -> Tensor:
    """a[i] * b[j] for two 1-d tensors."""
    a, b = ops.as_tensor(a), ops.as_tensor(b)
    _need("outer", a, 1, "input"), _need("outer", b, 1, "vec2")
    return _times(ops.reshape(a, (a.shape[0], 1)), ops.reshape(b, (1, b.shape[0])))


def dot(a, b) -> Tensor:
    a, b = ops.as_tensor(a), ops.as_tensor(b)
    _need("dot", a, 1, "input"), _need("dot", b, 1, "tensor")
    if a.shape != b.shape:
        raise ops._err("dot", f"inconsistent tensor sizes {ops._fmt(a)} and {ops._fmt(b)}",
                       RuntimeError)
    return ops.matmul(a, b)


def mm(a, b) -> Tensor:
    """The product of two matrices (torch.mm: 2-d operands only, nothing broadcast)."""
    a, b = ops.as_tensor(a), ops.as_tensor(b)
    _need("mm", a, 2, "self"), _need("mm", b, 2, "mat2")
    if a.shape[1] != b.shape[0]:
        raise ops._err("mm", f"{ops._fmt(a)} and {ops._fmt(b)} cannot be multiplied "
                       f"({a.shape[1]} != {b.shape[0]})", RuntimeError)
    return ops.matmul(a, b)


def mv(m, v) -> Tensor:
    m, v = ops.as_tensor(m), ops.as_tensor(v)
    _need("mv", m, 2, "input"), _need("mv", v, 1, "vec")
    return ops.matmul(m, v)


def _scaled_sum(op: str, base, prod: Tensor, beta, alpha) -> Tensor:
    """beta * base + alpha * prod, as torch: with beta == 0 base is not read (a NaN in it is
    ignored), and for an integer product beta and alpha are taken as integers."""
    if not prod.dtype.is_float:
        beta, alpha = int(beta), int(alpha)
    if alpha != 1:
        prod = ops.mul(prod, alpha)
    if beta == 0:
        base_t = ops.as_tensor(base)
        try:
            shape = np.broadcast_shapes(base_t.shape, prod.shape)
        except ValueError:
            raise ops._err(op, f"input {ops._fmt(base_t)} does not broadcast with "
                           f"{ops._fmt(prod)}", RuntimeError) from None
        return ops.broadcast_to(prod, shape)
    return ops.add(ops.mul(base, beta) if beta != 1 else base, prod)


def addmm(input, mat1, mat2, *, beta=1, alpha=1) -> Tensor:  # noqa: A002
    """beta * input + alpha * (mat1 @ mat2)."""
    mat1, mat2 = ops.as_tensor(mat1), ops.as_tensor(mat2)
    _need("addmm", mat1, 2, "mat1"), _need("addmm", mat2, 2, "mat2")
    return rename(_scaled_sum("addmm", input, ops.matmul(mat1, mat2), beta, alpha),
                  "AddmmBackward0")


def baddbmm(input, batch1, batch2, *, beta=1, alpha=1) -> Tensor:  # noqa: A002
    """beta * input + alpha * bmm(batch1, batch2)."""
    return rename(_scaled_sum("baddbmm", input, bmm(batch1, batch2), beta, alpha),
                  "BaddbmmBackward0")


def addbmm(input, batch1, batch2, *, beta=1, alpha=1) -> Tensor:  # noqa: A002
    """beta * input + alpha * (the sum over the batch of batch1[i] @ batch2[i])."""
    return rename(_scaled_sum("addbmm", input, ops.sum(bmm(batch1, batch2), 0), beta, alpha),
                  "AddbmmBackward0")


def tensordot(a, b, dims=2) -> Tensor:
    """Contract the last `dims` dims of a with the first of b, or the listed pairs."""
    a, b = ops.as_tensor(a), ops.as_tensor(b)
    if isinstance(dims, numbers.Integral):
        if dims < 0 or dims > min(a.ndim, b.ndim):
            raise ops._err("tensordot", f"dims {dims} out of range for {ops._fmt(a)} and "
                           f"{ops._fmt(b)}", RuntimeError)
        da, db = list(range(a.ndim - dims, a.ndim)), list(range(dims))
    else:
        da, db = ([dims[0]] if isinstance(dims[0], numbers.Integral) else list(dims[0]),
                  [dims[1]] if isinstance(dims[1], numbers.Integral) else list(dims[1]))
        da = [ops._axes(a, d, None, "tensordot")[0] for d in da]
        db = [ops._axes(b, d, None, "tensordot")[0] for d in db]
    if len(da) != len(db) or any(a.shape[i] != b.shape[j] and 1 not in (a.shape[i], b.shape[j])
                                 for i, j in zip(da, db)):
        raise ops._err("tensordot", f"contracted dims {da} of {ops._fmt(a)} and {db} of "
                       f"{ops._fmt(b)} do not match", RuntimeError)
    # a contracted dim of size 1 broadcasts against the other's size, as torch
    sizes = {i: max(a.shape[i], b.shape[j]) for i, j in zip(da, db)}
    a = ops.broadcast_to(a, tuple(sizes.get(i, n) for i, n in enumerate(a.shape)))
    b = ops.broadcast_to(b, tuple(sizes[da[db.index(j)]] if j in db else n
                                  for j, n in enumerate(b.shape)))
    fa = [i for i in range(a.ndim) if i not in da]
    fb = [j for j in range(b.ndim) if j not in db]
    k = math.prod(a.shape[i] for i in da)
    am = ops.reshape(ops.permute(a, tuple(fa + da)) if a.ndim else a,
                     (math.prod(a.shape[i] for i in fa), k))
    bm = ops.reshape(ops.permute(b, tuple(db + fb)) if b.ndim else b,
                     (k, math.prod(b.shape[j] for j in fb)))
    return ops.reshape(ops.matmul(am, bm),
                       tuple(a.shape[i] for i in fa) + tuple(b.shape[j] for j in fb))


def kron(a, b) -> Tensor:
    """The Kronecker product: blocks a[i...] * b."""
    a, b = ops.as_tensor(a), ops.as_tensor(b)
    n = max(a.ndim, b.ndim)
    sa, sb = (1,) * (n - a.ndim) + a.shape, (1,) * (n - b.ndim) + b.shape
    x = ops.reshape(a, tuple(v for s in sa for v in (s, 1)))
    y = ops.reshape(b, tuple(v for s in sb for v in (1, s)))
    return rename(ops.reshape(_times(x, y), tuple(p * q for p, q in zip(sa, sb))),
                  "UnsafeViewBackward0")


# -- diagonals ----------------------------------------------------------------------------------
def diagonal(x, offset: int = 0, dim1: int = 0, dim2: int = 1) -> Tensor:
    """The diagonal of dims (dim1, dim2), `offset` above the main one, as a new last dim."""
    x = ops.as_tensor(x)
    if x.ndim < 2:
        raise ops._err("diagonal", f"needs at least 2 dims, got {ops._fmt(x)}", RuntimeError)
    d1, d2 = ops._axes(x, dim1, None, "diagonal")[0], ops._axes(x, dim2, None, "diagonal")[0]
    if d1 == d2:
        raise ops._err("diagonal", f"dim1 and dim2 name the same dim {dim1}", RuntimeError)
    rest = [i for i in range(x.ndim) if i not in (d1, d2)]
    y = ops.permute(x, tuple(rest + [d1, d2]))
    n, m = x.shape[d1], x.shape[d2]
    length = max(0, min(n, m - offset) if offset >= 0 else min(n + offset, m))
    start = offset if offset >= 0 else -offset * m
    flat = ops.reshape(y, y.shape[:-2] + (n * m,))
    if length:
        # a strided slice, not a gather: eagerly a NumPy view of x's memory, as torch's
        # diagonal is a view (its .numpy() and in-place writes reach x's storage directly)
        k = len(rest)
        return rename(bind(P.slice, flat, starts=[0] * k + [start],
                           stops=list(flat.shape[:-1]) + [start + (length - 1) * (m + 1) + 1],
                           steps=[1] * k + [m + 1]), "DiagonalBackward0")
    idx = ops.add(ops.mul(positions(x, (length,), 0), m + 1), start)
    return rename(bind(P.gather, flat, idx, axis=len(rest)), "DiagonalBackward0")


_diagonal = diagonal          # diag's argument is called `diagonal`, as in torch


def trace(x) -> Tensor:
    """The sum of the main diagonal of a 2-d tensor (integers sum as int64)."""
    x = ops.as_tensor(x)
    _need("trace", x, 2, "input")
    return ops.sum(diagonal(x))


def diag(x, diagonal: int = 0) -> Tensor:
    """A 1-d x: the square matrix with x on the given diagonal; a 2-d x: that diagonal."""
    x = ops.as_tensor(x)
    if x.ndim == 2:
        return _diagonal(x, diagonal)
    _need("diag", x, 1, "input (1-d or 2-d)")
    k = int(diagonal)
    size = x.shape[0] + abs(k)
    xp = ops.pad(x, [(0, abs(k))])
    # out[r, c] = x[r] on c - r == k >= 0, x[c] on c - r == k < 0
    val = ops.broadcast_to(ops.reshape(xp, (size, 1) if k >= 0 else (1, size)), (size, size))
    on = ops.eq(ops.sub(positions(x, (size, size), 1), positions(x, (size, size), 0)), k)
    zero = ops.as_tensor(False if x.dtype is dt.bool_ else 0, x.dtype, like=x)
    return ops.where(on, val, zero)
