"""torch.nn.functional's instance_norm and pixel_shuffle / pixel_unshuffle, composed of tracejit
ops (their gradients, compiled form and fusion are those ops')."""
from __future__ import annotations

import math
from typing import Any

from ..tracer import composites as C
from ..tracer import ops
from ..tracer.state import no_grad
from ..tracer.tensor import Tensor

__all__ = ["instance_norm", "pixel_shuffle", "pixel_unshuffle"]


def instance_norm(input: Tensor, running_mean: Tensor | None = None,  # noqa: A002
                  running_var: Tensor | None = None, weight: Tensor | None = None,
                  bias: Tensor | None = None, use_input_stats: bool = True,
                  momentum: float = 0.1, eps: float = 1e-5) -> Tensor:
    """Normalises each (sample, channel) plane over its spatial positions (biased variance),
    then a per-channel weight and bias. use_input_stats=False normalises with the running
    statistics instead; with True and running stats given, they are updated as torch does:
    running <- (1 - momentum) * running + momentum * (the batch mean of each instance's mean,
    resp. unbiased variance)."""
    op = "instance_norm"
    x = ops.as_tensor(input)
    if x.ndim < 3:
        raise ops._err(op, f"expects an (N, C, *spatial) input with at least one spatial dim, "
                       f"got {ops._fmt(x)}", ValueError)
    n, c = x.shape[0], x.shape[1]
    spatial = math.prod(x.shape[2:])
    for name, t in (("running_mean", running_mean), ("running_var", running_var),
                    ("weight", weight), ("bias", bias)):
        if t is not None and tuple(t.shape) != (c,):
            raise ops._err(op, f"{name} must have shape ({c},) for input {ops._fmt(x)}, got "
                           f"{ops._fmt(t)}", RuntimeError)
    keep = (1, c) + (1,) * (x.ndim - 2)
    if use_input_stats:
        if spatial <= 1:
            raise ops._err(op, f"Expected more than 1 spatial element when training, got "
                           f"input size {list(x.shape)}", ValueError)
        # one row per (sample, channel): layer_norm's fused row kernel and autocast rule
        rows = ops.reshape(x, (n, c, spatial))
        y = ops.reshape(C.layer_norm(rows, (spatial,), eps=eps), x.shape)
        if running_mean is not None and running_var is not None:
            _update_running(rows, running_mean, running_var, spatial, momentum)
    else:
        if running_mean is None or running_var is None:
            raise ops._err(op, "Expected running_mean and running_var to be defined when "
                           "use_input_stats is false", RuntimeError)
        mean = ops.reshape(ops.cast(running_mean, x.dtype), keep)
        var = ops.reshape(ops.cast(running_var, x.dtype), keep)
        y = ops.mul(ops.sub(x, mean), ops.div(1.0, ops.sqrt(ops.add(var, eps))))
    if weight is not None:
        y = ops.mul(y, ops.reshape(weight, keep))
    if bias is not None:
        y = ops.add(y, ops.reshape(bias, keep))
    return y


def _update_running(rows: Tensor, rm: Tensor, rv: Tensor, spatial: int, momentum: Any) -> None:
    with no_grad():
        r = ops.stop_gradient(rows)
        mean = C.mean(r, (2,), True)                                   # [N, C, 1]
        centered = ops.sub(r, mean)
        var = ops.div(ops.sum(ops.mul(centered, centered), axis=2), spatial - 1)  # unbiased
        m = float(momentum)
        for run, batch in ((rm, C.mean(ops.reshape(mean, mean.shape[:2]), (0,), False)),
                           (rv, C.mean(var, (0,), False))):
            new = ops.add(ops.mul(run, 1.0 - m), ops.mul(ops.cast(batch, run.dtype), m))
            run.copy_(ops.cast(new, run.dtype))


# -- pixel shuffle ---------------------------------------------------------------------------
def pixel_shuffle(input: Tensor, upscale_factor: int) -> Tensor:  # noqa: A002
    """(*, C*r*r, H, W) -> (*, C, H*r, W*r): a reshape and a transpose."""
    op = "pixel_shuffle"
    x = ops.as_tensor(input)
    r = int(upscale_factor)
    if x.ndim < 3:
        raise ops._err(op, f"pixel_shuffle expects input to have at least 3 dimensions, but "
                       f"got input with {x.ndim} dimension(s)", RuntimeError)
    if r <= 0:
        raise ops._err(op, f"pixel_shuffle expects a positive upscale_factor, but got {r}",
                       RuntimeError)
    lead, (c, h, w) = tuple(x.shape[:-3]), x.shape[-3:]
    if c % (r * r):
        raise ops._err(op, f"pixel_shuffle expects its input's 'channel' dimension to be "
                       f"divisible by the square of upscale_factor, but input.size(-3)={c} "
                       f"is not divisible by {r * r}", RuntimeError)
    k = len(lead)
    y = ops.reshape(x, lead + (c // (r * r), r, r, h, w))
    y = ops.permute(y, tuple(range(k)) + (k, k + 3, k + 1, k + 4, k + 2))
    return ops.reshape(y, lead + (c // (r * r), h * r, w * r))


def pixel_unshuffle(input: Tensor, downscale_factor: int) -> Tensor:  # noqa: A002
    """(*, C, H*r, W*r) -> (*, C*r*r, H, W): pixel_shuffle's inverse."""
    op = "pixel_unshuffle"
    x = ops.as_tensor(input)
    r = int(downscale_factor)
    if x.ndim < 3:
        raise ops._err(op, f"pixel_unshuffle expects input to have at least 3 dimensions, but "
                       f"got input with {x.ndim} dimension(s)", RuntimeError)
    if r <= 0:
        raise ops._err(op, f"pixel_unshuffle expects a positive downscale_factor, but got {r}",
                       RuntimeError)
    lead, (c, h, w) = tuple(x.shape[:-3]), x.shape[-3:]
    if h % r or w % r:
        raise ops._err(op, f"pixel_unshuffle expects height ({h}) and width ({w}) to be "
                       f"divisible by downscale_factor ({r})", RuntimeError)
    k = len(lead)
    y = ops.reshape(x, lead + (c, h // r, r, w // r, r))
    y = ops.permute(y, tuple(range(k)) + (k, k + 2, k + 4, k + 1, k + 3))
    return ops.reshape(y, lead + (c * r * r, h // r, w // r))
