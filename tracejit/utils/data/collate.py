"""`default_collate` and `default_convert` as torch.utils.data's, producing tracejit tensors:
a batch of tensors is stacked (autograd sees the stack), NumPy arrays and scalars become one
tensor, Python floats a float64 tensor, ints an int64 one (bools a bool one), strings stay a
list; mappings, namedtuples and sequences are collated per field (a tuple becomes a list, as
torch's)."""
from __future__ import annotations

import collections.abc
import copy
import re
from typing import Any

import numpy as np

from ...ir import dtypes as dt
from ...tracer.creation import tensor
from ...tracer.shape_ops import stack
from ...tracer.tensor import Tensor

_STR_OBJ = re.compile(r"[SaUO]")
ERR = ("default_collate: batch must contain tensors, numpy arrays, numbers, dicts or lists; "
       "found {}")


def _is_numpy(x: Any) -> bool:
    t = type(x)
    return t.__module__ == "numpy" and t.__name__ not in ("str_", "string_", "bytes_")


def _stack_arrays(batch: list) -> Tensor:
    shapes = [np.shape(b) for b in batch]
    for i, s in enumerate(shapes):
        if s != shapes[0]:
            raise RuntimeError(f"default_collate: stack expects each array to be equal size, "
                               f"but got {list(shapes[0])} at entry 0 and {list(s)} at entry "
                               f"{i}")
    return tensor(np.stack(batch))


def default_collate(batch: list) -> Any:
    """Merge a list of samples into a batch (see the module doc)."""
    elem = batch[0]
    elem_type = type(elem)
    if isinstance(elem, Tensor):
        return stack(batch)
    if _is_numpy(elem):
        if isinstance(elem, np.ndarray):
            if _STR_OBJ.search(elem.dtype.str) is not None:
                raise TypeError(ERR.format(elem.dtype))
            return _stack_arrays(batch)
        if elem.shape == ():                        # a NumPy scalar
            return tensor(np.array(batch))
    if isinstance(elem, float):
        return tensor(batch, dtype=dt.f64)
    if isinstance(elem, int):                       # (bools too: a bool tensor)
        return tensor(batch)
    if isinstance(elem, (str, bytes)):
        return batch
    if isinstance(elem, collections.abc.Mapping):
        fields = {key: default_collate([d[key] for d in batch]) for key in elem}
        try:
            if isinstance(elem, collections.abc.MutableMapping):
                clone = copy.copy(elem)
                clone.update(fields)
                return clone
            return elem_type(fields)
        except TypeError:
            return fields
    if isinstance(elem, tuple) and hasattr(elem, "_fields"):       # a namedtuple
        return elem_type(*(default_collate(list(s)) for s in zip(*batch)))
    if isinstance(elem, collections.abc.Sequence):
        size = len(elem)
        if not all(len(e) == size for e in batch):
            raise RuntimeError("each element in list of batch should be of equal size")
        fields = [default_collate(list(s)) for s in zip(*batch)]
        if isinstance(elem, tuple):
            return fields                           # (torch: a list, for compatibility)
        try:
            if isinstance(elem, collections.abc.MutableSequence):
                clone = copy.copy(elem)
                for i, f in enumerate(fields):
                    clone[i] = f
                return clone
            return elem_type(fields)
        except TypeError:
            return fields
    raise TypeError(ERR.format(elem_type))


def default_convert(data: Any) -> Any:
    """One sample as DataLoader(batch_size=None) hands it out: NumPy arrays and scalars become
    tensors, containers are converted per field, anything else is left alone."""
    elem_type = type(data)
    if isinstance(data, Tensor):
        return data
    if _is_numpy(data):
        if isinstance(data, np.ndarray) and _STR_OBJ.search(data.dtype.str) is not None:
            return data
        return tensor(np.asarray(data))
    if isinstance(data, collections.abc.Mapping):
        fields = {key: default_convert(data[key]) for key in data}
        try:
            if isinstance(data, collections.abc.MutableMapping):
                clone = copy.copy(data)
                clone.update(fields)
                return clone
            return elem_type(fields)
        except TypeError:
            return fields
    if isinstance(data, tuple) and hasattr(data, "_fields"):
        return elem_type(*(default_convert(d) for d in data))
    if isinstance(data, tuple):
        return [default_convert(d) for d in data]
    if isinstance(data, collections.abc.Sequence) and not isinstance(data, (str, bytes)):
        try:
            if isinstance(data, collections.abc.MutableSequence):
                clone = copy.copy(data)
                for i, d in enumerate(data):
                    clone[i] = default_convert(d)
                return clone
            return elem_type([default_convert(d) for d in data])
        except TypeError:
            return [default_convert(d) for d in data]
    return data
