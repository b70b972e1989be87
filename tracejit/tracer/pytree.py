"""Pytrees: nested tuples, lists and dicts of leaves (tensors, arrays, numbers).

Written as module-level recursion on purpose: a self-referencing closure would form a
reference cycle that keeps results alive until the garbage collector runs (which defeats the
runtime's reuse of output buffers)."""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from ..ir.core import user_location
from .tensor_base import TensorBase as Tensor

_LEAF = ("leaf",)
_NONE = ("none",)


def is_leaf(x: Any) -> bool:
    return isinstance(x, (Tensor, np.ndarray, int, float, bool, np.number, np.bool_))


def _flatten(x: Any, leaves: list, leaf) -> tuple:
    if leaf is not None and leaf(x):
        leaves.append(x)
        return _LEAF
    if isinstance(x, tuple) and not hasattr(x, "_fields"):
        return ("tuple", tuple(_flatten(c, leaves, leaf) for c in x))
    if isinstance(x, tuple):           # a named tuple (max(dim)'s values and indices)
        return ("namedtuple", type(x), tuple(_flatten(c, leaves, leaf) for c in x))
    if isinstance(x, list):
        return ("list", tuple(_flatten(c, leaves, leaf) for c in x))
    if isinstance(x, dict):
        keys = tuple(x.keys())
        return ("dict", keys, tuple(_flatten(x[k], leaves, leaf) for k in keys))
    if x is None:
        return _NONE
    if is_leaf(x):
        leaves.append(x)
        return _LEAF
    raise TypeError(f"unsupported argument type {type(x).__name__}: tracejit takes "
                    f"Tensors, NumPy arrays, Python numbers and tuples/lists/dicts of them "
                    f"(mark other arguments static with static_argnums/static_argnames) "
                    f"(at {user_location()})")


def tree_flatten(x: Any, leaf: Callable[[Any], bool] | None = None) -> tuple[list, tuple]:
    """Leaves in order, and a hashable description of the structure. `leaf` may declare
    extra objects to be leaves."""
    leaves: list = []
    return leaves, _flatten(x, leaves, leaf)


def _unflatten(t: tuple, it) -> Any:
    kind = t[0]
    if kind == "leaf":
        return next(it)
    if kind == "none":
        return None
    if kind == "tuple":
        return tuple(_unflatten(c, it) for c in t[1])
    if kind == "list":
        return [_unflatten(c, it) for c in t[1]]
    if kind == "namedtuple":
        return t[1](*(_unflatten(c, it) for c in t[2]))
    return {k: _unflatten(c, it) for k, c in zip(t[1], t[2])}


def tree_unflatten(tree: tuple, leaves) -> Any:
    return _unflatten(tree, iter(leaves))

