"""The pruning methods of torch.nn.utils.prune: how each computes a mask (Identity,
RandomUnstructured, L1Unstructured, RandomStructured, LnStructured, CustomFromMask) and the
PruningContainer that applies a second pruning to what the first one left, plus the
reparametrisation they share (BasePruningMethod.apply: `name` becomes `name_orig` (the
parameter) times the buffer `name_mask`, recomputed by a forward pre-hook).

Masks are computed once, when pruning, on the host with NumPy (a stable sort picks among
equal scores: the lower index first); the product mask * orig is an ordinary op, so the
gradient reaches `name_orig` masked, eagerly and in compiled code."""
from __future__ import annotations

import numbers
from typing import Any

import numpy as np

from ...tracer import ops
from ...tracer.creation import ones_like
from ...tracer.ops import _err
from ...tracer.rng import rand
from ...tracer.state import STATE, no_grad
from ...tracer.tensor import Tensor
from ..module import Module

__all__ = ["BasePruningMethod", "PruningContainer", "Identity", "RandomUnstructured",
           "L1Unstructured", "RandomStructured", "LnStructured", "CustomFromMask"]


def _check_amount_init(amount: Any) -> None:
    if not isinstance(amount, numbers.Real) or isinstance(amount, bool):
        raise TypeError(f"Invalid type for amount: {amount}. Must be int or float.")
    if (isinstance(amount, numbers.Integral) and amount < 0) or \
            (not isinstance(amount, numbers.Integral) and (amount > 1 or amount < 0)):
        raise ValueError(f"amount={amount} should either be a float in the range [0, 1] or a "
                         f"non-negative integer")


def _count(amount: Any, size: int) -> int:
    """How many of `size` entries (or channels) to prune; raises if an int is too many."""
    if isinstance(amount, numbers.Integral):
        if amount > size:
            raise ValueError(f"amount={amount} should be smaller than the number of parameters "
                             f"to prune={size}")
        return int(amount)
    return round(amount * size)


def _host(t: Tensor, what: str) -> np.ndarray:
    if t._traced:
        raise _err("prune", f"{what} is traced: pruning computes its mask once, outside "
                   f"compiled code (prune the module before calling the compiled function)",
                   RuntimeError)
    return np.asarray(t.detach().numpy())


def _as_mask(a: np.ndarray, like: Tensor) -> Tensor:
    return ops.as_tensor(np.ascontiguousarray(a, dtype=like.dtype.np)).to(device=like.device)


def _lowest(scores: np.ndarray, k: int) -> np.ndarray:
    """Flat indices of the k smallest scores (ties: the lower index first)."""
    return np.argsort(scores.reshape(-1), kind="stable")[:k]


class BasePruningMethod:
    """A pruning method: compute_mask(t, default_mask) says which entries stay (1) or go
    (0); as a forward pre-hook it recomputes `name` from `name_orig` and `name_mask`."""
    PRUNING_TYPE: str = "unstructured"
    _tensor_name: str

    def __call__(self, module: Module, inputs: Any) -> None:
        setattr(module, self._tensor_name, self.apply_mask(module))

    def compute_mask(self, t: Tensor, default_mask: Tensor) -> Tensor:
        raise NotImplementedError

    def apply_mask(self, module: Module) -> Tensor:
        """name_mask * name_orig (the pruned tensor)."""
        orig = getattr(module, self._tensor_name + "_orig")
        mask = getattr(module, self._tensor_name + "_mask")
        return ops.mul(mask if mask.dtype is orig.dtype else ops.cast(mask, orig.dtype), orig)

    @classmethod
    def apply(cls, module: Module, name: str, *args: Any, importance_scores: Tensor | None = None,
              **kwargs: Any) -> "BasePruningMethod":
        """Prune `name` of module with cls(*args, **kwargs): the reparametrisation, or, on a
        tensor pruned before, a PruningContainer with the earlier methods."""
        if STATE.traces:
            raise _err("prune", "pruning inside a compiled function; prune the module before "
                       "calling it", RuntimeError)
        method = _add_method(cls, module, name, *args, **kwargs)
        orig = getattr(module, name)
        if importance_scores is not None and tuple(importance_scores.shape) != \
                tuple(orig.shape):
            raise ValueError(f"importance_scores should have the same shape as parameter "
                             f"{name} of {module}")
        scores = importance_scores if importance_scores is not None else orig
        fresh = not isinstance(method, PruningContainer)
        if fresh:
            module.register_parameter(name + "_orig", orig)
            del module._parameters[name]
            default_mask = ones_like(orig.detach())
        else:
            default_mask = getattr(module, name + "_mask").detach().clone()
        try:
            with no_grad():
                mask = method.compute_mask(scores, default_mask=default_mask)
            module.register_buffer(name + "_mask", mask)
            setattr(module, name, method.apply_mask(module))
            module.register_forward_pre_hook(method)
        except Exception:
            if fresh:                   # put the parameter back as it was
                p = module._parameters.pop(name + "_orig")
                module.__dict__.pop(name, None)
                module.register_parameter(name, p)
            raise
        return method

    def prune(self, t: Tensor) -> Tensor:
        """t with this method's mask applied (no reparametrisation)."""
        with no_grad():
            mask = self.compute_mask(t, default_mask=ones_like(t.detach()))
        return ops.mul(t, mask)

    def remove(self, module: Module) -> None:
        """Make the pruning permanent: `name` becomes a parameter holding the pruned values;
        name_orig, name_mask and the hook go."""
        name = self._tensor_name
        if name + "_orig" not in module._parameters:
            raise ValueError(f"Parameter '{name}' of module {module} has to be pruned before "
                             f"pruning can be removed")
        with no_grad():
            weight = self.apply_mask(module)
        module.__dict__.pop(name, None)
        orig = module._parameters.pop(name + "_orig")
        orig.data = weight.detach()
        del module._buffers[name + "_mask"]
        module.register_parameter(name, orig)


def _add_method(cls: type, module: Module, name: str, *args: Any,
                **kwargs: Any) -> BasePruningMethod:
    """cls(*args, **kwargs) for `name`, joined with a method already pruning it (its hook is
    taken off; apply registers the joined one)."""
    old, keys = None, []
    for k, hook in module._forward_pre_hooks.items():
        if isinstance(hook, BasePruningMethod) and hook._tensor_name == name:
            old = hook
            keys.append(k)
    if len(keys) > 1:
        raise RuntimeError(f"Avoid adding multiple pruning hooks to the same tensor {name} of "
                           f"module {module}. Use a PruningContainer.")
    for k in keys:
        del module._forward_pre_hooks[k]
    method = cls(*args, **kwargs)
    method._tensor_name = name
    if old is None:
        return method
    if isinstance(old, PruningContainer):
        old.add_pruning_method(method)
        return old
    return PruningContainer(old, method)


class PruningContainer(BasePruningMethod):
    """Several pruning methods applied in turn to one tensor: each later one prunes only what
    the ones before left (unstructured: the remaining entries; structured: the remaining
    channels)."""

    def __init__(self, *methods: BasePruningMethod) -> None:
        self._pruning_methods: tuple[BasePruningMethod, ...] = ()
        for m in methods:
            self.add_pruning_method(m)

    def add_pruning_method(self, method: BasePruningMethod) -> None:
        if not isinstance(method, BasePruningMethod) and method is not None:
            raise TypeError(f"{type(method)} is not a BasePruningMethod subclass")
        if method is not None and self._pruning_methods and \
                self._tensor_name != method._tensor_name:
            raise ValueError(f"Can only add pruning methods acting on the parameter named "
                             f"'{self._tensor_name}' to PruningContainer {self}. Found "
                             f"'{method._tensor_name}'")
        if method is not None:
            self._pruning_methods += (method,)
            self._tensor_name = method._tensor_name

    def __len__(self) -> int:
        return len(self._pruning_methods)

    def __iter__(self):
        return iter(self._pruning_methods)

    def __getitem__(self, i: int) -> BasePruningMethod:
        return self._pruning_methods[i]

    def compute_mask(self, t: Tensor, default_mask: Tensor) -> Tensor:
        method = self._pruning_methods[-1]
        mask = _host(default_mask, "the mask")
        values = _host(t, "the tensor")
        kind = method.PRUNING_TYPE
        if kind == "unstructured":
            where: Any = mask == 1
        elif kind == "structured":
            if not hasattr(method, "dim"):
                raise AttributeError("Pruning methods of PRUNING_TYPE 'structured' need to have "
                                     "the attribute `dim` defined.")
            dim = method.dim + values.ndim if method.dim < 0 else method.dim
            if dim < 0 or dim >= values.ndim:
                raise IndexError(f"Index is out of bounds for tensor of size {values.ndim}")
            others = tuple(d for d in range(values.ndim) if d != dim)
            where = [slice(None)] * values.ndim
            where[dim] = mask.sum(axis=others) != 0
            where = tuple(where)
        elif kind == "global":
            where = tuple(slice(None) for _ in range(values.ndim))
        else:
            raise ValueError(f"Unrecognized PRUNING_TYPE {kind}")
        part = method.compute_mask(_as_mask(values[where], t), _as_mask(mask[where], t))
        out = mask.astype(values.dtype, copy=True)
        out[where] = _host(part, "the mask")
        return _as_mask(out, default_mask)


class Identity(BasePruningMethod):
    """Prunes nothing (the mask of ones): the reparametrisation alone."""
    PRUNING_TYPE = "unstructured"

    def compute_mask(self, t: Tensor, default_mask: Tensor) -> Tensor:
        return default_mask

    @classmethod
    def apply(cls, module: Module, name: str) -> BasePruningMethod:  # type: ignore[override]
        return super().apply(module, name)


class RandomUnstructured(BasePruningMethod):
    """Prunes `amount` entries (a fraction, or a count) chosen at random (tj's generator)."""
    PRUNING_TYPE = "unstructured"

    def __init__(self, amount: float) -> None:
        _check_amount_init(amount)
        self.amount = amount

    def compute_mask(self, t: Tensor, default_mask: Tensor) -> Tensor:
        k = _count(self.amount, t.numel())
        mask = _host(default_mask, "the mask").copy()
        if k:
            draw = _host(rand(*t.shape, dtype=t.dtype if t.dtype.is_float else None), "rand")
            mask.reshape(-1)[np.argsort(-draw.reshape(-1), kind="stable")[:k]] = 0
        return _as_mask(mask, default_mask)

    @classmethod
    def apply(cls, module: Module, name: str, amount: float  # type: ignore[override]
              ) -> BasePruningMethod:
        return super().apply(module, name, amount=amount)


class L1Unstructured(BasePruningMethod):
    """Prunes the `amount` entries of smallest absolute value."""
    PRUNING_TYPE = "unstructured"

    def __init__(self, amount: float) -> None:
        _check_amount_init(amount)
        self.amount = amount

    def compute_mask(self, t: Tensor, default_mask: Tensor) -> Tensor:
        k = _count(self.amount, t.numel())
        mask = _host(default_mask, "the mask").copy()
        if k:
            mask.reshape(-1)[_lowest(np.abs(_host(t, "the tensor")), k)] = 0
        return _as_mask(mask, default_mask)

    @classmethod
    def apply(cls, module: Module, name: str, amount: float,  # type: ignore[override]
              importance_scores: Tensor | None = None) -> BasePruningMethod:
        return super().apply(module, name, amount=amount, importance_scores=importance_scores)


def _check_structured(t: Tensor, dim: int) -> int:
    if t.ndim <= 1:
        raise ValueError(f"Structured pruning can only be applied to multidimensional tensors. "
                         f"Found tensor of shape {tuple(t.shape)} with {t.ndim} dims")
    if not -t.ndim <= dim < t.ndim:
        raise IndexError(f"Dimension out of range (expected to be in range of [{-t.ndim}, "
                         f"{t.ndim - 1}], but got {dim})")
    return dim % t.ndim


def _keep_channels(mask: np.ndarray, dim: int, keep: np.ndarray) -> np.ndarray:
    """default mask times the mask that keeps only the channels `keep` along dim."""
    sel = np.zeros(mask.shape[dim], dtype=bool)
    sel[keep] = True
    shape = [1] * mask.ndim
    shape[dim] = -1
    return mask * sel.reshape(shape).astype(mask.dtype)


class RandomStructured(BasePruningMethod):
    """Prunes `amount` channels along dim chosen at random."""
    PRUNING_TYPE = "structured"

    def __init__(self, amount: float, dim: int = -1) -> None:
        _check_amount_init(amount)
        self.amount, self.dim = amount, dim

    def compute_mask(self, t: Tensor, default_mask: Tensor) -> Tensor:
        dim = _check_structured(t, self.dim)
        size = t.shape[dim]
        k = _count(self.amount, size)
        mask = _host(default_mask, "the mask")
        if k == 0:
            return default_mask
        draw = _host(rand(size), "rand")
        keep = np.argsort(-draw, kind="stable")[:size - k]
        return _as_mask(_keep_channels(mask, dim, keep), default_mask)

    @classmethod
    def apply(cls, module: Module, name: str, amount: float,  # type: ignore[override]
              dim: int = -1) -> BasePruningMethod:
        return super().apply(module, name, amount=amount, dim=dim)


def _channel_norms(a: np.ndarray, n: Any, dim: int) -> np.ndarray:
    """The n-norm of each slice along dim (torch.norm(t, p=n, dim=all but dim))."""
    x = np.abs(np.moveaxis(a, dim, 0).reshape(a.shape[dim], -1)).astype(np.float64)
    if n == "fro":
        n = 2
    if not isinstance(n, numbers.Real) or isinstance(n, bool):
        raise ValueError(f"ln_structured: n must be a number, inf, -inf or 'fro', got {n!r}")
    if n == np.inf:
        return x.max(axis=1) if x.shape[1] else np.zeros(x.shape[0])
    if n == -np.inf:
        return x.min(axis=1) if x.shape[1] else np.zeros(x.shape[0])
    if n == 0:
        return (x != 0).sum(axis=1).astype(np.float64)
    return (x ** n).sum(axis=1) ** (1.0 / n)


class LnStructured(BasePruningMethod):
    """Prunes the `amount` channels along dim of smallest L`n` norm."""
    PRUNING_TYPE = "structured"

    def __init__(self, amount: float, n: Any, dim: int = -1) -> None:
        _check_amount_init(amount)
        self.amount, self.n, self.dim = amount, n, dim

    def compute_mask(self, t: Tensor, default_mask: Tensor) -> Tensor:
        dim = _check_structured(t, self.dim)
        size = t.shape[dim]
        k = _count(self.amount, size)
        norms = _channel_norms(_host(t, "the tensor"), self.n, dim)
        if k == 0:
            return default_mask
        keep = np.argsort(-norms, kind="stable")[:size - k]
        return _as_mask(_keep_channels(_host(default_mask, "the mask"), dim, keep),
                        default_mask)

    @classmethod
    def apply(cls, module: Module, name: str, amount: float, n: Any,  # type: ignore[override]
              dim: int, importance_scores: Tensor | None = None) -> BasePruningMethod:
        return super().apply(module, name, amount=amount, n=n, dim=dim,
                             importance_scores=importance_scores)


class CustomFromMask(BasePruningMethod):
    """Prunes where the given mask is 0."""
    PRUNING_TYPE = "global"

    def __init__(self, mask: Tensor) -> None:
        self.mask = mask

    def compute_mask(self, t: Tensor, default_mask: Tensor) -> Tensor:
        if tuple(default_mask.shape) != tuple(self.mask.shape):
            raise ValueError(f"custom_from_mask: the mask's shape {list(self.mask.shape)} "
                             f"differs from the tensor's {list(default_mask.shape)}")
        mask = ops.cast(self.mask.detach(), default_mask.dtype) \
            if self.mask.dtype is not default_mask.dtype else self.mask.detach()
        return ops.mul(default_mask, mask)

    @classmethod
    def apply(cls, module: Module, name: str, mask: Tensor  # type: ignore[override]
              ) -> BasePruningMethod:
        return super().apply(module, name, mask=mask)
