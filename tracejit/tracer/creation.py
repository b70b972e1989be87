"""Tensor constructors: tensor, zeros, ones, full, arange, linspace, *_like (random ones:
rng.py)."""
from __future__ import annotations

import math
import numbers

import numpy as np

from ..ir import dtypes as dt
from ..ir.core import user_location
from ..devices import device as as_device, to_device
from .operands import check_store, wrap_int
from .tensor_base import TensorBase as Tensor


def _default_dtype(data) -> dt.DType:
    a = np.asarray(data)
    if a.dtype.kind == "f" and not isinstance(data, (np.ndarray, np.floating)):
        return dt.f32            # Python floats default to float32, as in PyTorch
    if a.dtype.kind in "iu" and not isinstance(data, (np.ndarray, np.integer)):
        return dt.i64
    d = dt.from_numpy(a.dtype)
    if d is None:
        if a.dtype.kind == "u" or a.dtype.kind == "i":
            return dt.i64
        raise TypeError(f"tensor(): unsupported data type {a.dtype}")
    return d


def _new(array: np.ndarray, device, requires_grad: bool) -> Tensor:
    """A tensor made on the host, moved to `device` (default: TRACEJIT_DEVICE, else cpu)."""
    dev = as_device(device)
    if dev.type != "cpu":
        array = to_device(array, dev)
    return Tensor(array, requires_grad=requires_grad)


def tensor(data, dtype=None, requires_grad: bool = False, device=None) -> Tensor:
    """A new eager tensor holding a copy of `data` (Python floats become float32)."""
    if isinstance(data, Tensor):
        device = data.device if device is None else device
        data = data._host("tensor()")
    d = dt.as_dtype(dtype) if dtype is not None else _default_dtype(data)
    try:
        array = np.array(data, dtype=d.np, copy=True)
    except OverflowError as e:        # (torch refuses these too: tensor([300], dtype=uint8))
        wide = np.asarray(data) if d is dt.u8 else None
        wide = wide if wide is not None and wide.dtype.kind == "i" else None
        if wide is None or not ((wide >= -255) & (wide <= 255)).all():
            raise RuntimeError(f"tensor(): a value cannot be converted to {d.name} without "
                               f"overflow, as in torch ({e}) (at {user_location()})") from None
        array = wide.astype(np.uint8)    # torch's uint8 takes -255..-1 and wraps them
    return _new(array, device, requires_grad)


def _shape(shape) -> tuple[int, ...]:
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    return tuple(int(s) for s in shape)


def full(shape, fill_value, dtype=None, requires_grad: bool = False, device=None) -> Tensor:
    shape = shape if isinstance(shape, (tuple, list)) else (shape,)
    d = dt.as_dtype(dtype) if dtype is not None else _default_dtype(fill_value)
    # (an int fill wraps into the dtype as torch's: full((2,), -1, dtype=uint8) is 255s)
    check_store("full", fill_value, d)
    return _new(np.full(tuple(shape), wrap_int(fill_value, d), d.np), device, requires_grad)


def zeros(*shape, dtype=None, requires_grad: bool = False, device=None) -> Tensor:
    return full(_shape(shape), 0.0, dtype or dt.f32, requires_grad, device)


def ones(*shape, dtype=None, requires_grad: bool = False, device=None) -> Tensor:
    return full(_shape(shape), 1.0, dtype or dt.f32, requires_grad, device)


def empty(*shape, dtype=None, requires_grad: bool = False, device=None) -> Tensor:
    return zeros(*shape, dtype=dtype, requires_grad=requires_grad, device=device)


# (memory_format= of the *_like constructors: accepted, nothing to do; see memory_format.py)
def _like(x, value, dtype, requires_grad, device):
    return full(x.shape, value, dtype or x.dtype, requires_grad,
                device if device is not None else x.device)


def zeros_like(x, dtype=None, requires_grad=False, device=None, memory_format=None):
    return _like(x, 0, dtype, requires_grad, device)


def empty_like(x, dtype=None, requires_grad=False, device=None, memory_format=None):
    """Like torch.empty_like; its values are unspecified there, zeros here."""
    return _like(x, 0, dtype, requires_grad, device)


def ones_like(x, dtype=None, requires_grad=False, device=None, memory_format=None):
    return _like(x, 1, dtype, requires_grad, device)


def full_like(x, v, dtype=None, requires_grad=False, device=None, memory_format=None):
    return _like(x, v, dtype, requires_grad, device)


def _is_int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, (bool, np.bool_))


def arange(start, stop=None, step=1, dtype=None, requires_grad: bool = False,
           device=None) -> Tensor:
    """PyTorch's arange, including its integer-dtype rules for float bounds: the values are
    trunc(start) + i * trunc(step); the length is ceil((stop - start) / step) in float64,
    except for int64, where it comes from the truncated bounds (so arange(3.1, dtype=int64)
    is [0, 1, 2] but the int32 one is [0, 1, 2, 3], as torch)."""
    if stop is None:
        start, stop = 0, start
    d = dt.as_dtype(dtype) if dtype is not None else \
        (dt.i64 if all(_is_int(v) for v in (start, stop, step)) else dt.f32)
    fs, fe, fst = (float(v) for v in (start, stop, step))
    if not (math.isfinite(fs) and math.isfinite(fe)):
        raise ValueError(f"arange: unsupported range {start} -> {stop}")
    if not d.is_int:
        if fst == 0:
            raise ValueError("arange: step must be nonzero")
        _check_arange_sign(fs, fe, fst)
        return _new(np.arange(start, stop, step).astype(d.np), device, requires_grad)
    xs, xe, xst = int(start), int(stop), int(step)        # truncated toward zero, as C++
    if d is dt.i64:
        if xst == 0:
            raise ValueError(f"arange: step must be nonzero (step {step} truncates to 0 for "
                             f"int64)")
        _check_arange_sign(fs, fe, fst)
        sgn = (xst > 0) - (xst < 0)
        n = (xe - xs + xst - sgn) // xst        # both signs agree here: floor == trunc
    else:
        if fst == 0:
            raise ValueError("arange: step must be nonzero")
        _check_arange_sign(fs, fe, fst)
        n = math.ceil((fe - fs) / fst)
    values = np.int64(xs) + np.arange(n, dtype=np.int64) * np.int64(xst)
    return _new(values.astype(d.np), device, requires_grad)


def _check_arange_sign(start: float, stop: float, step: float) -> None:
    if not ((step > 0 and stop >= start) or (step < 0 and stop <= start)):
        raise ValueError(f"arange: upper bound and lower bound inconsistent with step sign "
                         f"(start {start}, end {stop}, step {step})")


def linspace(start, stop, num: int, dtype=None, device=None) -> Tensor:
    """`num` points from start to stop. Floats: computed in float64 and rounded once to
    `dtype` (default float32), whatever the dtype of a tensor `start` or `stop`. Integer
    dtypes follow PyTorch: the ends are truncated first, the step is a float64, the first
    half counts up from start and the second down from stop, each value truncated."""
    ends = [np.float64(v._host("linspace()") if isinstance(v, Tensor) else v)
            for v in (start, stop)]
    d = dt.as_dtype(dtype or "f32")
    if not d.is_int or num <= 1:
        if d.is_int:
            ends = [np.float64(np.trunc(e)) for e in ends]
        return _new(np.linspace(*ends, num).astype(d.np), device, False)
    first, last = (float(np.trunc(e)) for e in ends)
    step = (last - first) / (num - 1)
    i = np.arange(num, dtype=np.float64)
    half = num // 2
    values = np.where(i < half, first + step * i, last - step * (num - i - 1))
    return _new(np.trunc(values).astype(np.int64).astype(d.np), device, False)
