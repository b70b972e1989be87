"""torch.nn.functional.embedding_bag: sums, means or maxima of bags of embedding rows. A bag
is a row of a 2-D input, or a run of a 1-D input between consecutive offsets. The bags are a
[bags, indices] membership mask built from the offsets on the device (offsets may be data of a
compiled call), so sum and mean are one matmul and max a masked reduction."""
from __future__ import annotations

import numpy as np

from ..ir import dtypes as dt
from ..tracer import checks as _checks
from ..tracer import ops
from ..tracer.creation import arange
from ..tracer.stacking import index_select
from ..tracer.tensor import Tensor

__all__ = ["embedding_bag"]


def _offsets(op: str, idx: Tensor, offsets, include_last_offset: bool) -> tuple[Tensor, Tensor]:
    """(starts, ends) of each bag over the flattened indices."""
    n = idx.numel()
    off = ops.as_tensor(offsets, like=idx if idx._traced else None)
    if off.ndim != 1 or not off.dtype.is_int:
        raise ops._err(op, f"offsets has to be a 1D integer Tensor, got {ops._fmt(off)}",
                       ValueError)
    if off.shape[0] == 0:                     # no bags (a 2-D input of 0 rows)
        return off, off
    first = ops.reshape(off[:1], (1,))
    msg = f"{op}: offsets[0] has to be 0, i.e., the first sequence in the mini-batch has to " \
          f"start from position 0"
    if not _checks.check_index(first, 0, 1, msg, cls=RuntimeError):
        if int(first.item()) != 0:
            raise ops._err(op, f"offsets[0] has to be 0, i.e., the first sequence in the "
                           f"mini-batch has to start from position 0. However, got "
                           f"{int(first.item())}", RuntimeError)
    if include_last_offset:
        return off[:-1], off[1:]
    return off, ops.pad(off[1:], [(0, 1)], n)


def embedding_bag(input: Tensor, weight: Tensor, offsets: Tensor | None = None,  # noqa: A002
                  max_norm: float | None = None, norm_type: float = 2,
                  scale_grad_by_freq: bool = False, mode: str = "mean", sparse: bool = False,
                  per_sample_weights: Tensor | None = None, include_last_offset: bool = False,
                  padding_idx: int | None = None) -> Tensor:
    """[bags, embedding_dim]: for each bag the sum / mean / max of weight's rows at its
    indices (times per_sample_weights, mode 'sum' only); indices equal to padding_idx are
    left out (not counted by the mean); an empty bag gives zeros. sparse only selects torch's
    gradient layout: tracejit's gradient is dense, same values."""
    op = "embedding_bag"
    w = ops.as_tensor(weight)
    idx = ops.as_tensor(input)
    if max_norm is not None or scale_grad_by_freq:
        raise ops._err(op, "max_norm= and scale_grad_by_freq= are not supported",
                       NotImplementedError)
    if mode not in ("sum", "mean", "max"):
        raise ops._err(op, f"mode has to be one of sum, mean or max, got {mode!r}", ValueError)
    if per_sample_weights is not None and mode != "sum":
        raise ops._err(op, f"per_sample_weights was not None. per_sample_weights is only "
                       f"supported for mode='sum' (got mode='{mode}')", NotImplementedError)
    if w.ndim != 2:
        raise ops._err(op, f"weight has to be a 2D Tensor, got {ops._fmt(w)}", ValueError)
    if not idx.dtype.is_int:
        raise ops._err(op, f"input must be an integer tensor, got {ops._fmt(idx)}", TypeError)
    psw = None if per_sample_weights is None else ops.as_tensor(per_sample_weights)
    if psw is not None and psw.shape != idx.shape:
        raise ops._err(op, f"per_sample_weights {ops._fmt(psw)} must have the shape of "
                       f"input {ops._fmt(idx)}", ValueError)
    if idx.ndim == 2:
        if offsets is not None:
            raise ops._err(op, f"if input is 2D, then offsets has to be None, as input is "
                           f"treated is a mini-batch of fixed length sequences. However, "
                           f"found offsets of type {type(offsets).__name__}", ValueError)
        b, length = idx.shape
        offsets = ops.as_tensor(np.arange(0, b * length, max(length, 1), dtype=np.int64)[:b],
                                like=idx if idx._traced else None)
        include_last_offset = False
    elif idx.ndim == 1:
        if offsets is None:
            raise ops._err(op, "offsets has to be a 1D Tensor but got None", ValueError)
    else:
        raise ops._err(op, f"input has to be 1D or 2D Tensor, but got {ops._fmt(idx)}",
                       ValueError)
    flat = ops.reshape(idx, (-1,))
    n, rows = flat.shape[0], w.shape[0]
    if padding_idx is not None:
        if not -rows <= padding_idx < rows:
            raise ops._err(op, f"padding_idx {padding_idx} must be within num_embeddings "
                           f"{rows}", AssertionError)
        padding_idx %= rows
    starts, ends = _offsets(op, flat, offsets, include_last_offset)
    _checks.rows_in_range(flat, rows, op, f"{rows} embeddings")
    emb = index_select(w, 0, flat)                                       # (n, D)
    if flat._traced:        # the last failing check of a trace is reported: this one
        _checks.rows_in_range(flat, rows, op, f"{rows} embeddings")
    if psw is not None:
        emb = ops.mul(emb, ops.reshape(psw, (n, 1)))
    pos = ops.reshape(arange(n), (1, n))
    member = ops.logical_and(ops.ge(pos, ops.reshape(starts, (-1, 1))),
                             ops.lt(pos, ops.reshape(ends, (-1, 1))))       # (bags, n)
    if padding_idx is not None:
        member = ops.logical_and(member, ops.reshape(ops.ne(flat, padding_idx), (1, n)))
    count = ops.sum(ops.cast(member, w.dtype), 1, keepdims=True)         # (bags, 1)
    if mode == "max":
        cand = ops.where(ops.unsqueeze(member, -1), ops.unsqueeze(emb, 0),
                         ops.as_tensor(float("-inf"), w.dtype, like=w))
        best = ops.amax(cand, 1) if n else ops.sum(cand, 1)   # (ties share, as amax)
        return ops.where(ops.gt(count, 0), best, ops.as_tensor(0.0, w.dtype, like=w))
    total = ops.matmul(ops.cast(member, w.dtype), emb)                   # (bags, D)
    if mode == "sum":
        return total
    return ops.div(total, ops.maximum(count, ops.as_tensor(1.0, w.dtype, like=w)))
