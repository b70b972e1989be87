"""`nn.utils.weight_norm` / `remove_weight_norm` (torch's original API, as WaveNet/HiFi-GAN-style
vocoders and many GAN and diffusion conv nets call it): the parameter `weight` is replaced by a
magnitude `weight_g` (its norm over every dim but `dim`, kept as size-1 dims) and a direction
`weight_v`, and a forward pre-hook sets `module.weight = weight_v * (weight_g / ||weight_v||)`
before each call, so gradients reach g and v (eagerly and inside @tj.compile, where the hook
runs in the trace)."""
from __future__ import annotations

import warnings
from typing import Any

from ..ir.core import user_location
from ..tracer.norms import vector_norm
from ..tracer.state import no_grad
from ..tracer.tensor import Tensor
from .module import Module
from .parameter import Parameter

__all__ = ["weight_norm", "remove_weight_norm", "norm_except_dim"]


def norm_except_dim(v: Tensor, pow: float = 2, dim: int | None = 0) -> Tensor:  # noqa: A002
    """The `pow`-norm of v over every dim but `dim` (all of them for None or -1), with v's
    rank (the reduced dims kept as 1), as torch._weight_norm's g."""
    if dim is None or dim == -1:
        return vector_norm(v, pow)
    d = dim % v.ndim
    return vector_norm(v, pow, dim=tuple(i for i in range(v.ndim) if i != d), keepdim=True)


class WeightNorm:
    """The forward pre-hook that recomputes `name` from `name_g` and `name_v`."""

    def __init__(self, name: str, dim: int | None) -> None:
        self.name, self.dim = name, -1 if dim is None else dim

    def compute_weight(self, module: Module) -> Tensor:
        g = getattr(module, self.name + "_g")
        v = getattr(module, self.name + "_v")
        return v * (g / norm_except_dim(v, 2, self.dim))

    def __call__(self, module: Module, inputs: Any) -> None:
        setattr(module, self.name, self.compute_weight(module))


def hook_of(module: Module, name: str, hook_type: type) -> tuple[Any, Any] | None:
    """(key, hook) of `module`'s `hook_type` pre-hook on parameter `name`, or None."""
    for key, hook in module._forward_pre_hooks.items():
        if isinstance(hook, hook_type) and hook.name == name:
            return key, hook
    return None


def hooked_parameter(module: Module, name: str, hook_type: type, op: str) -> Parameter:
    """`module`'s parameter `name`, which a `hook_type` pre-hook is about to take over: refused
    when one already has it or when there is no such parameter (torch's errors)."""
    if hook_of(module, name, hook_type) is not None:
        raise RuntimeError(f"{op}: cannot register two {op} hooks on the same parameter "
                           f"{name} (at {user_location()})")
    weight = module._parameters.get(name)
    if not isinstance(weight, Parameter):
        raise ValueError(f"{op}: the module has no parameter {name!r} (at {user_location()})")
    return weight


def weight_norm(module: Module, name: str = "weight", dim: int | None = 0) -> Module:
    """Reparametrize `module.<name>` as g * v / ||v|| (norm over all dims but `dim`)."""
    warnings.warn("torch.nn.utils.weight_norm is deprecated in favor of "
                  "torch.nn.utils.parametrizations.weight_norm (tracejit has only this one).",
                  FutureWarning, stacklevel=2)
    weight = hooked_parameter(module, name, WeightNorm, "weight_norm")
    fn = WeightNorm(name, dim)
    del module._parameters[name]
    with no_grad():
        g = norm_except_dim(weight, 2, fn.dim)
    module.register_parameter(name + "_g", Parameter(g.detach()))
    module.register_parameter(name + "_v", Parameter(weight.detach()))
    setattr(module, name, fn.compute_weight(module))
    module.register_forward_pre_hook(fn)
    return module


def remove_weight_norm(module: Module, name: str = "weight") -> Module:
    """Fold g and v back into one parameter `name` and drop the hook."""
    found = hook_of(module, name, WeightNorm)
    if found is None:
        raise ValueError(f"weight_norm of '{name}' not found in {type(module).__name__} "
                         f"(at {user_location()})")
    key, hook = found
    weight = hook.compute_weight(module)
    delattr(module, name)
    del module._parameters[name + "_g"]
    del module._parameters[name + "_v"]
    setattr(module, name, Parameter(weight.detach()))
    del module._forward_pre_hooks[key]
    return module
