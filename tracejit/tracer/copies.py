"""`clone`: the exact copy of a tensor, for `.clone()` and for every op whose answer is its
input unchanged (an empty scatter, diff with n=0): those still return a new tensor, as torch's,
since handing back the input itself would alias it (a later in-place op on one would change the
other)."""
from __future__ import annotations

from ..ir import dtypes as dt
from . import ops
from .node_names import rename
from .tensor_base import TensorBase as Tensor


def clone(self: Tensor, memory_format=None) -> Tensor:
    return rename(ops.add(self, _keep_zero(self)), "CloneBackward0") if self.dtype is not dt.bool_ \
        else ops.eq(self, True)


def _keep_zero(x) -> float | int:
    """The addend of an exact copy: x + (-0.0) is x for every float, -0.0 and NaN included
    (x + 0 turns -0.0 into 0.0, and 1 / x.clone() from -inf into inf); 0 for other dtypes."""
    return -0.0 if x.dtype.is_float else 0


def unchanged(x: Tensor, src: Tensor) -> Tensor:
    """x copied, for an op that writes nothing of src into x (an empty index): an empty src
    that requires grad still gets its (empty) zero gradient, as torch's."""
    # (-0.0: x + it is x exactly; traced, as a trace does not know which inputs will require
    # grad: the compiled call reads the path before the passes fold it, entry.py)
    if (src._requires_grad or src._traced and src.dtype.is_float) and src.numel() == 0:
        return ops.add(x, ops.mul(ops.sum(src), -0.0))
    return clone(x)
