"""torch's memory formats (`tj.channels_last`, `tj.contiguous_format`, ...) and the layout
queries that read them (`is_contiguous`).

tracejit tensors are dense and row-major: `.contiguous(memory_format=...)`, `.to(...)`,
`.clone(...)` and `Module.to(memory_format=...)` accept a format and give the same values (a
channels-last tensor holds the same elements in the same logical order; only its strides
differ). `is_contiguous()` answers for the layout tracejit models (torch's, for views of a
row-major tensor); asked about channels_last it raises, since tracejit never makes a
channels-last tensor and a False there could be a wrong answer to a torch program."""
from __future__ import annotations

import numpy as np

from .tensor_base import TensorBase as Tensor
from .views import _torch_layout


class memory_format:               # noqa: N801 (torch's name)
    """One of torch's memory formats; printed as torch prints it."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __repr__(self) -> str:
        return f"tracejit.{self._name}"

    def __reduce__(self):          # pickled and deep-copied as the one instance
        return self._name


contiguous_format = memory_format("contiguous_format")
channels_last = memory_format("channels_last")
channels_last_3d = memory_format("channels_last_3d")
preserve_format = memory_format("preserve_format")


def is_contiguous(x: Tensor, memory_format: memory_format = contiguous_format) -> bool:
    """Whether torch's x would be contiguous: a tensor made by an op is; a view is when its
    elements sit in row-major order in its base (views.py models torch's strides)."""
    if memory_format is channels_last or memory_format is channels_last_3d:
        raise NotImplementedError(
            f"is_contiguous(memory_format={memory_format!r}): tracejit tensors are always "
            f"row-major (a channels-last request is accepted and keeps the values, but makes "
            f"no channels-last tensor), so this question has no faithful answer; ask "
            f"is_contiguous() instead")
    if memory_format is not contiguous_format:
        raise ValueError(f"is_contiguous: memory_format must be a memory format such as "
                         f"tj.contiguous_format, got {memory_format!r}")
    found = _torch_layout(x)
    if found is None:
        return True
    arr, probe = found
    # (NumPy's flag, like torch's test, ignores the strides of size-1 dimensions; a stand-in
    # that is a copy rather than a view of the base means no view was possible: a copy)
    return bool(arr.flags.c_contiguous and np.may_share_memory(arr, probe))


def is_floating_point(x: Tensor) -> bool:
    return x.dtype.is_float


def is_complex(x: Tensor) -> bool:
    return False                   # (tracejit has no complex dtypes)


def element_size(x: Tensor) -> int:
    """Bytes per element."""
    return x.dtype.np.itemsize
