"""Tensor constructors: tensor, zeros, ones, full, arange, linspace, *_like, random."""
from __future__ import annotations

import numpy as np

from ..ir import dtypes as dt
from .tensor import Tensor

_rng = np.random.default_rng(0)


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


def tensor(data, dtype=None, requires_grad: bool = False, device=None) -> Tensor:
    """A new eager tensor holding a copy of `data` (Python floats become float32)."""
    if device not in (None, "cpu"):
        raise RuntimeError(f"device {device!r} is not available: tracejit has no CUDA backend yet")
    if isinstance(data, Tensor):
        data = data._concrete("tensor()")
    d = dt.as_dtype(dtype) if dtype is not None else _default_dtype(data)
    return Tensor(np.array(data, dtype=d.np, copy=True), requires_grad=requires_grad)


def _shape(shape) -> tuple[int, ...]:
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    return tuple(int(s) for s in shape)


def full(shape, fill_value, dtype=None, requires_grad: bool = False) -> Tensor:
    shape = shape if isinstance(shape, (tuple, list)) else (shape,)
    d = dt.as_dtype(dtype) if dtype is not None else _default_dtype(fill_value)
    return Tensor(np.full(tuple(shape), fill_value, d.np), requires_grad=requires_grad)


def zeros(*shape, dtype=None, requires_grad: bool = False) -> Tensor:
    return full(_shape(shape), 0.0, dtype or dt.f32, requires_grad)


def ones(*shape, dtype=None, requires_grad: bool = False) -> Tensor:
    return full(_shape(shape), 1.0, dtype or dt.f32, requires_grad)


def empty(*shape, dtype=None, requires_grad: bool = False) -> Tensor:
    return zeros(*shape, dtype=dtype, requires_grad=requires_grad)


def _like(x, value, dtype, requires_grad):
    return full(x.shape, value, dtype or x.dtype, requires_grad)


def zeros_like(x, dtype=None, requires_grad=False): return _like(x, 0, dtype, requires_grad)
def ones_like(x, dtype=None, requires_grad=False): return _like(x, 1, dtype, requires_grad)
def full_like(x, v, dtype=None, requires_grad=False): return _like(x, v, dtype, requires_grad)


def arange(start, stop=None, step=1, dtype=None, requires_grad: bool = False) -> Tensor:
    if stop is None:
        start, stop = 0, start
    d = dt.as_dtype(dtype) if dtype is not None else \
        (dt.i64 if all(isinstance(v, int) for v in (start, stop, step)) else dt.f32)
    return Tensor(np.arange(start, stop, step).astype(d.np), requires_grad=requires_grad)


def linspace(start, stop, num: int, dtype=None) -> Tensor:
    return Tensor(np.linspace(start, stop, num).astype((dt.as_dtype(dtype or "f32")).np))


def manual_seed(seed: int) -> None:
    global _rng
    _rng = np.random.default_rng(seed)


def randn(*shape, dtype=None, requires_grad: bool = False) -> Tensor:
    d = dt.as_dtype(dtype or "f32")
    return Tensor(_rng.standard_normal(_shape(shape)).astype(d.np), requires_grad=requires_grad)


def rand(*shape, dtype=None, requires_grad: bool = False) -> Tensor:
    d = dt.as_dtype(dtype or "f32")
    return Tensor(_rng.random(_shape(shape)).astype(d.np), requires_grad=requires_grad)


def randint(low: int, high: int, size, dtype=None) -> Tensor:
    d = dt.as_dtype(dtype or "i64")
    return Tensor(_rng.integers(low, high, size).astype(d.np))
