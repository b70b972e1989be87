"""Tensors that share a NumPy array's memory: `from_numpy` and `as_tensor`, as torch's.

An eager tensor holds a NumPy array and every in-place op (eager or a compiled call's
write-back) writes into that array, so wrapping the caller's array without a copy is all
sharing takes: writes through either side are seen by the other, as in torch. Any layout
works (C- or F-order, sliced, negative strides: torch refuses the last); a tensor made so
counts as contiguous (see README). Sharing is impossible, and so refused, for dtypes tracejit
has no type for and for non-native byte order. A read-only array is shared for reading (with
torch's warning): an in-place write to the tensor first copies it, so the array keeps its
values (in torch such a write is undefined behaviour)."""
from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from ..devices import device as as_device
from ..ir import dtypes as dt
from ..ir.core import user_location, user_stacklevel
from .creation import tensor
from .state import STATE
from .tensor_base import TensorBase as Tensor


def _supported() -> str:
    return ", ".join(d.np.name for d in dt.ALL)


def _share(arr: np.ndarray, what: str) -> Tensor:
    """A tensor holding `arr` itself (its memory, not a copy)."""
    if STATE.traces:
        raise RuntimeError(
            f"{what} inside a compiled or transformed function (at {user_location()}): the "
            f"tensor would be a constant of the trace and could not share the array's memory "
            f"at run time; call {what.split('(')[0]} outside and pass the tensor in")
    if not arr.dtype.isnative:
        raise ValueError(f"{what}: the array's byte order ({arr.dtype.str}) is not the "
                         f"machine's, so its memory cannot be shared (at {user_location()}); "
                         f"convert it with arr.astype(arr.dtype.newbyteorder('='))")
    if dt.from_numpy(arr.dtype) is None:
        raise TypeError(f"{what}: can't share a NumPy array of dtype {arr.dtype} (at "
                        f"{user_location()}); tracejit's dtypes are {_supported()} "
                        f"(tj.tensor(arr, dtype=...) converts a copy)")
    if type(arr) is not np.ndarray:          # np.matrix, masked arrays: the plain array view
        arr = arr.view(np.ndarray)
    if not arr.flags.writeable:
        warnings.warn(f"{what}: the given NumPy array is not writable; the tensor reads its "
                      f"memory, and an in-place write to the tensor copies it first, so the "
                      f"array keeps its values (torch: undefined behaviour)", UserWarning,
                      stacklevel=user_stacklevel())
    return Tensor(arr)


def from_numpy(ndarray: np.ndarray) -> Tensor:
    """torch.from_numpy: a CPU tensor sharing `ndarray`'s memory (writes through either are
    seen by the other) with its dtype and shape."""
    if not isinstance(ndarray, np.ndarray):
        raise TypeError(f"from_numpy: expected np.ndarray (got {type(ndarray).__name__}) (at "
                        f"{user_location()})")
    return _share(ndarray, "from_numpy()")


def as_tensor(data: Any, dtype=None, device=None) -> Tensor:
    """torch.as_tensor: `data` itself when it is a tensor of that dtype and device (otherwise
    `data.to(device, dtype)`, differentiable); a tensor sharing a NumPy array's memory when
    its dtype is `dtype` (or dtype is None) and the device is the CPU; otherwise a new tensor
    of a copy, as tj.tensor. Inside a compiled function an array is always copied (the trace
    cannot alias it)."""
    if isinstance(data, Tensor):
        same_dtype = dtype is None or dt.as_dtype(dtype) is data.dtype
        same_device = device is None or as_device(device) == data.device
        if same_dtype and same_device:
            return data
        return data.to(device=device, dtype=dtype)
    if isinstance(data, np.ndarray) and not STATE.traces and \
            (dtype is None or dt.as_dtype(dtype).np == data.dtype) and \
            as_device(device).type == "cpu" and dt.from_numpy(data.dtype) is not None:
        return _share(data, "as_tensor()")
    return tensor(data, dtype=dtype, device=device)
