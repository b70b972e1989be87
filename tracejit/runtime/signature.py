"""Cache keys of compiled calls: what each argument contributes (shape, dtype, device; a weak
Python scalar only its kind), and the cheaper key of calls whose arguments are all arrays."""
from __future__ import annotations

from typing import Any

import numpy as np

from ..ir import dtypes as dt
from ..ir.core import user_location
from ..tracer.state import STATE
from ..tracer.tensor import Tensor
from ..tracer.views import arg_layout
from ..devices import device_of, is_gpu_array


def leaf_key(x: Any):
    """What a leaf contributes to the cache key: its shape and dtype (weak scalars: a kind);
    a tensor that is a non-contiguous view also its strides (views.arg_layout: the trace's
    contiguous() and reshape() of it depend on them)."""
    if isinstance(x, Tensor):
        d = x._data
        key = (x.shape, x.dtype) if type(d) is np.ndarray or x._traced else \
            (x.shape, x.dtype, str(device_of(d)))
        if x._view is not None and not x._traced:
            strides = arg_layout(x)
            if strides is not None:
                key += (("strides", strides),)
        return key
    if is_gpu_array(x):
        return (x.shape, dt.from_numpy(x.dtype), str(device_of(x)))
    if isinstance(x, bool):                   # (NumPy scalars are weak too: trace.leaf_aval)
        return "b"
    if isinstance(x, (int, np.signedinteger)):
        return "i"
    if isinstance(x, (float, np.floating, np.bool_)):     # (a NumPy bool: a float to torch)
        return "f"
    a = np.asarray(x)
    d = dt.from_numpy(a.dtype)
    if d is None:
        raise TypeError(f"unsupported array dtype {a.dtype} for a compiled function argument "
                        f"(at {user_location()})")
    # a 0-d array promotes as a tensor with dimensions, a 0-d tensor does not: apart
    return (a.shape, d) if a.ndim or not isinstance(x, np.ndarray) else (a.shape, d, _ARRAY0)


_ARRAY0 = ("0-d array",)       # the key's mark of a 0-d NumPy array argument (leaf_key)


def describe(k) -> str:
    if isinstance(k, str):
        return {"b": "bool", "i": "int", "f": "float"}[k]
    shape, d = k[:2]
    text = f"{d.name}[{','.join(map(str, shape))}]"
    for extra in k[2:]:
        text += " (a NumPy array)" if extra == _ARRAY0 else f" strides {extra[1]}" \
            if isinstance(extra, tuple) else f" on {extra}"
    return text


def fast_key(args) -> tuple | None:
    """For calls whose arguments are all arrays, eager Tensors that need no gradient, or Python
    scalars: (cache key, the arguments as arrays or scalars), in one pass. None otherwise."""
    key, vals = [], []
    for a in args:
        t = type(a)
        if t is np.ndarray:
            key.append((a.shape, a.dtype) if a.ndim else ((), a.dtype, _ARRAY0))
            vals.append(a)
        elif t is Tensor:
            d = a._data
            if (a._requires_grad and STATE.grad_enabled) or type(d) is not np.ndarray:
                return None
            if a._view is not None:         # (a view: its strides too, see leaf_key)
                key.append((d.shape, d.dtype, arg_layout(a)))
            else:
                key.append((d.shape, d.dtype))
            vals.append(d)
        elif t is float or t is int or t is bool:
            key.append(t)
            vals.append(a)
        else:
            return None
    return tuple(key), vals


def describe_autocast(key: tuple) -> str:
    return ", ".join(f"{d}:{t.name}" for d, t in key) or "off"


def explain(old: tuple, new: tuple, names: list) -> str:
    """What differs between two keys of CompiledFunction._key (for TRACEJIT_LOG=recompiles):
    the arguments' structure, autocast, training or grad mode, a static argument, or the
    first argument (by its name) whose signature changed."""
    if old[0] != new[0]:
        return "the structure of the arguments changed"
    if old[3] != new[3]:
        return f"autocast state: {describe_autocast(old[3])} -> {describe_autocast(new[3])}"
    if old[4] != new[4]:
        return f"training mode: {old[4]} -> {new[4]}"
    if old[5] != new[5]:
        return f"grad mode: {old[5]} -> {new[5]}"
    if old[2] != new[2]:
        a, b = dict(old[2]), dict(new[2])
        k = next(k for k in b if a.get(k) != b[k])
        return f"static argument {k}: {a.get(k)!r} -> {b[k]!r}"
    for n, a, b in zip(names, old[1], new[1]):
        if a != b:
            return f"{n}: {describe(a)} -> {describe(b)}"
    return "unknown"
