"""torch.nn.functional's margin and likelihood losses: margin_ranking_loss,
hinge_embedding_loss, soft_margin_loss, multilabel_soft_margin_loss, cosine_embedding_loss,
multi_margin_loss, triplet_margin_loss, gaussian_nll_loss, poisson_nll_loss, and
pairwise_distance / pdist; the formulas of torch's (aten / torch.nn.functional) code, composed
from existing ops so their gradients are autodiff's of the same expressions."""
from __future__ import annotations

import math

import numpy as np

from ..ir import dtypes as dt
from ..tracer import composites as C
from ..tracer import checks as _checks
from ..tracer import ops
from ..tracer.autocast import FP32, autocast_op
from ..tracer.creation import arange
from ..tracer.gathering import take_along_dim
from ..tracer.stacking import index_select
from ..tracer.losses import _legacy_reduction
from ..tracer.norms import vector_norm
from ..tracer.tensor import Tensor
from .functional_losses import _reduce

__all__ = ["margin_ranking_loss", "hinge_embedding_loss", "soft_margin_loss",
           "multilabel_soft_margin_loss", "cosine_embedding_loss", "multi_margin_loss",
           "triplet_margin_loss", "gaussian_nll_loss", "poisson_nll_loss",
           "pairwise_distance", "pdist"]


def _logsigmoid(x: Tensor) -> Tensor:
    return ops.neg(C.softplus(ops.neg(x)))


def _zeros(like: Tensor) -> Tensor:
    return ops.as_tensor(0.0, like.dtype, like=like)


@autocast_op(FP32)
def margin_ranking_loss(input1: Tensor, input2: Tensor, target: Tensor, margin: float = 0.0,
                        size_average=None, reduce=None, reduction: str = "mean") -> Tensor:
    """max(0, -y (x1 - x2) + margin)."""
    reduction = _legacy_reduction(size_average, reduce, reduction)
    x1, x2, y = ops.as_tensor(input1), ops.as_tensor(input2), ops.as_tensor(target)
    if not x1.ndim == x2.ndim == y.ndim:
        raise ops._err("margin_ranking_loss", f"All input tensors should have same dimension "
                       f"but got {ops._fmt(x1)}, {ops._fmt(x2)} and {ops._fmt(y)}", RuntimeError)
    loss = ops.clip(ops.add(ops.neg(ops.mul(y, ops.sub(x1, x2))), margin), 0.0)
    return _reduce(loss, reduction, "margin_ranking_loss")


@autocast_op(FP32)
def hinge_embedding_loss(input: Tensor, target: Tensor, margin: float = 1.0,  # noqa: A002
                         size_average=None, reduce=None, reduction: str = "mean") -> Tensor:
    """x where y = 1, max(0, margin - x) where y = -1 (aten: both terms where y is neither)."""
    reduction = _legacy_reduction(size_average, reduce, reduction)
    x, y = ops.as_tensor(input), ops.as_tensor(target)
    zero = _zeros(x)
    out_margin = ops.where(ops.ne(y, 1), ops.clip(ops.sub(margin, x), 0.0), zero)
    out_self = ops.where(ops.ne(y, -1), x, zero)
    return _reduce(ops.add(out_margin, out_self), reduction, "hinge_embedding_loss")


@autocast_op(FP32)
def soft_margin_loss(input: Tensor, target: Tensor, size_average=None,  # noqa: A002
                     reduce=None, reduction: str = "mean") -> Tensor:
    """log(1 + exp(-y x))."""
    reduction = _legacy_reduction(size_average, reduce, reduction)
    x, y = ops.as_tensor(input), ops.as_tensor(target)
    loss = ops.log(ops.add(1.0, ops.exp(ops.neg(ops.mul(y, x)))))
    return _reduce(loss, reduction, "soft_margin_loss")


@autocast_op(FP32)
def multilabel_soft_margin_loss(input: Tensor, target: Tensor,  # noqa: A002
                                weight: Tensor | None = None, size_average=None, reduce=None,
                                reduction: str = "mean") -> Tensor:
    """-(y logsigmoid(x) + (1 - y) logsigmoid(-x)) (times weight), averaged over classes."""
    reduction = _legacy_reduction(size_average, reduce, reduction)
    x, y = ops.as_tensor(input), ops.as_tensor(target)
    if x.ndim == 0:
        raise ops._err("multilabel_soft_margin_loss", f"input {ops._fmt(x)} needs a class "
                       f"dim", RuntimeError)
    loss = ops.neg(ops.add(ops.mul(y, _logsigmoid(x)),
                           ops.mul(ops.sub(1.0, y), _logsigmoid(ops.neg(x)))))
    if weight is not None:
        loss = ops.mul(loss, ops.as_tensor(weight))
    loss = ops.div(ops.sum(loss, x.ndim - 1), x.shape[-1])
    return _reduce(loss, reduction, "multilabel_soft_margin_loss")


@autocast_op(FP32)
def cosine_embedding_loss(input1: Tensor, input2: Tensor, target: Tensor,
                          margin: float = 0.0, size_average=None, reduce=None,
                          reduction: str = "mean") -> Tensor:
    """1 - cos(x1, x2) where y = 1, max(0, cos - margin) where y = -1 (aten's EPSILON 1e-12
    is added to each squared magnitude)."""
    reduction = _legacy_reduction(size_average, reduce, reduction)
    x1, x2, y = ops.as_tensor(input1), ops.as_tensor(input2), ops.as_tensor(target)
    if x1.shape != x2.shape or x1.ndim not in (1, 2) or y.ndim != x1.ndim - 1:
        raise ops._err("cosine_embedding_loss", f"expects 1D or 2D inputs of one shape and a "
                       f"target of one dim less (0D for 1D inputs, 1D for 2D), got "
                       f"{ops._fmt(x1)}, {ops._fmt(x2)} and target {ops._fmt(y)}",
                       RuntimeError)
    d = x1.ndim - 1
    eps = 1e-12
    prod = ops.sum(ops.mul(x1, x2), d)
    m1 = ops.add(ops.sum(ops.mul(x1, x1), d), eps)
    m2 = ops.add(ops.sum(ops.mul(x2, x2), d), eps)
    cos = ops.div(prod, ops.sqrt(ops.mul(m1, m2)))
    zero = _zeros(cos)
    pos = ops.where(ops.eq(y, 1), ops.sub(1.0, cos), zero)
    neg = ops.where(ops.eq(y, -1), ops.clip(ops.sub(cos, margin), 0.0), zero)
    return _reduce(ops.add(pos, neg), reduction, "cosine_embedding_loss")


@autocast_op(FP32)
def multi_margin_loss(input: Tensor, target: Tensor, p: int = 1,  # noqa: A002
                      margin: float = 1.0, weight: Tensor | None = None, size_average=None,
                      reduce=None, reduction: str = "mean") -> Tensor:
    """sum over j != y of max(0, margin - x[y] + x[j])^p (times weight[y]) / C per sample."""
    reduction = _legacy_reduction(size_average, reduce, reduction)
    if p not in (1, 2):
        raise ops._err("multi_margin_loss", f"only p == 1 and p == 2 supported, got {p}")
    x, y = ops.as_tensor(input), ops.as_tensor(target)
    unbatched = x.ndim <= 1
    x2 = ops.reshape(x, (1, -1)) if unbatched else x
    if x2.ndim != 2 or y.dtype.is_float or y.numel() != x2.shape[0] or \
            (y.ndim > 1) or (not unbatched and y.ndim != 1):
        raise ops._err("multi_margin_loss", f"expects a 0D or 1D input with a 0D target, or "
                       f"a 2D input (N, C) with an integer 1D target of N classes, got "
                       f"{ops._fmt(x)} and target {ops._fmt(y)}", RuntimeError)
    n, c = x2.shape
    yi = ops.reshape(y, (n,))
    col = ops.reshape(yi, (n, 1))
    _checks.rows_in_range(col, c, "multi_margin_loss", f"{c} classes")   # eager: raises
    picked = take_along_dim(x2, col, 1)                               # x[y], (n, 1)
    if col._traced:         # the last failing check of a trace is reported: this one
        _checks.rows_in_range(col, c, "multi_margin_loss", f"{c} classes")
    z = ops.clip(ops.add(ops.sub(x2, picked), margin), 0.0)
    if p == 2:
        z = ops.mul(z, z)
    if weight is not None:
        z = ops.mul(z, ops.reshape(index_select(ops.as_tensor(weight), 0, yi), (n, 1)))
    not_target = ops.ne(ops.reshape(arange(c), (1, c)), ops.reshape(yi, (n, 1)))
    loss = ops.div(ops.sum(ops.where(not_target, z, _zeros(z)), 1), c)
    if unbatched and reduction == "none":
        loss = ops.reshape(loss, y.shape)
    return _reduce(loss, reduction, "multi_margin_loss")


def pairwise_distance(x1: Tensor, x2: Tensor, p: float = 2.0, eps: float = 1e-6,
                      keepdim: bool = False) -> Tensor:
    """||x1 - x2 + eps||_p over the last dim (of the broadcast shape)."""
    a, b = ops.as_tensor(x1), ops.as_tensor(x2)
    d = max(a.ndim, b.ndim)
    if d == 0:
        raise ops._err("pairwise_distance", f"inputs must have at least one dim, got "
                       f"{ops._fmt(a)} and {ops._fmt(b)}", RuntimeError)
    return vector_norm(ops.add(ops.sub(a, b), eps), p, -1, keepdim)


def pdist(input: Tensor, p: float = 2.0) -> Tensor:  # noqa: A002
    """The p-norm distances between rows i < j of an (N, M) input, in row-major order of the
    pairs: N (N - 1) / 2 values."""
    x = ops.as_tensor(input)
    if x.ndim != 2:
        raise ops._err("pdist", f"only supports 2D tensors, got {ops._fmt(x)}", RuntimeError)
    if p < 0:
        raise ops._err("pdist", f"only supports non-negative p values, got {p}", RuntimeError)
    i, j = np.triu_indices(x.shape[0], 1)
    rows = [index_select(x, 0, ops.as_tensor(k.astype(np.int64), like=x, const=True))
            for k in (i, j)]
    return vector_norm(ops.sub(*rows), p, -1)


@autocast_op(FP32)
def triplet_margin_loss(anchor: Tensor, positive: Tensor, negative: Tensor,
                        margin: float = 1.0, p: float = 2, eps: float = 1e-6,
                        swap: bool = False, size_average=None, reduce=None,
                        reduction: str = "mean") -> Tensor:
    """max(0, margin + d(a, pos) - d(a, neg)), d = pairwise_distance; swap uses
    min(d(a, neg), d(pos, neg))."""
    reduction = _legacy_reduction(size_average, reduce, reduction)
    a, ps, ng = (ops.as_tensor(t) for t in (anchor, positive, negative))
    if not a.ndim == ps.ndim == ng.ndim:
        raise ops._err("triplet_margin_loss", f"The anchor, positive, and negative tensors "
                       f"are expected to have the same number of dimensions, but got: "
                       f"{ops._fmt(a)}, {ops._fmt(ps)} and {ops._fmt(ng)}", RuntimeError)
    d_pos = pairwise_distance(a, ps, p, eps)
    d_neg = pairwise_distance(a, ng, p, eps)
    if swap:
        d_neg = ops.minimum(d_neg, pairwise_distance(ps, ng, p, eps))
    loss = ops.clip(ops.sub(ops.add(d_pos, margin), d_neg), 0.0)
    return _reduce(loss, reduction, "triplet_margin_loss")


@autocast_op(FP32)
def gaussian_nll_loss(input: Tensor, target: Tensor, var: Tensor | float,  # noqa: A002
                      full: bool = False, eps: float = 1e-6,
                      reduction: str = "mean") -> Tensor:
    """0.5 (log(max(var, eps)) + (x - y)^2 / max(var, eps)) (+ 0.5 log(2 pi) if full). The
    clamp is torch's no_grad clamp_: var's gradient is that of the unclamped formula."""
    x, y = ops.as_tensor(input), ops.as_tensor(target)
    v = ops.as_tensor(var, x.dtype, like=x) if isinstance(var, (int, float)) \
        else ops.as_tensor(var)
    if isinstance(var, (int, float)):
        v = ops.broadcast_to(v, x.shape)
    if v.shape != x.shape:
        if x.shape[:-1] == v.shape:
            v = ops.unsqueeze(v, -1)
        elif not (x.shape[:-1] == v.shape[:-1] and v.shape[-1] == 1):
            raise ops._err("gaussian_nll_loss", f"var {ops._fmt(v)} is of incorrect size for "
                           f"input {ops._fmt(x)}", ValueError)
    if reduction not in ("none", "mean", "sum"):
        raise ops._err("gaussian_nll_loss", f"{reduction} is not valid", ValueError)
    neg = ops.cast(ops.lt(v, 0), dt.i32)
    if not _checks.check_index(neg, 0, 1, "gaussian_nll_loss: var has negative "
                               "entry/entries", cls=ValueError) and neg.numel():
        if int(ops.sum(neg).item()):
            raise ops._err("gaussian_nll_loss", "var has negative entry/entries", ValueError)
    vs = ops.stop_gradient(v)
    vc = ops.add(v, ops.sub(ops.clip(vs, eps), vs))     # clamped value, identity gradient
    loss = ops.mul(0.5, ops.add(ops.log(vc), ops.div(ops.mul(ops.sub(x, y), ops.sub(x, y)), vc)))
    if full:
        loss = ops.add(loss, 0.5 * math.log(2 * math.pi))
    return _reduce(loss, reduction, "gaussian_nll_loss")


@autocast_op(FP32)
def poisson_nll_loss(input: Tensor, target: Tensor, log_input: bool = True,  # noqa: A002
                     full: bool = False, size_average=None, eps: float = 1e-8,
                     reduce=None, reduction: str = "mean") -> Tensor:
    """exp(x) - y x (log_input) or x - y log(x + eps); full adds Stirling's
    y log y - y + 0.5 log(2 pi y) where y > 1."""
    reduction = _legacy_reduction(size_average, reduce, reduction)
    x, y = ops.as_tensor(input), ops.as_tensor(target)
    if log_input:
        loss = ops.sub(ops.exp(x), ops.mul(y, x))
    else:
        loss = ops.sub(x, ops.mul(y, ops.log(ops.add(x, eps))))
    if full:
        stirling = ops.add(ops.sub(ops.mul(y, ops.log(y)), y),
                           ops.mul(0.5, ops.log(ops.mul(2 * math.pi, y))))
        loss = ops.add(loss, ops.where(ops.le(y, 1), _zeros(stirling), stirling))
    return _reduce(loss, reduction, "poisson_nll_loss")
