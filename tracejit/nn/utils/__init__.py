"""`tracejit.nn.utils`: gradient clipping and parameter/vector conversion, as torch.nn.utils.

Clipping is branch-free: the gradients are always multiplied by min(1, max_norm / (norm +
1e-6)), so the same code runs eagerly and inside a compiled training step, where the norm is a
traced value that Python cannot look at."""
from __future__ import annotations

import math
from typing import Iterable

from ...tracer import ops
from ...tracer.norms import vector_norm
from ...tracer.state import no_grad
from ...tracer.tensor import Tensor

from .. import parametrize
from ..spectral_norm import remove_spectral_norm, spectral_norm
from ..weight_norm import remove_weight_norm, weight_norm
from . import rnn

__all__ = ["clip_grad_norm_", "clip_grad_value_", "clip_grads_with_norm_", "get_total_norm",
           "parameters_to_vector", "vector_to_parameters", "weight_norm", "remove_weight_norm",
           "spectral_norm", "remove_spectral_norm"]


def _as_list(tensors: Tensor | Iterable[Tensor]) -> list[Tensor]:
    return [tensors] if isinstance(tensors, Tensor) else list(tensors)


def get_total_norm(tensors: Tensor | Iterable[Tensor], norm_type: float = 2.0,
                   error_if_nonfinite: bool = False, foreach: bool | None = None) -> Tensor:
    """The p-norm of the per-tensor p-norms (the norm of all elements together)."""
    ts = _as_list(tensors)
    p = float(norm_type)
    if not ts:
        return ops.as_tensor(0.0)
    with no_grad():
        first = ts[0]
        norms = [ops.cast(vector_norm(t, p), first.dtype) for t in ts]
        total = vector_norm(ops.stack(norms), p)
    if error_if_nonfinite:
        # a data-dependent check: inside a compiled function .item() says it needs a
        # concrete value (pass error_if_nonfinite=False there), never skips it silently
        v = total.item()
        if math.isnan(v) or math.isinf(v):
            raise RuntimeError(f"The total norm of order {p} for gradients from `parameters` is "
                               f"non-finite, so it cannot be clipped. To disable this error and "
                               f"scale the gradients by the non-finite norm anyway, set "
                               f"`error_if_nonfinite=False`")
    return total


def clip_grads_with_norm_(parameters: Tensor | Iterable[Tensor], max_norm: float,
                          total_norm: Tensor, foreach: bool | None = None) -> None:
    """Scale every gradient in place by min(1, max_norm / (total_norm + 1e-6))."""
    grads = [p.grad for p in _as_list(parameters) if p.grad is not None]
    if not grads:
        return
    with no_grad():
        coef = ops.clip(ops.div(float(max_norm), ops.add(total_norm, 1e-6)), None, 1.0)
        for g in grads:
            g.mul_(ops.cast(coef, g.dtype) if g.dtype is not coef.dtype else coef)


def clip_grad_norm_(parameters: Tensor | Iterable[Tensor], max_norm: float,
                    norm_type: float = 2.0, error_if_nonfinite: bool = False,
                    foreach: bool | None = None) -> Tensor:
    """Scale the gradients so that their total norm is at most max_norm; returns the total
    norm before clipping (a 0-d tensor)."""
    params = _as_list(parameters)
    grads = [p.grad for p in params if p.grad is not None]
    total = get_total_norm(grads, norm_type, error_if_nonfinite, foreach)
    clip_grads_with_norm_(params, max_norm, total, foreach)
    return total


def clip_grad_value_(parameters: Tensor | Iterable[Tensor], clip_value: float,
                     foreach: bool | None = None) -> None:
    """Clamp every gradient in place to [-clip_value, clip_value]."""
    v = float(clip_value)
    with no_grad():
        for p in _as_list(parameters):
            if p.grad is not None:
                p.grad.clamp_(-v, v)


def parameters_to_vector(parameters: Iterable[Tensor]) -> Tensor:
    """All parameters flattened and concatenated into one vector."""
    ps = list(parameters)
    if not ps:
        raise ValueError("parameters_to_vector: no parameters given")
    return ops.cat([ops.reshape(p, (-1,)) for p in ps])


def vector_to_parameters(vec: Tensor, parameters: Iterable[Tensor]) -> None:
    """Slice `vec` back into the parameters' shapes; each parameter's data is replaced."""
    if not isinstance(vec, Tensor) or vec.ndim != 1:
        raise TypeError(f"expected a 1-D Tensor, but got: {type(vec).__name__}")
    ps = list(parameters)
    need = sum(p.numel() for p in ps)
    if need != vec.numel():
        raise ValueError(f"vector_to_parameters: the vector has {vec.numel()} elements, the "
                         f"parameters {need}")
    offset = 0
    with no_grad():
        for p in ps:
            n = p.numel()
            piece = ops.reshape(vec[offset:offset + n], p.shape)
            p.data = ops.cast(piece, p.dtype) if piece.dtype is not p.dtype else piece
            offset += n


# (after the functions above: prune uses parameters_to_vector)
from . import parametrizations, prune, stateless  # noqa: E402
