"""`nn.utils.spectral_norm` / `remove_spectral_norm` (torch's original API, as GAN
discriminators call it): the parameter `weight` becomes `weight_orig`, with buffers `weight_u`
and `weight_v` holding the power iteration's singular vectors; before each call a forward
pre-hook sets `module.weight = weight_orig / sigma`, sigma = u . (W v), after (in training mode)
`n_power_iterations` steps that update u and v in place without gradient, as torch."""
from __future__ import annotations

from typing import Any

from ..ir.core import user_location
from ..tracer import ops
from ..tracer.products import dot, mv
from ..tracer.state import no_grad
from ..tracer.tensor import Tensor
from . import functional as F
from .module import Module
from .parameter import Parameter
from .weight_norm import hook_of, hooked_parameter

__all__ = ["spectral_norm", "remove_spectral_norm"]


class SpectralNorm:
    """The forward pre-hook: power iteration on the weight seen as a (size(dim), -1) matrix."""

    def __init__(self, name: str, n_power_iterations: int, dim: int, eps: float) -> None:
        if n_power_iterations <= 0:
            raise ValueError(f"spectral_norm: expected n_power_iterations to be positive, but "
                             f"got n_power_iterations={n_power_iterations}")
        self.name, self.n_power_iterations, self.dim, self.eps = (name, n_power_iterations,
                                                                  dim, eps)

    def reshape_weight_to_matrix(self, weight: Tensor) -> Tensor:
        if self.dim != 0:
            perm = [self.dim] + [d for d in range(weight.ndim) if d != self.dim]
            weight = weight.permute(*perm)
        return weight.reshape(weight.shape[0], -1)

    def compute_weight(self, module: Module, do_power_iteration: bool) -> Tensor:
        weight = getattr(module, self.name + "_orig")
        u = getattr(module, self.name + "_u")
        v = getattr(module, self.name + "_v")
        mat = self.reshape_weight_to_matrix(weight)
        if do_power_iteration:
            with no_grad():
                for _ in range(self.n_power_iterations):
                    # (in place, as torch's out=: the buffers carry over to the next call)
                    v.copy_(F.normalize(mv(mat.t(), u), dim=0, eps=self.eps))
                    u.copy_(F.normalize(mv(mat, v), dim=0, eps=self.eps))
            # (copies, so that backward sees the values this call used)
            u, v = u.clone(), v.clone()
        sigma = dot(u, mv(mat, v))
        return weight / sigma

    def __call__(self, module: Module, inputs: Any) -> None:
        setattr(module, self.name, self.compute_weight(module, module.training))


def spectral_norm(module: Module, name: str = "weight", n_power_iterations: int = 1,
                  eps: float = 1e-12, dim: int | None = None) -> Module:
    """Divide `module.<name>` by its largest singular value, estimated by power iteration."""
    weight = hooked_parameter(module, name, SpectralNorm, "spectral_norm")
    if dim is None:       # (torch: the output channels of a transposed convolution are dim 1)
        dim = 1 if type(module).__name__.startswith("ConvTranspose") else 0
    fn = SpectralNorm(name, n_power_iterations, dim, eps)
    with no_grad():
        mat = fn.reshape_weight_to_matrix(weight)
        h, w = mat.shape
        u = F.normalize(ops.as_tensor(weight.new_empty(h).normal_(0, 1)), dim=0, eps=eps)
        v = F.normalize(ops.as_tensor(weight.new_empty(w).normal_(0, 1)), dim=0, eps=eps)
    del module._parameters[name]
    module.register_parameter(name + "_orig", weight)
    setattr(module, name, weight.detach())          # a plain attribute until the first call
    module.register_buffer(name + "_u", u.detach())
    module.register_buffer(name + "_v", v.detach())
    module.register_forward_pre_hook(fn)
    return module


def remove_spectral_norm(module: Module, name: str = "weight") -> Module:
    """Fold the current normalized weight back into one parameter `name`."""
    found = hook_of(module, name, SpectralNorm)
    if found is None:
        raise ValueError(f"spectral_norm of '{name}' not found in {type(module).__name__} "
                         f"(at {user_location()})")
    key, hook = found
    with no_grad():
        weight = hook.compute_weight(module, do_power_iteration=False)
    delattr(module, name)
    del module._parameters[name + "_orig"]
    del module._buffers[name + "_u"]
    del module._buffers[name + "_v"]
    setattr(module, name, Parameter(weight.detach()))
    del module._forward_pre_hooks[key]
    return module
