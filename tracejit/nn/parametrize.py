"""`nn.utils.parametrize` (register_parametrization, remove_parametrizations, is_parametrized,
cached) and `nn.utils.parametrizations.weight_norm`, as torch: the tensor `name` of a module
becomes a property computed on each access from `module.parametrizations[name]`, a
ParametrizationList holding the original value(s) (`original`, or `original0`, `original1`, ...
when the first parametrization's right_inverse returns a tuple) and the chain of
parametrization modules. The module's class is swapped for a subclass carrying the property,
so the state_dict keys (`parametrizations.weight.original0`, ...) are torch's and a torch
checkpoint loads as it is. Inside @tj.compile the property is computed in the trace."""
from __future__ import annotations

import contextlib
from typing import Any

from ..ir.core import user_location
from ..tracer.norms import vector_norm
from ..tracer.state import no_grad
from ..tracer.tensor import Tensor
from .container import ModuleDict, ModuleList
from .module import Module
from .parameter import Parameter

__all__ = ["register_parametrization", "remove_parametrizations", "is_parametrized", "cached",
           "ParametrizationList", "weight_norm"]

_CACHE: dict | None = None          # the `cached()` context's values, by (module id, name)


@contextlib.contextmanager
def cached():
    """Compute each parametrized tensor once inside the block (torch's caching context)."""
    global _CACHE
    outer, _CACHE = _CACHE, ({} if _CACHE is None else _CACHE)
    try:
        yield
    finally:
        _CACHE = outer


class ParametrizationList(ModuleList):
    """The parametrizations of one tensor and the original value(s) they start from."""

    def __init__(self, modules: list[Module], original: Tensor) -> None:
        super().__init__(modules)
        first = modules[0]
        new = original
        with no_grad():
            if hasattr(first, "right_inverse"):
                try:
                    new = first.right_inverse(original)
                except NotImplementedError:     # (torch: then the original is kept as is)
                    pass
        self.is_tensor = isinstance(new, Tensor)
        if self.is_tensor:
            self.ntensors = 1
            self.original = Parameter(new.detach(), original.requires_grad) \
                if isinstance(original, Parameter) else new.detach()
        else:
            self.ntensors = len(new)
            for i, t in enumerate(new):
                setattr(self, f"original{i}", Parameter(t.detach(), original.requires_grad))

    def forward(self) -> Tensor:
        if self.is_tensor:
            x = self[0](self.original)
        else:
            x = self[0](*(getattr(self, f"original{i}") for i in range(self.ntensors)))
        for m in list(self)[1:]:
            x = m(x)
        return x

    def right_inverse(self, value: Tensor) -> None:
        """Store `value` (what the parametrized tensor should become) into the originals."""
        with no_grad():
            for m in reversed(list(self)):
                if not hasattr(m, "right_inverse"):
                    raise RuntimeError(f"parametrization {type(m).__name__} does not "
                                       f"implement right_inverse (at {user_location()})")
                value = m.right_inverse(value)
            if self.is_tensor:
                self.original.copy_(value)
            else:
                for i, t in enumerate(value):
                    getattr(self, f"original{i}").copy_(t)


def _property(name: str) -> property:
    def get(self):
        if _CACHE is not None:
            key = (id(self), name)
            if key not in _CACHE:
                _CACHE[key] = self.parametrizations[name]()
            return _CACHE[key]
        return self.parametrizations[name]()

    def set_(self, value):
        self.parametrizations[name].right_inverse(value)
    return property(get, set_)


def is_parametrized(module: Module, tensor_name: str | None = None) -> bool:
    p = module.__dict__.get("_modules", {}).get("parametrizations")
    if p is None or not isinstance(p, ModuleDict):
        return False
    return len(p) > 0 if tensor_name is None else tensor_name in p


def register_parametrization(module: Module, tensor_name: str, parametrization: Module,
                             *, unsafe: bool = False) -> Module:
    """Make `module.<tensor_name>` the value of `parametrization` applied to an original
    (a chain when called again for the same name)."""
    if is_parametrized(module, tensor_name):
        module.parametrizations[tensor_name].append(parametrization)
        return module
    original = module._parameters.get(tensor_name)
    if original is None:
        original = module._buffers.get(tensor_name)
    if original is None:
        raise ValueError(f"register_parametrization: module '{type(module).__name__}' has no "
                         f"parameter or buffer with name '{tensor_name}' "
                         f"(at {user_location()})")
    plist = ParametrizationList([parametrization], original)
    delattr(module, tensor_name)
    if not is_parametrized(module):
        module.parametrizations = ModuleDict()
        cls = type(module)
        module.__class__ = type(f"Parametrized{cls.__name__}", (cls,), {})
    module.parametrizations[tensor_name] = plist
    setattr(type(module), tensor_name, _property(tensor_name))
    return module


def remove_parametrizations(module: Module, tensor_name: str,
                            leave_parametrized: bool = True) -> Module:
    """Drop the parametrization of `tensor_name`: it becomes a plain parameter again, holding
    the parametrized value (leave_parametrized) or the original."""
    if not is_parametrized(module, tensor_name):
        raise ValueError(f"remove_parametrizations: module {type(module).__name__} does not "
                         f"have a parametrization on {tensor_name} (at {user_location()})")
    plist = module.parametrizations[tensor_name]
    with no_grad():
        if leave_parametrized:
            value = getattr(module, tensor_name)
        elif plist.is_tensor:
            value = plist.original
        else:
            raise ValueError("remove_parametrizations: leave_parametrized=False needs a single "
                             "original tensor")
    delattr(type(module), tensor_name)
    del module.parametrizations[tensor_name]
    module.register_parameter(tensor_name, Parameter(value.detach()))
    if not is_parametrized(module):
        delattr(module, "parametrizations")
        module.__class__ = type(module).__bases__[0]
    return module


class _WeightNorm(Module):
    """weight = g * v / ||v|| (the norm over every dim but `dim`)."""

    def __init__(self, dim: int | None = 0) -> None:
        super().__init__()
        self.dim = -1 if dim is None else dim

    def _norm(self, v: Tensor) -> Tensor:
        if self.dim == -1:
            return vector_norm(v)
        d = self.dim % v.ndim
        return vector_norm(v, dim=tuple(i for i in range(v.ndim) if i != d), keepdim=True)

    def forward(self, weight_g: Tensor, weight_v: Tensor) -> Tensor:
        return weight_v * (weight_g / self._norm(weight_v))

    def right_inverse(self, weight: Tensor) -> tuple[Tensor, Tensor]:
        return self._norm(weight), weight


def weight_norm(module: Module, name: str = "weight", dim: int | None = 0) -> Module:
    """torch.nn.utils.parametrizations.weight_norm: `name` = original0 * original1 /
    ||original1|| (original0 the magnitude g, original1 the direction v)."""
    return register_parametrization(module, name, _WeightNorm(dim), unsafe=True)
