"""torch.linalg's solvers and determinants in PyTorch's spelling, on the primitives of
ir/prims_linalg.py: inv, solve (left=, batch broadcasting, vector right-hand sides), cholesky
(upper=), solve_triangular (upper=, left=, unitriangular=), det, slogdet, logdet, and the
*_ex forms. Batched over leading axes; float32 and float64. Argument checks name the op, the
shapes and the user's line; a singular or non-positive-definite input raises LinAlgError (a
RuntimeError) as torch's does.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..ir.primitives import P, bind, swap_last
from ..ir.prims_linalg import FLOATS, LinAlgError
from . import ops
from .node_names import rename
from .operands import _err, _fmt, as_tensor
from .shape_ops import broadcast_to
from .tensor_base import TensorBase as Tensor


class SlogdetResult(NamedTuple):
    sign: Tensor
    logabsdet: Tensor


class ExResult(NamedTuple):
    """(L or inverse, info) of cholesky_ex and inv_ex: info is 0 per matrix where it
    succeeded (torch names the first field L for cholesky_ex and inverse for inv_ex)."""
    result: Tensor
    info: Tensor

    @property
    def L(self) -> Tensor:
        return self.result

    @property
    def inverse(self) -> Tensor:
        return self.result


def matrices(op: str, a, square: bool = True, name: str = "A") -> Tensor:
    """`a` as a Tensor, checked to be a float32/float64 batch of (square) matrices."""
    a = as_tensor(a)
    if a.ndim < 2:
        raise _err(op, f"{name} must have at least 2 dimensions, got {_fmt(a)}")
    if a.dtype not in FLOATS:
        raise _err(op, f"expected a float32 or float64 tensor, got {_fmt(a)}", TypeError)
    if square and a.shape[-1] != a.shape[-2]:
        raise _err(op, f"{name} must be batches of square matrices, but they are "
                   f"{a.shape[-2]} by {a.shape[-1]} matrices ({_fmt(a)})")
    return a


def mT(x: Tensor) -> Tensor:
    return swap_last(x)


def _batch_together(op: str, a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """A and B broadcast to one batch shape (their trailing two axes kept)."""
    if b.dtype is not a.dtype:
        raise _err(op, f"expected A and B to have the same dtype, got {_fmt(a)} and {_fmt(b)}",
                   TypeError)
    try:
        lead = tuple(np.broadcast_shapes(a.shape[:-2], b.shape[:-2]))
    except ValueError:
        raise _err(op, f"the batch dimensions of A {_fmt(a)} and B {_fmt(b)} are not "
                   f"broadcastable") from None
    return broadcast_to(a, lead + a.shape[-2:]), broadcast_to(b, lead + b.shape[-2:])


def inv(A) -> Tensor:
    """The inverse of each square matrix; LinAlgError if one is singular."""
    a = matrices("linalg.inv", A)
    return rename(bind(P.linalg_inv, a), "LinalgInvExBackward0")


inverse = inv


def solve(A, B, *, left: bool = True) -> Tensor:
    """X with A X = B (X A = B with left=False). B is a batch of vectors when it is 1-D or
    shaped A.shape[:-1]; batch dimensions broadcast."""
    op = "linalg.solve"
    a = matrices(op, A)
    b = as_tensor(B)
    vector = b.ndim == 1 or (b.ndim == a.ndim - 1 and b.shape == a.shape[:-1])
    if vector:
        b = ops.reshape(b, b.shape + (1,))
    if b.ndim < 2:
        raise _err(op, f"B must have at least 1 dimension, got {_fmt(B)}")
    n = a.shape[-1]
    if b.shape[-2 if left else -1] != n:
        side = "A X = B" if left else "X A = B"
        raise _err(op, f"incompatible shapes of A {_fmt(a)} and B {_fmt(as_tensor(B))} "
                   f"for {side}")
    if vector and not left:
        raise _err(op, "vector B is only supported with left=True (as torch)")
    a, b = _batch_together(op, a, b)
    if left:
        x = bind(P.linalg_solve, a, b)
    else:
        x = mT(bind(P.linalg_solve, mT(a), mT(b)))
    x = rename(x, "LinalgSolveExBackward0")
    return ops.reshape(x, x.shape[:-1]) if vector else x


def solve_triangular(A, B, *, upper: bool, left: bool = True,
                     unitriangular: bool = False) -> Tensor:
    """X with A X = B (X A = B with left=False) for triangular A: only A's upper (lower)
    triangle is read, and with unitriangular=True not its diagonal (taken as ones). A zero on
    the diagonal gives inf/nan, as torch (no error)."""
    op = "linalg.solve_triangular"
    a = matrices(op, A)
    b = matrices(op, B, square=False, name="B")
    n = a.shape[-1]
    if b.shape[-2 if left else -1] != n:
        raise _err(op, f"incompatible shapes of A {_fmt(a)} and B {_fmt(b)} for "
                   f"{'A X = B' if left else 'X A = B'}")
    a, b = _batch_together(op, a, b)
    if left:
        x = bind(P.linalg_trisolve, a, b, upper=bool(upper), unit=bool(unitriangular))
    else:
        x = mT(bind(P.linalg_trisolve, mT(a), mT(b), upper=not upper,
                    unit=bool(unitriangular)))
    return rename(x, "LinalgSolveTriangularBackward0")


def cholesky(A, *, upper: bool = False) -> Tensor:
    """L (lower, L L^T = A), or U = L^T with upper=True; only A's lower triangle is read;
    LinAlgError if a matrix is not positive-definite."""
    a = matrices("linalg.cholesky", A)
    lo = rename(bind(P.linalg_cholesky, a), "LinalgCholeskyExBackward0")
    return mT(lo) if upper else lo


def cholesky_legacy(A, upper: bool = False) -> Tensor:
    """torch.cholesky (deprecated in torch for linalg.cholesky): upper is positional too."""
    return cholesky(A, upper=upper)


def _ex(op: str, prim, info_prim, a: Tensor, check_errors: bool) -> tuple[Tensor, Tensor]:
    out = bind(prim, a, ex=not check_errors)
    return out, bind(info_prim, a)


def cholesky_ex(A, *, upper: bool = False, check_errors: bool = False) -> ExResult:
    """(L, info): info is 0 where the matrix is positive-definite, else the order of its
    first leading minor that is not (LAPACK's); L is NaN there. With check_errors=True a
    failure raises LinAlgError instead."""
    op = "linalg.cholesky_ex"
    a = matrices(op, A)
    lo, info = _ex(op, P.linalg_cholesky, P.linalg_cholesky_info, a, check_errors)
    lo = rename(lo, "LinalgCholeskyExBackward0")
    return ExResult(mT(lo) if upper else lo, info)


def inv_ex(A, *, check_errors: bool = False) -> ExResult:
    """(inverse, info): info is 0 where the matrix is invertible, else the 1-based position
    of the first zero pivot of its LU (the inverse is NaN there). With check_errors=True a
    singular matrix raises LinAlgError instead."""
    op = "linalg.inv_ex"
    a = matrices(op, A)
    x, info = _ex(op, P.linalg_inv, P.linalg_inv_info, a, check_errors)
    return ExResult(rename(x, "LinalgInvExBackward0"), info)


def det(A) -> Tensor:
    """The determinant of each square matrix (its gradient is the cofactor matrix, right for
    singular matrices too)."""
    a = matrices("linalg.det", A)
    return rename(bind(P.linalg_det, a), "LinalgDetBackward0")


def slogdet(A) -> SlogdetResult:
    """(sign, log|det|) of each square matrix: sign 0 and -inf for a singular one."""
    a = matrices("linalg.slogdet", A)
    return SlogdetResult(bind(P.linalg_detsign, a),
                         rename(bind(P.linalg_logabsdet, a), "LinalgSlogdetBackward0"))


def logdet(A) -> Tensor:
    """log(det A): nan where det < 0, -inf where it is 0 (torch.logdet)."""
    a = matrices("logdet", A)
    sign, lad = slogdet(a)
    return ops.add(lad, ops.log(sign))


__all__ = ["LinAlgError", "SlogdetResult", "ExResult", "inv", "inverse", "solve",
           "solve_triangular", "cholesky", "cholesky_legacy", "cholesky_ex", "inv_ex", "det",
           "slogdet", "logdet"]
