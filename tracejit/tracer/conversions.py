"""Tensor's dtype and device conversions: `.float()`, `.to(...)`, `.cpu()`, `.clone()`,
`.numpy()`."""
from __future__ import annotations

import numpy as np

from ..ir import dtypes as dt
from ..devices import Device, device as as_device, to_device
from . import ops, view_writes, views
from .copies import clone
from .function import Function
from .node_names import rename
from .state import no_grad
from .tensor_base import TensorBase as Tensor


# `memory_format=` (torch.preserve_format, channels_last, ...) is accepted and has nothing to
# do: tracejit tensors are always dense and row-major, and the values are the same either way.
def converter(dtype: dt.DType):
    def convert(self, memory_format=None):
        return ops.cast(self, dtype)
    convert.__name__ = dtype.np.name
    return convert


class ToCopy(Function):
    """A copy to another device; its gradient is copied back (so `.to` is differentiable)."""

    @staticmethod
    def forward(ctx, x: Tensor, dev: Device) -> Tensor:
        ctx.src, ctx.dst = x.device, dev
        return Tensor(to_device(x._data, dev))

    @staticmethod
    def backward(ctx, g: Tensor):
        return ToCopy.apply(g, ctx.src), None

    @staticmethod
    def jvp(ctx, t: Tensor, _dev) -> Tensor:     # (forward mode: the tangent moves along)
        return ToCopy.apply(t, ctx.dst)


def to(self, *args, dtype=None, device=None, non_blocking=False, copy=False,
        memory_format=None):
    """`t.to("cuda")`, `t.to(tj.float64)`, `t.to("cpu", tj.float16)`, `t.to(other_tensor)`."""
    for a in args:
        if isinstance(a, Tensor):
            device, dtype = a.device, a.dtype
        elif isinstance(a, Device) or (isinstance(a, str) and a.split(":")[0] in ("cpu", "cuda")):
            device = a
        else:
            dtype = a
    out = self
    if device is not None and not (self._traced or self._captured()):   # traced: one device
        dev = as_device(device)
        if dev != self.device:
            out = ToCopy.apply(self, dev)
    return ops.cast(out, dtype) if dtype is not None else out


def cpu(self) -> Tensor:
    return to(self, device="cpu")


def cuda(self, device=None) -> Tensor:
    return to(self, device=device or "cuda")


def numpy(x: Tensor) -> np.ndarray:
    """x.numpy(): x's storage as a writable NumPy array, as torch's (writing into it changes x,
    its base and the base's other views). A view's is a NumPy view of its base's memory
    whenever its elements are one there, which every view op but view/reshape/flatten gives
    (those, when the base's array is laid out as torch's strides say: always, unless the
    base was made from a non-contiguous NumPy array); otherwise x.numpy() is a copy."""
    rec = getattr(x, "_view", None)
    if type(rec) is not views.ViewOf or x._requires_grad or type(x._data) is not np.ndarray or \
            not view_writes._live(rec.root):
        own = x._data
        arr = Tensor.numpy(x)          # (tensor_base's: the errors, and the array made own)
        if arr is not own and type(rec) is views.Views:
            view_writes.rederive(x, rec)      # x took its own storage: its views follow it
        return arr
    x._concrete("numpy()")
    root = rec.root
    own = root._data
    if type(own) is np.ndarray and not own.flags.writeable:
        root._own()                     # a lazy copy: the base takes its own storage first
        view_writes.rederive(root, root._view)    # (and its views, x too, are derived there)
    alias = view_writes.writable_alias(x, root)
    if alias is None and type(root._data) is np.ndarray:
        with no_grad():                 # x's array is a copy: derive it from the base again
            x._data = rec.fwd(root)._data
        alias = view_writes.writable_alias(x, root)
    return alias if alias is not None else Tensor.numpy(x)
