"""Pytrees: nested tuples, lists and dicts of leaves (tensors, arrays, numbers)."""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from .tensor import Tensor


def is_leaf(x: Any) -> bool:
    return isinstance(x, (Tensor, np.ndarray, int, float, bool, np.number, np.bool_))


def tree_flatten(x: Any, leaf: Callable[[Any], bool] | None = None) -> tuple[list, tuple]:
    """Leaves in order, and a hashable description of the structure. `leaf` may declare
    extra objects to be leaves."""
    leaves: list = []

    def rec(x):
        if leaf is not None and leaf(x):
            leaves.append(x)
            return ("leaf",)
        if isinstance(x, tuple) and not hasattr(x, "_fields"):
            return ("tuple", tuple(rec(c) for c in x))
        if isinstance(x, list):
            return ("list", tuple(rec(c) for c in x))
        if isinstance(x, dict):
            keys = tuple(x.keys())
            return ("dict", keys, tuple(rec(x[k]) for k in keys))
        if x is None:
            return ("none",)
        if is_leaf(x):
            leaves.append(x)
            return ("leaf",)
        raise TypeError(f"unsupported argument type {type(x).__name__}: tracejit takes "
                        f"Tensors, NumPy arrays, Python numbers and tuples/lists/dicts of them "
                        f"(mark other arguments static with static_argnums/static_argnames)")
    return leaves, rec(x)


def tree_unflatten(tree: tuple, leaves) -> Any:
    it = iter(leaves)

    def rec(t):
        kind = t[0]
        if kind == "leaf":
            return next(it)
        if kind == "none":
            return None
        if kind == "tuple":
            return tuple(rec(c) for c in t[1])
        if kind == "list":
            return [rec(c) for c in t[1]]
        return {k: rec(c) for k, c in zip(t[1], t[2])}
    return rec(tree)


def tree_map(fn: Callable, x: Any) -> Any:
    leaves, tree = tree_flatten(x)
    return tree_unflatten(tree, [fn(l) for l in leaves])
