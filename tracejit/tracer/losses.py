"""cross_entropy with PyTorch's full semantics: the class dimension is 1 (0 for a single
unbatched input), class-index or class-probability targets, `weight`, `ignore_index`,
`reduction` and `label_smoothing`, computed as torch.nn.functional.cross_entropy does."""
from __future__ import annotations

import numpy as np

from ..ir import dtypes as dt
from . import checks, ops
from .autocast import FP32, autocast_op
from ..ir.primitives import P, bind
from .composites import composite, log_softmax
from .gathering import along
from .tensor_base import TensorBase as Tensor

_REDUCTIONS = ("mean", "sum", "none")


def _legacy_reduction(size_average, reduce, reduction: str) -> str:
    """PyTorch's deprecated size_average/reduce flags, mapped as torch maps them."""
    if size_average is None and reduce is None:
        return reduction
    size_average = True if size_average is None else size_average
    reduce = True if reduce is None else reduce
    return "mean" if size_average and reduce else "sum" if reduce else "none"


def _shape(a) -> tuple[int, ...]:
    return tuple(a.shape) if hasattr(a, "shape") else np.shape(a)


def _is_prob_target(input, target) -> bool:
    return _shape(target) == _shape(input)


def _node_name(input, target, weight=None, size_average=None, ignore_index=-100, reduce=None,
               reduction="mean", label_smoothing=0.0) -> str:
    # the name of the last op PyTorch records for this call
    if not _is_prob_target(input, target):
        return "NllLossBackward0" if not label_smoothing else "AddBackward0"
    return "DivBackward1" if reduction == "mean" else "NegBackward0"


def _check_targets(target: Tensor, classes: int, ignore_index: int) -> None:
    """Targets are checked as PyTorch checks them: eager ones now, traced ones (and captures)
    when the compiled call runs (reading them now would make their values part of the trace)."""
    if checks.check_index(target, 0, classes, f"cross_entropy: a target is out of bounds for "
                          f"{classes} classes", allowed=ignore_index) or target.numel() == 0:
        return
    t = target._host("cross_entropy")
    bad = t[((t < 0) | (t >= classes)) & (t != ignore_index)]
    if bad.size:
        raise ops._err("cross_entropy", f"target {int(bad[0])} is out of bounds for "
                       f"{classes} classes", IndexError)


@autocast_op(FP32)
@composite(_node_name)
def cross_entropy(input, target, weight=None, size_average=None, ignore_index: int = -100,
                  reduce=None, reduction: str = "mean", label_smoothing: float = 0.0):
    """PyTorch's cross_entropy. input: [C], [N, C] or [N, C, d1, ...] logits; target: class
    indices of the input's shape without C (an integer tensor), or class probabilities of the
    input's shape. `mean` averages over the targets that are not `ignore_index`, weighted by
    `weight[target]` when given (nan when every target is ignored, as torch)."""
    x = ops.as_tensor(input)
    reduction = _legacy_reduction(size_average, reduce, reduction)
    if reduction not in _REDUCTIONS:
        raise ops._err("cross_entropy", f"reduction must be 'mean', 'sum' or 'none', got "
                       f"{reduction!r}")
    if not 0.0 <= label_smoothing <= 1.0:
        raise ops._err("cross_entropy", f"label_smoothing must be in [0, 1], got "
                       f"{label_smoothing}")
    if x.ndim == 0 or not x.dtype.is_float:
        raise ops._err("cross_entropy", f"input must be floating-point logits with a class "
                       f"dimension, got {ops._fmt(x)}", TypeError)
    cdim = 0 if x.ndim == 1 else 1
    n_classes = x.shape[cdim]
    wb = None
    if weight is not None:
        w = ops.as_tensor(weight, x.dtype, like=x)
        if w.shape != (n_classes,):
            raise ops._err("cross_entropy", f"weight {ops._fmt(w)} must have one entry per "
                           f"class ({n_classes}) of {ops._fmt(x)}")
        wshape = [1] * x.ndim
        wshape[cdim] = n_classes
        wb = ops.reshape(w, tuple(wshape))
    logp = log_softmax(x, cdim)
    target = ops.as_tensor(target, like=x)
    if target.shape == x.shape:
        return _prob_targets(x, logp, target, wb, cdim, ignore_index, reduction,
                             label_smoothing)
    return _class_targets(x, logp, target, wb, cdim, ignore_index, reduction, label_smoothing)


def _prob_targets(x, logp, target, wb, cdim, ignore_index, reduction, eps):
    if not target.dtype.is_float:
        raise ops._err("cross_entropy", f"class-probability targets must be floating point, got "
                       f"{ops._fmt(target)} (class indices have the input's shape without "
                       f"the class dimension)", TypeError)
    if ignore_index >= 0:
        raise ops._err("cross_entropy", "ignore_index is not supported for probability targets")
    n_classes = x.shape[cdim]
    tgt = ops.cast(target, x.dtype)
    if eps > 0:
        tgt = ops.add(ops.mul(tgt, 1.0 - eps), eps / n_classes)
    prod = ops.mul(logp, tgt)
    if wb is not None:
        prod = ops.mul(prod, wb)
    if reduction == "none":
        return ops.neg(ops.sum(prod, cdim))
    total = ops.neg(ops.sum(prod))
    if reduction == "sum":
        return total
    rows = x.numel() // n_classes if n_classes else 0
    return ops.div(total, float(rows) if x.numel() else float("nan"))


def _class_targets(x, logp, target, wb, cdim, ignore_index, reduction, eps):
    want = x.shape[:cdim] + x.shape[cdim + 1:]
    if not target.dtype.is_int:
        raise ops._err("cross_entropy", f"class-index targets must be integers, got "
                       f"{ops._fmt(target)} (probability targets have the input's shape "
                       f"{ops._fmt(x)})", TypeError)
    if target.shape != want:
        raise ops._err("cross_entropy", f"class indices {ops._fmt(target)} do not match input "
                       f"{ops._fmt(x)}: expected shape {list(want)}")
    n_classes = x.shape[cdim]
    _check_targets(target, n_classes, ignore_index)
    t = ops.cast(target, dt.i64)
    valid = ops.ne(t, ignore_index)
    # each target's log-probability read with take_along (not a one-hot compare over every
    # class); its gradient is a select against the class index inside the log_softmax
    # backward's loop, not a zero-filled scatter buffer of the logits' size. An ignored target
    # reads class 0, masked by `where` (so a -inf there does not leak). The targets' bounds
    # were checked above.
    safe = ops.where(valid, t, 0)
    picked = ops.where(valid, _take_along(logp, safe, cdim), 0.0)
    if wb is None:
        nll = ops.neg(picked)
        wy = ops.cast(valid, x.dtype)
    else:
        w = ops.reshape(wb, (n_classes,))
        w_of = ops.reshape(_pick(w, ops.reshape(safe, (safe.numel(),)), 0), want)
        wy = ops.where(valid, w_of, 0.0)
        nll = ops.neg(ops.mul(wy, picked))
    loss = _reduced(nll, wy, reduction)
    if not eps:
        return loss
    smooth = ops.mul(logp, wb) if wb is not None else logp
    smooth = ops.where(valid, ops.neg(ops.sum(smooth, cdim)), 0.0)
    return ops.add(ops.mul(loss, 1.0 - eps),
                   ops.mul(_reduced(smooth, wy, reduction), eps / n_classes))


def _take_along(v: Tensor, idx: Tensor, d: int) -> Tensor:
    """v's element at idx along d, idx having v's shape without axis d (in range). No classes:
    as in _pick."""
    if v.shape[d] == 0:
        return ops.sum(v, d)
    checks.in_bounds(idx, v.shape[d])      # the targets were checked: no second check
    return bind(P.take_along, v, idx, axis=d)


def _pick(v: Tensor, idx: Tensor, d: int) -> Tensor:
    """v's element at idx (in range, v's shape without axis d) along d, for each position of
    idx. No classes: every target was ignored, and there is nothing to read (a sum over the
    empty axis gives the zeros, still v's function for autograd)."""
    if v.shape[d] == 0:
        return ops.sum(v, d)
    # the targets were checked: along adds no second check
    return ops.reshape(along(v, ops.unsqueeze(idx, d), d), idx.shape)


def _reduced(loss, wy, reduction):
    if reduction == "none":
        return loss
    if reduction == "sum":
        return ops.sum(loss)
    return ops.div(ops.sum(loss), ops.sum(wy))     # 0 / 0 = nan when every target is ignored
