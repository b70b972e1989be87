"""Module.to / cuda / cpu / float / double / half / bfloat16 / type and the _apply they share
(torch's conversions: parameters keep their identity), kept apart from module.py as a mixin
of Module."""
from __future__ import annotations

from typing import Any, Callable

from ..devices import Device, device as as_device
from ..ir import dtypes as dt
from ..tracer.state import bump_attr_epoch, no_grad
from ..tracer.tensor import Tensor


def _parse_to(args, kwargs) -> tuple[Device | None, dt.DType | None]:
    device = kwargs.pop("device", None)
    dtype = kwargs.pop("dtype", None)
    kwargs.pop("non_blocking", None)
    kwargs.pop("memory_format", None)
    if kwargs:
        raise TypeError(f"to() got unexpected keyword arguments {sorted(kwargs)}")
    for a in args:
        if isinstance(a, Tensor):
            device, dtype = a.device, a.dtype
        elif isinstance(a, dt.DType):
            dtype = a
        elif isinstance(a, (Device, str, int)) and not isinstance(a, bool):
            device = a
        elif isinstance(a, bool):            # non_blocking passed positionally
            continue
        else:
            raise TypeError(f"to() received an invalid argument {a!r}")
    if dtype is not None and not dtype.is_float:
        raise TypeError(f"nn.Module.to only accepts floating point dtypes, but got desired "
                        f"dtype={dtype.name}")
    return (as_device(device) if device is not None else None), dtype


class ConversionMixin:
    """Needs Module's tables (_parameters, _buffers) and children()."""

    def _apply(self, fn: Callable[[Tensor], Tensor], recurse: bool = True) -> "ConversionMixin":
        """Convert every parameter and buffer. Parameters stay the same objects with their
        data replaced (as torch), so optimizers holding them keep working."""
        if recurse:
            for m in self.children():
                m._apply(fn)
        with no_grad():
            for p in self._parameters.values():
                if p is None:
                    continue
                new = fn(p)
                if new is not p:
                    p._data = new._data
                g = p._grad
                if g is not None:
                    new_g = fn(g)
                    if new_g is not g:
                        p._grad = Tensor(new_g._data)
            bump_attr_epoch()
            for k, b in self._buffers.items():
                if b is not None:
                    self._buffers[k] = fn(b)
        return self

    def to(self, *args, **kwargs) -> "ConversionMixin":
        """`to(device)`, `to(dtype)` (floating tensors only), `to(device, dtype)`,
        `to(tensor)` (its device and dtype)."""
        device, dtype = _parse_to(args, dict(kwargs))

        def convert(t: Tensor) -> Tensor:
            out = t
            if device is not None and device != t.device:
                out = out.to(device)
            if dtype is not None and t.dtype.is_float and t.dtype is not dtype:
                out = out.to(dtype)
            return out
        return self._apply(convert)

    def cuda(self, device: Any = None) -> "ConversionMixin":
        return self.to("cuda" if device is None else
                       (f"cuda:{device}" if isinstance(device, int) else device))

    def cpu(self) -> "ConversionMixin":
        return self.to("cpu")

    def _cast_floats(self, d: dt.DType) -> "ConversionMixin":
        return self._apply(lambda t: t.to(d) if t.dtype.is_float and t.dtype is not d else t)

    def float(self) -> "ConversionMixin":      # noqa: A003
        return self._cast_floats(dt.f32)

    def double(self) -> "ConversionMixin":
        return self._cast_floats(dt.f64)

    def half(self) -> "ConversionMixin":
        return self._cast_floats(dt.f16)

    def bfloat16(self) -> "ConversionMixin":
        return self._cast_floats(dt.bf16)

    def type(self, dst_type: dt.DType) -> "ConversionMixin":   # noqa: A003
        return self._apply(lambda t: t.to(dst_type))
