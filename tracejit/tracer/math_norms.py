"""torch.linalg.matrix_norm and torch.linalg.norm, composed from reductions: 'fro', 1, -1,
inf, -inf; the spectral norms (ord 2, -2: the largest and smallest singular value) and the
nuclear norm (their sum) from linalg.svdvals."""
from __future__ import annotations

import math
import numbers

from . import ops
from .linalg_spectral import svdvals
from .norms import vector_norm
from .tensor_base import TensorBase as Tensor

__all__ = ["matrix_norm", "norm"]

_SVD = (2, -2, "nuc")


def _check_float(op: str, x: Tensor) -> None:
    if not x.dtype.is_float:
        raise ops._err(op, f"expects a floating point input, got {ops._fmt(x)}", RuntimeError)


def matrix_norm(A, ord="fro", dim=(-2, -1), keepdim: bool = False, *,  # noqa: A002
                dtype=None) -> Tensor:
    """torch.linalg.matrix_norm over the two dims `dim` (batched over the others)."""
    x = ops.as_tensor(A)
    if dtype is not None:
        x = ops.cast(x, dtype)
    _check_float("linalg.matrix_norm", x)
    if x.ndim < 2:
        raise ops._err("linalg.matrix_norm", f"the input must have at least 2 dimensions, got "
                       f"{ops._fmt(x)}", RuntimeError)
    if isinstance(dim, numbers.Integral) or len(dim) != 2:
        raise ops._err("linalg.matrix_norm", f"dim must be a 2-tuple, got {dim!r}", RuntimeError)
    d0, d1 = (d + x.ndim if isinstance(d, numbers.Integral) and -x.ndim <= d < 0 else d
              for d in dim)
    if d0 == d1:
        raise ops._err("linalg.matrix_norm", f"dims must be different, got {dim!r}",
                       RuntimeError)
    ops._axes(x, (d0, d1), None, "linalg.matrix_norm")      # (range checks; it sorts)
    if isinstance(ord, str) and ord == "fro":
        return vector_norm(x, 2, (d0, d1), keepdim)
    if any(ord == s and type(ord) is type(s) or (not isinstance(ord, str) and
                                                 not isinstance(s, str) and ord == s)
           for s in _SVD):
        return _svd_norm(x, ord, d0, d1, keepdim)
    if isinstance(ord, str) or isinstance(ord, bool) or ord not in (1, -1, math.inf, -math.inf):
        raise ops._err("linalg.matrix_norm", f"order {ord!r} not supported (1, -1, inf, -inf, "
                       "'fro', 2, -2, 'nuc')", RuntimeError)
    # 1-norms: the largest column sum (over rows d0); inf-norms: the largest row sum
    inner, outer = (d0, d1) if abs(ord) == 1 else (d1, d0)
    s = ops.sum(ops.abs(x), inner, True)
    r = ops.amax(s, outer, True) if ord > 0 else ops.amin(s, outer, True)
    return r if keepdim else ops.squeeze(r, tuple(sorted((d0, d1))))


def _svd_norm(x: Tensor, ord, d0: int, d1: int, keepdim: bool) -> Tensor:
    # the two dims last (a batch of matrices), then the singular values reduced
    rest = [d for d in range(x.ndim) if d not in (d0, d1)]
    s = svdvals(ops.permute(x, rest + [d0, d1]))
    r = ops.sum(s, -1) if ord == "nuc" else ops.amax(s, -1) if ord == 2 else ops.amin(s, -1)
    if keepdim:
        for d in sorted((d0, d1)):
            r = ops.unsqueeze(r, d)
    return r


def norm(A, ord=None, dim=None, keepdim: bool = False, *, dtype=None) -> Tensor:  # noqa: A002
    """torch.linalg.norm: a vector norm over an int dim (or of the flattened input when both
    ord and dim are None), a matrix norm over a 2-tuple dim or of a 2-D input."""
    x = ops.as_tensor(A)
    if dim is not None and not isinstance(dim, numbers.Integral):
        dim = tuple(dim)
        if len(dim) == 1:
            dim = dim[0]
    if dim is None and ord is not None:
        if x.ndim not in (1, 2):
            raise ops._err("linalg.norm", f"if dim= is not given, the input must be 1-D or 2-D "
                           f"when ord= is, got {ops._fmt(x)}", RuntimeError)
        dim = 0 if x.ndim == 1 else (-2, -1)
    if isinstance(dim, tuple):
        return matrix_norm(x, "fro" if ord is None else ord, dim, keepdim, dtype=dtype)
    if isinstance(ord, str):
        raise ops._err("linalg.norm", f"order {ord!r} is a matrix norm; a vector norm needs a "
                       "number", RuntimeError)
    if dtype is None:
        _check_float("linalg.norm", x)
    return vector_norm(x, 2 if ord is None else ord, dim, keepdim, dtype=dtype)
