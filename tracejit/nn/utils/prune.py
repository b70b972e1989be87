"""`tracejit.nn.utils.prune`: torch.nn.utils.prune's functions. Pruning `name` of a module
renames the parameter to `name_orig`, adds the buffer `name_mask` and a forward pre-hook that
sets `name = name_mask * name_orig` before each forward, so training updates name_orig and
the pruned entries get a zero gradient; `remove` makes it permanent. The methods and the mask
computations are in prune_methods.py."""
from __future__ import annotations

from typing import Any, Iterable

from ...tracer import ops
from ...tracer.creation import ones_like
from ...tracer.state import bump_attr_epoch
from ...tracer.tensor import Tensor
from ..module import Module
from . import parameters_to_vector
from .prune_methods import (BasePruningMethod, CustomFromMask, Identity, L1Unstructured,
                            LnStructured, PruningContainer, RandomStructured,
                            RandomUnstructured)

__all__ = ["BasePruningMethod", "PruningContainer", "Identity", "RandomUnstructured",
           "L1Unstructured", "RandomStructured", "LnStructured", "CustomFromMask", "identity",
           "random_unstructured", "l1_unstructured", "random_structured", "ln_structured",
           "global_unstructured", "custom_from_mask", "remove", "is_pruned"]


def identity(module: Module, name: str) -> Module:
    """The pruning reparametrisation with a mask of ones."""
    Identity.apply(module, name)
    return module


def random_unstructured(module: Module, name: str, amount: float) -> Module:
    """Prune `amount` (a fraction in [0, 1], or a count) of the entries at random."""
    RandomUnstructured.apply(module, name, amount)
    return module


def l1_unstructured(module: Module, name: str, amount: float,
                    importance_scores: Tensor | None = None) -> Module:
    """Prune the `amount` entries of smallest absolute value (of importance_scores if
    given)."""
    L1Unstructured.apply(module, name, amount=amount, importance_scores=importance_scores)
    return module


def random_structured(module: Module, name: str, amount: float, dim: int) -> Module:
    """Prune `amount` channels along dim at random."""
    RandomStructured.apply(module, name, amount, dim)
    return module


def ln_structured(module: Module, name: str, amount: float, n: Any, dim: int,
                  importance_scores: Tensor | None = None) -> Module:
    """Prune the `amount` channels along dim of smallest L`n` norm."""
    LnStructured.apply(module, name, amount, n, dim, importance_scores=importance_scores)
    return module


def custom_from_mask(module: Module, name: str, mask: Tensor) -> Module:
    """Prune where mask is 0."""
    CustomFromMask.apply(module, name, mask)
    return module


def global_unstructured(parameters: Iterable[tuple[Module, str]], pruning_method: type,
                        importance_scores: dict | None = None, **kwargs: Any) -> None:
    """Prune the (module, name) tensors together, as one vector: e.g. the `amount` entries of
    smallest absolute value among all of them (pruning_method=L1Unstructured)."""
    if not isinstance(parameters, Iterable):
        raise TypeError("global_unstructured(): parameters is not an Iterable")
    parameters = list(parameters)
    scores = importance_scores if importance_scores is not None else {}
    if not isinstance(scores, dict):
        raise TypeError("global_unstructured(): importance_scores must be of type dict")
    values = parameters_to_vector([scores.get((m, n), getattr(m, n)) for m, n in parameters])
    default = parameters_to_vector([getattr(m, n + "_mask") if hasattr(m, n + "_mask")
                                    else ones_like(getattr(m, n)) for m, n in parameters])
    method = pruning_method(**kwargs)
    method._tensor_name = "temp"
    if method.PRUNING_TYPE != "unstructured":
        raise TypeError(f'Only "unstructured" PRUNING_TYPE supported for the `pruning_method`. '
                        f'Found method {pruning_method} of type {method.PRUNING_TYPE}')
    container = PruningContainer(method)
    final = container.compute_mask(values.detach(), default.detach())
    at = 0
    for m, n in parameters:
        p = getattr(m, n)
        size = p.numel()
        custom_from_mask(m, n, mask=ops.reshape(final[at:at + size], p.shape))
        at += size


def remove(module: Module, name: str) -> Module:
    """Make the pruning of `name` permanent: a parameter with the pruned values, no
    name_orig, name_mask or hook."""
    for k, hook in list(module._forward_pre_hooks.items()):
        if isinstance(hook, BasePruningMethod) and hook._tensor_name == name:
            hook.remove(module)
            del module._forward_pre_hooks[k]
            bump_attr_epoch()
            return module
    raise ValueError(f"Parameter '{name}' of module {module} has to be pruned before pruning "
                     f"can be removed")


def is_pruned(module: Module) -> bool:
    """Whether module or one of its submodules has a pruned tensor."""
    return any(isinstance(hook, BasePruningMethod)
               for m in module.modules() for hook in m._forward_pre_hooks.values())
