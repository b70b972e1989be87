"""torch.utils.checkpoint's spelling of tj.checkpoint (activation checkpointing), for model code
that calls `torch.utils.checkpoint.checkpoint(layer, x, use_reentrant=False)` as HF's
gradient checkpointing does. fn may return a tensor or tuples/lists/dicts of tensors and
other values (HF layers return tuples)."""
from __future__ import annotations

from typing import Callable

from ..tracer.function import checkpoint

__all__ = ["checkpoint", "checkpoint_sequential"]


def checkpoint_sequential(functions, segments: int, input, use_reentrant: bool | None = None,
                          **kwargs):
    """torch's checkpoint_sequential: run `functions` (a Sequential or a list of modules) in
    `segments` chunks, each but the last checkpointed."""
    fns = list(functions.children()) if hasattr(functions, "children") else list(functions)
    size = len(fns) // segments

    def run(start: int, end: int) -> Callable:
        def forward(x):
            for f in fns[start:end + 1]:
                x = f(x)
            return x
        return forward
    end = -1
    for start in range(0, size * (segments - 1), size):
        end = start + size - 1
        input = checkpoint(run(start, end), input, use_reentrant=use_reentrant)
    return run(end + 1, len(fns) - 1)(input)
