"""Python operators and methods of Tensor, attached in one place."""
from __future__ import annotations

from ..ir import dtypes as dt
from ..devices import Device, device as as_device, to_device
from . import composites as C
from . import indexing, inplace, ops, sampling, scans, selection, sorting
from . import gathering, layout, masking, norms, products, stacking
from . import fills, views
from .function import Function
from .tensor import Tensor


def _flip(f):
    return lambda self, other: f(other, self)


def install() -> None:
    T = Tensor
    T.__add__, T.__radd__ = ops.add, _flip(ops.add)
    T.__sub__, T.__rsub__ = ops.sub, _flip(ops.sub)
    T.__mul__, T.__rmul__ = ops.mul, _flip(ops.mul)
    T.__truediv__, T.__rtruediv__ = ops.div, _flip(ops.div)
    T.__pow__, T.__rpow__ = ops.pow, _flip(ops.pow)
    T.__matmul__, T.__rmatmul__ = ops.matmul, _flip(ops.matmul)
    T.__floordiv__, T.__rfloordiv__ = ops.floor_divide, _flip(ops.floor_divide)
    T.__mod__, T.__rmod__ = ops.remainder, _flip(ops.remainder)
    T.floor_divide, T.remainder, T.fmod = ops.floor_divide, ops.remainder, ops.fmod
    T.__neg__ = ops.neg
    T.__pos__ = lambda self: self
    T.__abs__ = ops.abs
    T.__lt__, T.__le__, T.__gt__, T.__ge__ = ops.lt, ops.le, ops.gt, ops.ge
    T.__eq__, T.__ne__ = ops.eq, ops.ne
    T.__and__ = T.__rand__ = ops.logical_and
    T.__or__ = T.__ror__ = ops.logical_or
    T.__invert__ = ops.logical_not
    T.__getitem__ = indexing.getitem
    T.__setitem__ = indexing.setitem
    for name in ("exp", "log", "sin", "cos", "tanh", "sqrt", "abs", "sign", "neg", "reshape",
                 "permute", "swapaxes", "transpose", "squeeze", "unsqueeze", "flatten",
                 "matmul", "maximum", "minimum", "expand", "sum"):
        setattr(T, name, getattr(ops, name))
    T.clamp = T.clip = ops.clip
    T.view = ops.reshape
    T.broadcast_to = ops.broadcast_to
    T.pow = ops.pow
    T.add, T.sub, T.mul, T.div = ops.add, ops.sub, ops.mul, ops.div
    T.where = lambda self, cond, other: ops.where(cond, self, other)
    for name in ("mean", "var", "sigmoid", "relu", "softmax", "log_softmax", "logsumexp"):
        setattr(T, name, getattr(C, name))
    T.max, T.min, T.amax, T.amin = selection.max, selection.min, selection.amax, selection.amin
    T.argmax, T.argmin = selection.argmax, selection.argmin
    T.astype = T.to_dtype = ops.cast
    T.float, T.double, T.half = _convert(dt.f32), _convert(dt.f64), _convert(dt.f16)
    T.bfloat16, T.int, T.long, T.bool = (_convert(dt.bf16), _convert(dt.i32),
                                         _convert(dt.i64), _convert(dt.bool_))
    T.clone = _clone
    T.contiguous = lambda self, memory_format=None: self
    T.to = _to
    T.cpu = lambda self: _to(self, device="cpu")
    T.cuda = lambda self, device=None: _to(self, device=device or "cuda")
    inplace.install(T)
    fills.install(T)
    layout.install(T)
    masking.install(T)
    norms.install(T)
    products.install(T)
    stacking.install(T)
    gathering.install(T)
    T.erf, T.erfc = ops.erf, ops.erfc
    scans.install(T)
    sorting.install(T)
    sampling.install(T)
    views.install(T)        # last: wraps the view methods set above


# `memory_format=` (torch.preserve_format, channels_last, ...) is accepted and has nothing to
# do: tracejit tensors are always dense and row-major, and the values are the same either way.
def _convert(dtype: dt.DType):
    def convert(self, memory_format=None):
        return ops.cast(self, dtype)
    convert.__name__ = dtype.np.name
    return convert


def _clone(self, memory_format=None):
    return ops.add(self, 0) if self.dtype is not dt.bool_ else ops.eq(self, True)


class ToCopy(Function):
    """A copy to another device; its gradient is copied back (so `.to` is differentiable)."""

    @staticmethod
    def forward(ctx, x: Tensor, dev: Device) -> Tensor:
        ctx.src = x.device
        return Tensor(to_device(x._data, dev))

    @staticmethod
    def backward(ctx, g: Tensor):
        return ToCopy.apply(g, ctx.src), None


def _to(self, *args, dtype=None, device=None, non_blocking=False, copy=False,
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
