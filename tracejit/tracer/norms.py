"""`std`, `norm` and `linalg.vector_norm`, in PyTorch's spelling and with PyTorch's gradients
at the points where the formula's derivative is undefined: the gradient of a zero standard
deviation or of a zero norm is 0 (torch masks it), and so is that of an element that is 0 in
a p-norm (torch's `x * |x|^(p-2)` rule is masked there too). Roots and powers go through a
"double where" so the untaken branch never sees a 0 (whose derivative would be inf, and
inf * 0 = NaN in the chain rule).
"""
from __future__ import annotations

import math
import numbers

from ..ir import dtypes as dt
from . import composites as C
from . import ops
from .autocast import FP32, autocast_op
from .composites import composite
from .linalg_spectral import svdvals
from .tensor_base import TensorBase as Tensor

_var = C.var.__wrapped__        # the plain function: std records one node of its own


def _safe_pow(a: Tensor, p: float, at_zero: float) -> Tensor:
    """a ** p for a >= 0, with value `at_zero` and gradient 0 where a == 0."""
    zero = ops.eq(a, 0)
    return ops.where(zero, at_zero, ops.pow(ops.where(zero, 1.0, a), p))


# -- std ----------------------------------------------------------------------------------------
@composite(lambda x, dim=None, *a, **k: "StdBackward0")
def _std(x: Tensor, dim, keepdim: bool, correction) -> Tensor:
    low = x.dtype if x.dtype in dt.HALF else None
    if low is not None:         # (torch: float32 throughout, one rounding; see var)
        x = ops.cast(x, dt.f32)
    v = _var(x, dim=dim, keepdim=keepdim, correction=correction)
    s = _safe_pow(v, 0.5, 0.0)
    return s if low is None else ops.cast(s, low)


def std(x, dim=None, unbiased=None, keepdim: bool = False, *, correction=None, axis=None,
        keepdims=None, ddof=None) -> Tensor:
    """Standard deviation over dim (all dims when None), unbiased (correction=1) by default.
    As torch: `std(x, True)` is `std(x, unbiased=True)`, and a zero deviation has gradient 0."""
    x = ops.as_tensor(x)
    if isinstance(dim, bool):            # torch.std(x, unbiased)
        dim, unbiased = None, dim
    if axis is not None:
        dim = axis
    if not x.dtype.is_float:
        raise ops._err("std", f"expects a floating point input, got {ops._fmt(x)}", TypeError)
    corr = 1 if correction is None else correction
    if unbiased is not None:
        corr = 1 if unbiased else 0
    if ddof is not None:
        corr = ddof
    kd = bool(keepdim if keepdims is None else keepdims)
    dim = tuple(dim) if isinstance(dim, list) else dim
    return _std(x, dim, kd, corr)


# -- vector norms -------------------------------------------------------------------------------
def _ord(op: str, p) -> float:
    if isinstance(p, bool) or not isinstance(p, numbers.Real):
        raise ops._err(op, f"ord/p must be a number (or 'fro' for norm), got {p!r}",
                       RuntimeError)
    return float(p)


def _vnorm_name(x, p, dim, keepdim):
    return "LinalgVectorNormBackward0"


@composite(_vnorm_name)
def _vector_norm(x: Tensor, p: float, dim, keepdim: bool) -> Tensor:
    if x.dtype in dt.HALF:
        # as torch: a 16-bit input is accumulated in float32 (four float16 300s have 2-norm
        # 600, whose square 360000 overflows float16) and the norm cast back to its dtype
        return ops.cast(_vector_norm_impl(ops.cast(x, dt.f32), p, dim, keepdim), x.dtype)
    return _vector_norm_impl(x, p, dim, keepdim)


def _vector_norm_impl(x: Tensor, p: float, dim, keepdim: bool) -> Tensor:
    a = ops.abs(x)
    if p == math.inf:
        return ops.amax(a, dim, keepdim)
    if p == -math.inf:
        return ops.amin(a, dim, keepdim)
    if p == 0:
        # the count of nonzero elements; as torch, it is differentiable with gradient 0 (the
        # untaken branch of a where, so no 0 * inf can make it NaN)
        count = ops.sum(ops.cast(ops.ne(a, 0), x.dtype), dim, keepdim)
        return ops.where(ops.ne(count, count), ops.sum(a, dim, keepdim), count)
    if p == 1:
        return ops.sum(a, dim, keepdim)
    if p == 2:
        s = ops.sum(ops.mul(x, x), dim, keepdim)
    else:
        s = ops.sum(_safe_pow(a, p, math.inf if p < 0 else 0.0), dim, keepdim)
    return _safe_pow(s, 1.0 / p, math.inf if p < 0 else 0.0)


def _norm_dims(op: str, x: Tensor, dim) -> tuple[int, ...] | None:
    if dim is None:
        return None
    dims = (dim,) if isinstance(dim, numbers.Integral) else tuple(dim)
    if not dims:                          # dim=() means every dim, as torch
        return None
    return ops._axes(x, dims, None, op) if x.ndim else None


@autocast_op(FP32)
def vector_norm(x, ord=2, dim=None, keepdim: bool = False, *, dtype=None) -> Tensor:  # noqa: A002
    """torch.linalg.vector_norm: (sum |x|^ord)^(1/ord) over dim (all elements when None);
    ord inf/-inf is the largest/smallest |x| (ties share the gradient), 0 counts nonzeros."""
    x = ops.as_tensor(x)
    if dtype is not None:
        x = ops.cast(x, dtype)
    if not x.dtype.is_float:
        raise ops._err("linalg.vector_norm", f"expects a floating point input, got "
                       f"{ops._fmt(x)}", TypeError)
    p = _ord("linalg.vector_norm", ord)
    dims = _norm_dims("linalg.vector_norm", x, dim)
    if abs(p) == math.inf and x.numel() == 0 and (
            dims is None or any(x.shape[d] == 0 for d in dims)):
        raise ops._err("linalg.vector_norm", f"cannot compute the {ord} norm of the empty "
                       f"tensor {ops._fmt(x)} (no identity element)", IndexError)
    return _vector_norm(x, p, dims, bool(keepdim))


@autocast_op(FP32)
def norm(x, p="fro", dim=None, keepdim: bool = False, dtype=None) -> Tensor:
    """torch.norm: 'fro' (or None) is the 2-norm of the elements over dim; a number p is the
    vector p-norm over dim (all elements when None); 'nuc' the sum of the singular values of
    the matrices over the two dims dim (the whole of a 2-D x when None)."""
    x = ops.as_tensor(x)
    if isinstance(p, str):
        if p == "nuc":
            return _nuclear(x, dim, keepdim, dtype)
        if p != "fro":
            raise ops._err("norm", f"only valid string values are 'fro' and 'nuc', found {p}",
                           RuntimeError)
        p = 2
    return vector_norm(x, 2 if p is None else p, dim, keepdim, dtype=dtype)


def _nuclear(x: Tensor, dim, keepdim: bool, dtype) -> Tensor:
    if dtype is not None:
        x = ops.cast(x, dtype)
    dims = tuple(range(x.ndim)) if dim is None else \
        (dim,) if isinstance(dim, numbers.Integral) else tuple(dim)
    if len(dims) != 2:
        raise ops._err("norm", f"the nuclear norm needs dim to be a 2-tuple, got {dims} for "
                       f"{ops._fmt(x)}", RuntimeError)
    d0, d1 = (d % x.ndim if x.ndim else d for d in dims)
    rest = [d for d in range(x.ndim) if d not in (d0, d1)]
    r = ops.sum(svdvals(ops.permute(x, rest + [d0, d1])), -1)
    if keepdim:
        for d in sorted((d0, d1)):
            r = ops.unsqueeze(r, d)
    return r


def dist(a, b, p=2) -> Tensor:
    """The p-norm of a - b (broadcast)."""
    return vector_norm(ops.sub(a, b), p)


# -- std_mean, var_mean -------------------------------------------------------------------------
def std_mean(x, dim=None, unbiased=None, keepdim: bool = False, *, correction=None
             ) -> tuple[Tensor, Tensor]:
    """(std, mean) over dim, as torch.std_mean (unbiased by default; `std_mean(x, False)` is
    `unbiased=False`)."""
    if isinstance(dim, bool):
        dim, unbiased = None, dim
    return (std(x, dim, unbiased, keepdim, correction=correction),
            C.mean(x, dim=dim, keepdim=keepdim))


def var_mean(x, dim=None, unbiased=None, keepdim: bool = False, *, correction=None
             ) -> tuple[Tensor, Tensor]:
    """(var, mean) over dim, as torch.var_mean."""
    if isinstance(dim, bool):
        dim, unbiased = None, dim
    dim = tuple(dim) if isinstance(dim, list) else dim
    return (C.var(x, dim=dim, keepdim=keepdim, correction=correction, unbiased=unbiased),
            C.mean(x, dim=dim, keepdim=keepdim))
