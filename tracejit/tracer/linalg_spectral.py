"""torch.linalg's spectral functions in PyTorch's spelling, on ir/prims_linalg_spectral.py:
qr (mode reduced/complete/r), eigh and eigvalsh (UPLO), svd (full_matrices) and svdvals,
pinv (and torch.pinverse), lstsq (through the pseudo-inverse) and matrix_rank."""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..ir.primitives import P, bind
from . import ops
from .linalg_ops import matrices
from .node_names import rename
from .operands import _err, _fmt, as_tensor
from .tensor_base import TensorBase as Tensor


class QRResult(NamedTuple):
    Q: Tensor
    R: Tensor


class EighResult(NamedTuple):
    eigenvalues: Tensor
    eigenvectors: Tensor


class SVDResult(NamedTuple):
    U: Tensor
    S: Tensor
    Vh: Tensor


class LstsqResult(NamedTuple):
    solution: Tensor
    residuals: Tensor
    rank: Tensor
    singular_values: Tensor


def qr(A, mode: str = "reduced") -> QRResult:
    """(Q, R) with A = Q R: mode 'reduced' (Q m x k), 'complete' (Q m x m) or 'r' (R only;
    Q is empty and R is not differentiable, as torch)."""
    op = "linalg.qr"
    if mode not in ("reduced", "complete", "r"):
        raise _err(op, f"qr received unrecognized mode {mode!r} but expected one of "
                   "'reduced' (default), 'r', or 'complete'")
    a = matrices(op, A, square=False)
    complete = mode == "complete"
    r = rename(bind(P.linalg_qr_r, a, complete=complete), "LinalgQrBackward0")
    if mode == "r":
        return QRResult(ops.as_tensor(np.zeros((0,), a.dtype.np), like=a), r.detach())
    return QRResult(rename(bind(P.linalg_qr_q, a, complete=complete), "LinalgQrBackward0"), r)


def _uplo(op: str, UPLO: str) -> bool:
    if UPLO not in ("L", "U"):
        raise _err(op, f"UPLO must be 'L' or 'U', got {UPLO!r}")
    return UPLO == "L"


def eigh(A, UPLO: str = "L") -> EighResult:
    """Eigenvalues (ascending) and orthonormal eigenvectors of symmetric matrices, reading the
    lower (UPLO='L') or upper triangle. Gradients through the eigenvectors are inf/nan for
    repeated eigenvalues, as torch's."""
    a = matrices("linalg.eigh", A)
    lower = _uplo("linalg.eigh", UPLO)
    return EighResult(rename(bind(P.linalg_eigh_vals, a, lower=lower), "LinalgEighBackward0"),
                      rename(bind(P.linalg_eigh_vecs, a, lower=lower), "LinalgEighBackward0"))


def eigvalsh(A, UPLO: str = "L") -> Tensor:
    """The eigenvalues (ascending) of symmetric matrices."""
    a = matrices("linalg.eigvalsh", A)
    return rename(bind(P.linalg_eigh_vals, a, lower=_uplo("linalg.eigvalsh", UPLO)),
                  "LinalgEighBackward0")


def svd(A, full_matrices: bool = True) -> SVDResult:
    """(U, S, Vh) with A = U diag(S) Vh, S descending. As torch, gradients are right for
    losses that do not depend on the signs of the singular vectors, and inf/nan through U or
    Vh for repeated singular values."""
    a = matrices("linalg.svd", A, square=False)
    full = bool(full_matrices)
    name = "LinalgSvdBackward0"
    return SVDResult(rename(bind(P.linalg_svd_u, a, full=full), name),
                     rename(bind(P.linalg_svd_s, a, full=False), name),
                     rename(bind(P.linalg_svd_vh, a, full=full), name))


def svdvals(A) -> Tensor:
    """The singular values, descending."""
    a = matrices("linalg.svdvals", A, square=False)
    return rename(bind(P.linalg_svd_s, a, full=False), "LinalgSvdBackward0")


def _tolerances(op: str, a: Tensor, atol, rtol) -> tuple[float, float]:
    for name, v in (("atol", atol), ("rtol", rtol)):
        if v is not None and not isinstance(v, (int, float)):
            raise _err(op, f"{name} must be a float (tensor tolerances are not supported), "
                       f"got {type(v).__name__}", TypeError)
    eps = float(np.finfo(a.dtype.np).eps)
    if rtol is None:
        rtol = 0.0 if atol is not None and atol > 0 else eps * max(a.shape[-2:])
    return float(0.0 if atol is None else atol), float(rtol)


def pinv(A, *, atol=None, rtol=None, hermitian: bool = False) -> Tensor:
    """The Moore-Penrose pseudo-inverse: singular values at most max(atol, rtol * largest)
    count as zero (rtol defaults to eps * max(m, n))."""
    a = matrices("linalg.pinv", A, square=False)
    at, rt = _tolerances("linalg.pinv", a, atol, rtol)
    return rename(bind(P.linalg_pinv, a, rtol=rt, atol=at), "LinalgPinvBackward0")


def pinverse(A, rcond: float = 1e-15) -> Tensor:
    """torch.pinverse: pinv with rtol=rcond."""
    return pinv(A, rtol=rcond)


def matrix_rank(A, *, atol=None, rtol=None, hermitian: bool = False) -> Tensor:
    """The number of singular values above max(atol, rtol * largest), int64."""
    a = matrices("linalg.matrix_rank", A, square=False)
    at, rt = _tolerances("linalg.matrix_rank", a, atol, rtol)
    s = bind(P.linalg_svd_s, a, full=False).detach()
    if s.shape[-1] == 0:
        return ops.as_tensor(np.zeros(a.shape[:-2], np.int64), like=a)
    big = ops.amax(s, -1, True)
    cut = ops.maximum(ops.mul(big, rt), at)
    return ops.sum(ops.gt(s, cut), -1)


def lstsq(A, B, rcond=None, *, driver=None) -> LstsqResult:
    """The least-squares solution of A X = B as X = pinv(A) B: torch's for full-rank A (for
    rank-deficient A the minimum-norm one, as torch's 'gelsd'). The other fields follow the
    driver as torch's: rank for all but 'gels'; residuals (m > n, every A of full rank) and
    singular_values for 'gelsd'/'gelss' (and residuals for 'gels')."""
    op = "linalg.lstsq"
    driver = "gelsy" if driver is None else driver
    if driver not in ("gels", "gelsy", "gelsd", "gelss"):
        raise _err(op, f"parameter `driver` should be one of (gels, gelsy, gelsd, gelss), "
                   f"got {driver!r}")
    a = matrices(op, A, square=False)
    b = as_tensor(B)
    vector = b.ndim == a.ndim - 1
    if vector:
        b = ops.reshape(b, b.shape + (1,))
    b = matrices(op, b, square=False, name="B")
    if b.shape[-2] != a.shape[-2]:
        raise _err(op, f"incompatible shapes of A {_fmt(a)} and B {_fmt(as_tensor(B))}: "
                   "they must have the same number of rows")
    x = ops.matmul(pinv(a, rtol=rcond), b)
    m, n = a.shape[-2:]
    empty = ops.as_tensor(np.zeros((0,), a.dtype.np), like=a)
    rank = matrix_rank(a) if driver != "gels" else ops.as_tensor(np.zeros((0,), np.int64),
                                                                    like=a)
    resid = empty
    # (inside tj.compile the rank is not known while tracing: residuals whenever m > n)
    if driver != "gelsy" and m > n and (a._traced or
                                        bool((matrix_rank(a) == n).numpy().all())):
        r = ops.sub(ops.matmul(a, x), b)
        resid = ops.sum(ops.mul(r, r), -2)
        if vector:
            resid = ops.reshape(resid, resid.shape[:-1])
    sv = svdvals(a) if driver in ("gelsd", "gelss") else empty
    if vector:
        x = ops.reshape(x, x.shape[:-1])
    return LstsqResult(x, resid, rank, sv)


__all__ = ["QRResult", "EighResult", "SVDResult", "LstsqResult", "qr", "eigh", "eigvalsh",
           "svd", "svdvals", "pinv", "pinverse", "matrix_rank", "lstsq"]
