"""SyncBatchNorm: batch norm whose training statistics are those of the whole batch spread over
the ranks of a process group (torch.nn.SyncBatchNorm's semantics).

Each rank sums its shard and the sums are all-reduced, twice: the channel sums and counts give
the global mean, then the sums of squared deviations from it give the biased variance (the same
two-pass formula as BatchNorm, so a rank's shard of the output equals BatchNorm on the full
batch; a single sum-of-squares pass would lose digits to cancellation when the mean is large).
The all-reduces are `dist_all_reduce` operations (ir/prims_collective.py), whose derivative is
the all-reduce of the cotangent: backward therefore sums over ranks what torch's backward sums
(sum_dy and sum_dy_xmu), and a shard's input gradient is that of the sum of all ranks' losses
on the full batch. The weight and bias gradients stay this rank's share, as in torch: DDP sums
(averages) them. The same operations run eagerly and inside `tj.compile`.

Without an initialized process group, in a group of one rank, or in eval mode (running stats),
it is BatchNorm, as torch's is."""
from __future__ import annotations

from typing import Any

from ..distributed import group as _group
from ..distributed.base import ProcessGroup, ReduceOp
from ..distributed.traced import OP_CODES, traced_all_reduce_value
from ..ir import dtypes as dt
from ..ir.primitives import P, bind
from ..tracer import ops
from ..tracer.creation import full
from ..tracer.state import STATE, no_grad
from ..tracer.tensor import Tensor
from . import functional as F
from .batchnorm import _BatchNorm
from .module import Module


def _summed(x: Tensor, pg: ProcessGroup) -> Tensor:
    """The sum of x over pg's ranks as a new tensor, differentiable (the cotangent is summed
    over the ranks too)."""
    if STATE.traces:      # an operation of the compiled graph, ordered after its collectives
        return traced_all_reduce_value(x, ReduceOp.SUM, pg)
    params = {"op": OP_CODES[ReduceOp.SUM]}
    if pg.gid != 0:
        params["group"] = pg.gid
    return bind(P.dist_all_reduce, x, x, **params)


def sync_batch_norm(x: Tensor, running_mean: Tensor | None, running_var: Tensor | None,
                    weight: Tensor | None, bias: Tensor | None, momentum: Any, eps: float,
                    pg: ProcessGroup) -> Tensor:
    """Training-mode batch norm with the statistics of the batch over all of pg's ranks;
    updates the running stats (when given) with the global mean and unbiased variance."""
    c = x.shape[1]
    axes = (0,) + tuple(range(2, x.ndim))
    keep = (1, c) + (1,) * (x.ndim - 2)
    # float16/bfloat16 statistics in float32, as F.batch_norm's reductions accumulate
    acc = dt.f32 if x.dtype in (dt.f16, dt.bf16) else x.dtype
    xs = ops.cast(x, acc) if acc != x.dtype else x
    local = full((1,), x.numel() // c, dtype=acc, device=x.device)
    first = _summed(ops.concatenate([ops.sum(xs, axis=axes), local]), pg)
    count = first[c]            # the global number of values per channel (a tensor: ranks
    mean = ops.div(first[:c], count)        # may hold shards of different sizes)
    centered = ops.sub(xs, ops.reshape(mean, keep))
    var = ops.div(_summed(ops.sum(ops.mul(centered, centered), axis=axes), pg), count)
    if running_mean is not None and running_var is not None:
        with no_grad():
            m = ops.cast(momentum, acc) if isinstance(momentum, Tensor) else float(momentum)
            unbiased = ops.mul(var, ops.div(count, ops.sub(count, 1.0)))
            keep_old = ops.sub(1.0, m) if isinstance(m, Tensor) else 1.0 - m
            for run, batch in ((running_mean, mean), (running_var, unbiased)):
                new = ops.add(ops.mul(ops.cast(run, acc), keep_old),
                              ops.mul(ops.stop_gradient(batch), m))
                run.copy_(ops.cast(new, run.dtype))
    y = ops.mul(centered, ops.reshape(ops.div(1.0, ops.sqrt(ops.add(var, eps))), keep))
    if weight is not None:
        y = ops.mul(y, ops.reshape(ops.cast(weight, acc), keep))
    if bias is not None:
        y = ops.add(y, ops.reshape(ops.cast(bias, acc), keep))
    return ops.cast(y, x.dtype) if acc != x.dtype else y


class SyncBatchNorm(_BatchNorm):
    """Batch norm over (N, C, ...) input whose training statistics cover every rank's batch.

    process_group: the group the statistics are reduced over (None: the default group)."""

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1,
                 affine: bool = True, track_running_stats: bool = True,
                 process_group: Any = None, device: Any = None, dtype: Any = None, *,
                 bias: bool = True) -> None:
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device,
                         dtype, bias=bias)
        self.process_group = process_group

    def _check_input_dim(self, x: Tensor) -> None:
        if x.ndim < 2:
            raise ValueError(f"SyncBatchNorm: expected at least 2D input (got {x.ndim}D input "
                             f"of shape {list(x.shape)})")
        if x.shape[1] == 0:
            raise ValueError("SyncBatchNorm number of input channels should be non-zero")

    def _group(self) -> ProcessGroup | None:
        """The group to synchronize over, or None where torch falls back to BatchNorm (no
        process group, or a group of one rank)."""
        if not _group.is_initialized():
            return None
        pg = _group.resolve(self.process_group, "SyncBatchNorm")
        return pg if pg is not None and pg.size > 1 else None

    def forward(self, input: Tensor) -> Tensor:  # noqa: A002
        pg = self._group() if self.training else None
        if pg is None:
            return super().forward(input)
        self._check_input_dim(input)
        factor: Any = 0.0 if self.momentum is None else self.momentum
        if self.track_running_stats and self.num_batches_tracked is not None:
            with no_grad():
                self.num_batches_tracked.add_(1)
            if self.momentum is None:       # cumulative moving average, as torch
                factor = ops.div(1.0, ops.cast(self.num_batches_tracked, dt.f64))
        track = self.track_running_stats
        return sync_batch_norm(input, self.running_mean if track else None,
                               self.running_var if track else None, self.weight, self.bias,
                               factor, self.eps, pg)

    def extra_repr(self) -> str:
        return super().extra_repr() + ("" if self.process_group is None else
                                       ", process_group=<group>")

    @classmethod
    def convert_sync_batchnorm(cls, module: Module, process_group: Any = None) -> Module:
        """Replace every BatchNorm1d/2d/3d in module's tree by a SyncBatchNorm holding the same
        parameters and buffers (the same tensors) and training flag; returns module, or the new
        layer when module itself is a batch norm."""
        out = module
        if isinstance(module, _BatchNorm):
            out = cls(module.num_features, module.eps, module.momentum, module.affine,
                      module.track_running_stats, process_group,
                      bias=module.bias is not None)
            if module.affine:
                out.weight = module.weight
                out.bias = module.bias
            out.running_mean = module.running_mean
            out.running_var = module.running_var
            out.num_batches_tracked = module.num_batches_tracked
            out.training = module.training
        # iteratively: (parent, name, child) pairs, each child converted and set in place
        stack = [(out, name, child) for name, child in module.named_children()]
        while stack:
            parent, name, child = stack.pop()
            new = child
            if isinstance(child, _BatchNorm):
                new = cls.convert_sync_batchnorm(child, process_group)
            else:
                stack.extend((child, n, c) for n, c in child.named_children())
            parent.add_module(name, new)
        return out
