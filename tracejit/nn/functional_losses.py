"""torch.nn.functional's binary_cross_entropy, smooth_l1_loss, huber_loss, kl_div and
cosine_similarity, composed from existing ops (their gradients are autodiff's of the same
formulas torch differentiates)."""
from __future__ import annotations

import warnings

import numpy as np

from ..tracer import composites as C
from ..tracer import ops
from ..tracer.autocast import FP32, autocast_op
from ..tracer.creation import ones_like
from ..tracer.losses import _legacy_reduction
from ..tracer.norms import vector_norm
from ..tracer.tensor import Tensor

__all__ = ["binary_cross_entropy", "smooth_l1_loss", "huber_loss", "kl_div",
           "cosine_similarity"]


def _reduce(loss: Tensor, reduction: str, op: str) -> Tensor:
    if reduction == "mean":
        return C.mean(loss)
    if reduction == "sum":
        return ops.sum(loss)
    if reduction == "none":
        return loss
    raise ops._err(op, f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


def _same_size(op: str, x: Tensor, y: Tensor) -> None:
    if x.shape != y.shape:
        raise ops._err(op, f"target size {list(y.shape)} must be the same as input size "
                       f"{list(x.shape)}")


# aten's EPSILON is a float32 1e-12 even in float64 arithmetic: its value, for equal gradients
_BCE_EPS = float(np.float32(1e-12))


@autocast_op(FP32)
def binary_cross_entropy(input: Tensor, target: Tensor, weight: Tensor | None = None,  # noqa: A002
                         size_average=None, reduce=None, reduction: str = "mean") -> Tensor:
    """-w (y log x + (1 - y) log(1 - x)) of probabilities x, each log clamped at -100 as
    torch's (so x = 0 or 1 gives a finite loss). The gradient in x is torch's formula,
    w (x - y) / max(x (1 - x), eps), finite at x = 0 and 1 where the clamped logs'
    derivative is not: the logs take a detached x, and (x - detached x) * that formula, which
    is 0, carries the gradient (so it has no second derivative in x). The target's gradient
    is log(1 - x) - log(x) with the clamped logs: where x is exactly 0 or 1 it is +-100 where
    torch's is +-inf."""
    reduction = _legacy_reduction(size_average, reduce, reduction)
    x, y = ops.as_tensor(input), ops.as_tensor(target)
    _same_size("binary_cross_entropy", x, y)
    xc, yc = ops.stop_gradient(x), ops.stop_gradient(y)
    log_x = ops.clip(ops.log(xc), -100.0)
    log_1mx = ops.clip(ops.log(ops.sub(1.0, xc)), -100.0)
    dx = ops.div(ops.sub(xc, yc), ops.clip(ops.mul(xc, ops.sub(1.0, xc)), _BCE_EPS))
    loss = ops.sub(ops.mul(ops.sub(x, xc), dx),
                   ops.add(ops.mul(y, log_x), ops.mul(ops.sub(1.0, y), log_1mx)))
    if weight is not None:
        loss = ops.mul(loss, weight)
    return _reduce(loss, reduction, "binary_cross_entropy")


@autocast_op(FP32)
def smooth_l1_loss(input: Tensor, target: Tensor, size_average=None, reduce=None,  # noqa: A002
                   reduction: str = "mean", beta: float = 1.0) -> Tensor:
    """0.5 d^2 / beta where |d| < beta, else |d| - 0.5 beta (beta = 0: the L1 loss)."""
    reduction = _legacy_reduction(size_average, reduce, reduction)
    if beta < 0:
        raise ops._err("smooth_l1_loss", f"beta must be non-negative, got {beta}")
    d = ops.abs(ops.sub(input, target))
    if beta == 0:
        return _reduce(d, reduction, "smooth_l1_loss")
    loss = ops.where(ops.lt(d, beta), ops.mul(ops.mul(d, d), 0.5 / beta), ops.sub(d, 0.5 * beta))
    return _reduce(loss, reduction, "smooth_l1_loss")


@autocast_op(FP32)
def huber_loss(input: Tensor, target: Tensor, reduction: str = "mean",  # noqa: A002
               delta: float = 1.0, weight: Tensor | None = None) -> Tensor:
    """0.5 d^2 where |d| < delta, else delta (|d| - 0.5 delta)."""
    if delta <= 0:
        raise ops._err("huber_loss", f"delta must be positive, got {delta}")
    d = ops.abs(ops.sub(input, target))
    loss = ops.where(ops.lt(d, delta), ops.mul(ops.mul(d, d), 0.5),
                     ops.mul(ops.sub(d, 0.5 * delta), delta))
    if weight is not None:
        loss = ops.mul(loss, weight)
    return _reduce(loss, reduction, "huber_loss")


@autocast_op(FP32)
def kl_div(input: Tensor, target: Tensor, size_average=None, reduce=None,  # noqa: A002
           reduction: str = "mean", log_target: bool = False) -> Tensor:
    """Pointwise target (log target - input), input being log-probabilities; 0 where the
    target is 0 (with a finite target gradient there, where torch's is NaN); 'batchmean'
    divides the sum by the batch size (the true KL divergence)."""
    reduction = _legacy_reduction(size_average, reduce, reduction)
    x, t = ops.as_tensor(input), ops.as_tensor(target)
    if log_target:
        loss = ops.mul(ops.exp(t), ops.sub(t, x))
    else:
        positive = ops.gt(t, 0)
        # log of 1 where t = 0: the term is 0 there, and so is its gradient (no 0 * -inf)
        log_t = ops.log(ops.where(positive, t, ones_like(t)))
        loss = ops.where(positive, ops.mul(t, ops.sub(log_t, x)), ops.mul(t, ops.neg(x)))
    if reduction == "batchmean":
        total = ops.sum(loss)
        return ops.div(total, x.shape[0]) if x.ndim else total
    if reduction == "mean":
        warnings.warn("reduction: 'mean' divides the total loss by both the batch size and the "
                      "support size.'batchmean' divides only by the batch size, and aligns with "
                      "the KL div math definition.'mean' will be changed to behave the same as "
                      "'batchmean' in the next major release.", stacklevel=2)
    return _reduce(loss, reduction, "kl_div")


def cosine_similarity(x1: Tensor, x2: Tensor, dim: int = 1, eps: float = 1e-8) -> Tensor:
    """sum(x1 / max(|x1|, eps) * x2 / max(|x2|, eps)) along dim, after broadcasting."""
    # (broadcast first: a norm along a size-1 dim of x2 that broadcasts is that of the
    # repeated values, as torch; it was taken before, so the result was off by sqrt(n))
    a, b = ops._operands("cosine_similarity", [x1, x2])
    na = ops.clip(vector_norm(a, 2, dim, keepdim=True), eps)
    nb = ops.clip(vector_norm(b, 2, dim, keepdim=True), eps)
    return ops.sum(ops.mul(ops.div(a, na), ops.div(b, nb)), dim)
