"""ctc_loss (torch.nn.functional.ctc_loss): the connectionist temporal classification loss,
-log of the total probability of all alignments of each target to its input frames.

The forward (alpha) recursion runs over the extended target (blanks between and around the
labels) in the log domain, one step per frame, as ordinary differentiable tensor ops: the
gradient is autograd's (inside tj.compile the loop over the static number of frames is
unrolled into the trace). Frames at and past a sequence's input length leave its alphas as
they are, so lengths may be tensors, also traced ones; only concatenated 1-D targets need
known target lengths (to pad them)."""
from __future__ import annotations

import math
import warnings

import numpy as np

from ..ir import dtypes as dt
from ..ir.core import user_location
from ..tracer import ops
from ..tracer.creation import arange, full, tensor
from ..tracer.masking import where
from ..tracer.operands import _err, _fmt
from ..tracer.tensor import Tensor

_OP = "ctc_loss"
_UNROLL_WARN = 32
_NEG = -math.inf


def _lse(xs: list[Tensor]) -> Tensor:
    """log(sum(exp(x))) of a few same-shaped tensors that may hold -inf; where all are -inf
    the result is -inf with a zero gradient (not NaN)."""
    m = xs[0]
    for x in xs[1:]:
        m = ops.maximum(m, x)
    m = ops.stop_gradient(where(m == _NEG, 0.0, m))
    s = sum(((x - m).exp() for x in xs[1:]), (xs[0] - m).exp())
    empty = s == 0
    return where(empty, _NEG, m + where(empty, 1.0, s).log())


def _nan_slope(log_probs: Tensor, il: Tensor, impossible: Tensor) -> Tensor:
    """zeros whose gradient to an impossible entry's log_probs is NaN (and 0 to the others):
    torch's kernel gives NaN gradients for an infinite loss without zero_infinity, and so
    does this, as 0 * sqrt(z) with z = 0 there (z = x - x of the entry's finite
    log-probabilities in its frames, plus 1 for the possible entries, where the slope is
    finite)."""
    frames = arange(log_probs.shape[0], dtype=dt.i64).unsqueeze(1) < il.unsqueeze(0)
    x = where(log_probs.isfinite() & frames.unsqueeze(2), log_probs, 0.0).sum(2).sum(0)
    z = x - ops.stop_gradient(x) + (~impossible).to(x.dtype)
    return z.sqrt() * 0.0


def _lengths(x, n: int, name: str, batched: bool) -> Tensor:
    t = x if isinstance(x, Tensor) else tensor(np.asarray(x, dtype=np.int64).reshape(-1))
    if t.dtype.is_float or t.dtype is dt.bool_:
        raise _err(_OP, f"{name} must be integers, got {_fmt(t)}", TypeError)
    t = t.long().reshape(-1)
    if tuple(t.shape) != (n,):
        raise _err(_OP, f"{name} must have {n} element(s) (one per batch entry"
                   f"{'' if batched else ', a scalar for an unbatched input'}), got "
                   f"{_fmt(t)}")
    return t


def _known(t: Tensor):
    return None if t._traced else t.numpy()


def _padded_targets(targets: Tensor, tl: Tensor, n: int) -> Tensor:
    """(N, S) targets: as given, or cut from the concatenated 1-D form."""
    if targets.ndim == 2:
        if targets.shape[0] != n:
            raise _err(_OP, f"targets {_fmt(targets)} must have {n} rows (the batch size)")
        return targets
    lens = _known(tl)
    if lens is None:
        raise _err(_OP, "concatenated 1-D targets need target_lengths known when the trace "
                   "is made (a list, or a tensor made outside the compiled function); pass "
                   "padded (N, S) targets to use traced lengths", NotImplementedError)
    if int(lens.sum()) != targets.shape[0]:
        raise _err(_OP, f"concatenated targets {_fmt(targets)} must hold sum(target_lengths)"
                   f" = {int(lens.sum())} labels")
    s = max(int(lens.max()) if n else 0, 1)
    starts = np.concatenate([[0], np.cumsum(lens)[:-1]]).astype(np.int64)
    idx = np.minimum(starts[:, None] + np.arange(s)[None, :],
                     max(targets.shape[0] - 1, 0))
    if targets.shape[0] == 0:
        return full((n, s), 0, dtype=targets.dtype)
    return targets[tensor(idx.reshape(-1))].reshape(n, s)


def _check_values(il: Tensor, tl: Tensor, T: int, S: int, padded: bool) -> None:
    a, b = _known(il), _known(tl)
    if a is not None and a.size and (a.max() > T or a.min() < 0):
        raise _err(_OP, f"Expected input_lengths to have value at most {T} (and at least 0), "
                   f"but got value {int(a.max() if a.max() > T else a.min())}")
    if b is not None and b.size and b.min() < 0:
        raise _err(_OP, f"target_lengths must be non-negative, got {int(b.min())}")
    if padded and b is not None and b.size and b.max() > S:
        raise _err(_OP, f"Expected tensor to have size at least {int(b.max())} at dimension 1,"
                   f" but got size {S} for argument #2 'targets'")


def ctc_loss(log_probs: Tensor, targets: Tensor, input_lengths, target_lengths,
             blank: int = 0, reduction: str = "mean", zero_infinity: bool = False) -> Tensor:
    """torch.nn.functional.ctc_loss: log_probs (T, N, C) (or (T, C) unbatched) of
    log_softmax outputs; targets padded (N, S) or concatenated (sum(target_lengths),);
    input_lengths and target_lengths of N (a tensor, list or tuple). 'mean' divides each
    loss by its target length (at least 1) and averages over the batch. zero_infinity
    replaces the infinite losses of impossible alignments (and their gradients) by zeros."""
    if not isinstance(log_probs, Tensor) or not log_probs.dtype.is_float:
        raise _err(_OP, f"log_probs must be a floating-point tensor, got {_fmt(log_probs)}",
                   TypeError)
    if reduction not in ("mean", "sum", "none"):
        raise _err(_OP, f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    batched = log_probs.ndim == 3
    if log_probs.ndim not in (2, 3):
        raise _err(_OP, f"log_probs must be (T, N, C) or (T, C), got {_fmt(log_probs)}")
    targets = targets if isinstance(targets, Tensor) else tensor(np.asarray(targets))
    if targets.dtype.is_float or targets.dtype is dt.bool_:
        raise _err(_OP, f"targets must be integer class indices, got {_fmt(targets)}",
                   TypeError)
    if not batched:
        log_probs = log_probs.unsqueeze(1)
        if targets.ndim != 1:
            raise _err(_OP, f"an unbatched (T, C) input takes 1-D targets, got "
                       f"{_fmt(targets)}")
        targets = targets.unsqueeze(0)
    T, N, C = (int(s) for s in log_probs.shape)
    if not 0 <= blank < C:
        raise _err(_OP, f"blank must be in label range [0, {C}), got {blank}")
    if targets.ndim not in (1, 2):
        raise _err(_OP, f"targets must be (N, S) or 1-D concatenated, got {_fmt(targets)}")
    il = _lengths(input_lengths, N, "input_lengths", batched)
    tl = _lengths(target_lengths, N, "target_lengths", batched)
    padded = targets.ndim == 2
    _check_values(il, tl, T, targets.shape[-1] if padded else 0, padded)
    tg = _padded_targets(targets.long(), tl, N)
    S = int(tg.shape[1])
    L = 2 * S + 1

    # the extended target: blank, t1, blank, t2, ..., blank; entries past 2 * len are blank
    s_idx = arange(L, dtype=dt.i64)
    lab_pos = ops.minimum((s_idx - 1) // 2, max(S - 1, 0))
    in_target = (s_idx % 2 == 1) & (s_idx.unsqueeze(0) < 2 * tl.unsqueeze(1) + 1)
    labels = tg[:, lab_pos] if S else full((N, L), blank, dtype=dt.i64)
    ext = where(in_target, labels.clamp(min=0, max=C - 1), blank)            # (N, L)
    prev2 = ops.concatenate([full((N, 2), -1, dtype=dt.i64), ext[:, :L - 2]], 1)
    skip = (s_idx % 2 == 1) & (s_idx >= 2) & (ext != prev2)                  # (N, L)

    if log_probs._traced and T > _UNROLL_WARN:
        warnings.warn(f"ctc_loss inside tj.compile unrolls its recursion over T={T} frames "
                      f"into the trace; compiling takes about a second per frame. For long "
                      f"inputs call ctc_loss outside the compiled function "
                      f"(at {user_location()})", stacklevel=2)
    lp = log_probs.gather(2, ext.unsqueeze(0).expand(T, N, L))                # (T, N, L)
    neg = full((N, L), _NEG, dtype=log_probs.dtype)
    start = s_idx < 2
    if T == 0:
        alpha = neg
    else:
        alpha = where(start.unsqueeze(0) & (il.unsqueeze(1) > 0), lp[0], neg)
    pad1 = full((N, 1), _NEG, dtype=log_probs.dtype)
    pad2 = full((N, 2), _NEG, dtype=log_probs.dtype)
    for t in range(1, T):
        a1 = ops.concatenate([pad1, alpha[:, :L - 1]], 1)
        a2 = where(skip, ops.concatenate([pad2, alpha[:, :L - 2]], 1), _NEG)
        nxt = _lse([alpha, a1, a2]) + lp[t]
        alpha = where((il > t).unsqueeze(1), nxt, alpha)

    # total: the alphas at the last blank and the last label of each target
    end = (2 * tl).unsqueeze(1)
    last_blank = alpha.gather(1, end).squeeze(1)
    last_label = where(tl > 0, alpha.gather(1, (end - 1).clamp(min=0)).squeeze(1), _NEG)
    loss = -_lse([last_blank, last_label])
    impossible = loss == math.inf
    if zero_infinity:
        loss = where(impossible, 0.0, loss)
    else:
        loss = loss + _nan_slope(log_probs, il, impossible)
    if not batched:
        loss = loss.squeeze(0)
    if reduction == "mean":
        per = loss / tl.clamp(min=1).to(loss.dtype).reshape(loss.shape)
        return per.mean()
    return loss.sum() if reduction == "sum" else loss
