"""Setup shared by test_distributed_view_writes.py (a world of 1) and view_writes_worker.py
(2 ranks): parameters whose `.grad`s are views of one flat buffer, as a fused optimizer or a
bucketed reducer lays them out, and the plain gradients to compare that buffer with."""
from __future__ import annotations

import numpy as np

import tracejit as tj


def grads_as_views(params: list) -> tj.Tensor:
    """Set each parameter's `.grad` to a view of one flat zero buffer, in order; return it."""
    flat = tj.zeros(sum(p.numel() for p in params))
    off = 0
    for p in params:
        p.grad = flat[off:off + p.numel()].view(p.shape)
        off += p.numel()
    return flat


def flat_grads(module) -> np.ndarray:
    """The module's parameter gradients, flattened and concatenated in parameter order."""
    return np.concatenate([p.grad.numpy().ravel() for p in module.parameters()])
