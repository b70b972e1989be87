"""Functional ops added with channel_layers.py, loss_more.py, activation_shrink.py,
bilinear_unpool.py and embedding_bag.py (channel_shuffle here, the others re-exported from
their functional_* files). nn/functional.py imports this module, so nothing here may import
nn/functional.py (tests/test_import_layers.py forbids the cycle)."""
from __future__ import annotations

from ..tracer import ops
from ..tracer.tensor import Tensor
from . import functional_activations_more as _acts, functional_losses_more as _losses
from .functional_activations_more import *  # noqa: F401,F403
from .functional_losses_more import *  # noqa: F401,F403
from . import functional_layers_more as _layers
from .functional_layers_more import *  # noqa: F401,F403
from .functional_embedding_bag import embedding_bag  # noqa: F401

__all__ = ["channel_shuffle", "embedding_bag"] + _losses.__all__ + _acts.__all__ + \
    _layers.__all__


def channel_shuffle(input: Tensor, groups: int) -> Tensor:  # noqa: A002
    """(N, C, *) -> the C channels seen as (groups, C // groups), transposed and flattened:
    output channel j * groups + g is input channel g * (C // groups) + j."""
    x = ops.as_tensor(input)
    groups = int(groups)
    if groups <= 0:
        raise ops._err("channel_shuffle", f"Number of groups to divide channels in must be "
                       f"positive. Value of groups:{groups}", RuntimeError)
    if x.ndim <= 2:
        raise ops._err("channel_shuffle", f"expects input with > 2 dims, but got input "
                       f"{ops._fmt(x)}", RuntimeError)
    n, c, rest = x.shape[0], x.shape[1], tuple(x.shape[2:])
    if c % groups:
        raise ops._err("channel_shuffle", f"Number of channels must be divisible by groups. "
                       f"Got {c} channels and {groups} groups.", RuntimeError)
    y = ops.reshape(x, (n, groups, c // groups) + rest)
    return ops.reshape(ops.swapaxes(y, 1, 2), (n, c) + rest)
