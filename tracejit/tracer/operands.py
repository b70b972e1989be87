"""How the op functions take their operands: errors that name the op, PyTorch's type
promotion (Python scalars and weak traced scalars only raise the category), a number, list or
array as a Tensor, casts, and axis arguments."""
from __future__ import annotations

import builtins
import numbers
from typing import Any

import numpy as np

from ..ir import dtypes as dt
from ..ir.core import user_location
from ..ir.primitives import P, bind
from .state import STATE
from .tensor_base import TensorBase as Tensor


def _err(op: str, msg: str, cls=ValueError) -> Exception:
    return cls(f"{op}: {msg} (at {user_location()})")


def _fmt(t) -> str:
    return f"{t.dtype.name}{list(t.shape)}" if isinstance(t, Tensor) else repr(t)


_CAT = {"b": 0, "i": 1, "f": 2}


def _is_scalar(x: Any) -> bool:
    return isinstance(x, (numbers.Number, np.bool_)) and not isinstance(x, np.ndarray)


def _scalar_dtype(x) -> dt.DType:
    if isinstance(x, bool):
        return dt.bool_
    if isinstance(x, numbers.Integral):
        return dt.i64
    if isinstance(x, (numbers.Real, np.bool_)):
        # (torch reads a NumPy bool as a float number: int_t + np.bool_(True) is float32)
        return dt.f32
    raise TypeError(f"unsupported scalar {x!r}")


def _group_dtype(ds: list) -> dt.DType | None:
    """The promoted dtype of operands of one priority group (the highest category, then the
    most bits)."""
    if not ds:
        return None
    best = builtins.max(ds, key=lambda d: (_CAT[d.kind], d.bits))
    if best in dt.HALF and dt.f16 in ds and dt.bf16 in ds:
        best = dt.f32                # neither 16-bit float holds the other (PyTorch, JAX agree)
    elif best.bits == 8 and dt.u8 in ds and dt.i8 in ds:
        best = dt.i16                # neither 8-bit integer holds the other (as torch)
    return best


def check_store(op: str, v, d: dt.DType) -> None:
    """torch's range check of a Python int stored into an integer tensor (full, fill_,
    masked_fill, x[i] = v), where arithmetic would wrap it: [min, max] of d, and -255..255
    for uint8 (whose negative values wrap)."""
    if type(v) is not int or d.kind != "i":
        return
    lo, hi = (-255, 255) if d is dt.u8 else (-(1 << d.bits - 1), (1 << d.bits - 1) - 1)
    if not lo <= v <= hi:
        raise _err(op, f"value {v} cannot be converted to {d.name} without overflow (as "
                   f"torch)", RuntimeError)


def wrap_int(v, d: dt.DType):
    """A Python int as d's value, wrapped modulo 2**bits as torch converts a scalar operand
    (`uint8_t + -1` adds 255, `int32_t + 2**40` adds 0); other values pass through."""
    if d.kind != "i" or type(v) is not int or d is dt.i64:
        return v
    m = 1 << d.bits
    v %= m
    return v - m if d.signed and v >= m >> 1 else v


def result_dtype(*xs: Any) -> dt.DType:
    """torch.result_type: operands fall in three groups, tensors with dimensions (and NumPy
    arrays of any rank: torch hands a Tensor-with-ndarray op to NumPy, whose 0-d arrays are
    strong), then 0-d tensors, then Python/NumPy scalars and weak traced scalars. A lower
    group takes part only where its category (bool < integer < float) is higher than the
    result so far: a 0-d tensor then with its own dtype, a scalar with the default dtype."""
    has_array = any(isinstance(x, np.ndarray) for x in xs)
    dims, zero, weak = [], [], []
    for x in xs:
        if isinstance(x, Tensor):
            if x._weak:
                weak.append(x.dtype)
            elif x.ndim or has_array:
                dims.append(x.dtype)
            elif STATE.traces and _array_argument(x):
                has_array = True            # (and the 0-d tensors before it: strong too)
                dims += zero + [x.dtype]
                zero = []
            else:
                zero.append(x.dtype)
        elif isinstance(x, np.ndarray):
            dims.append(dt.as_dtype(x.dtype))
        elif _is_scalar(x):
            weak.append(_scalar_dtype(x))
    best = _group_dtype(dims)
    lower = _group_dtype(zero)
    if best is None or lower is not None and _CAT[lower.kind] > _CAT[best.kind]:
        best = lower
    if best is None:
        return _group_dtype(weak)
    wcat = builtins.max((_CAT[d.kind] for d in weak), default=-1)
    if wcat > _CAT[best.kind]:
        return dt.f32 if wcat == 2 else dt.i64
    return best


def _array_argument(x: Tensor) -> bool:
    """Whether a 0-d traced tensor is a compiled function's 0-d NumPy array argument, strong
    as the array is eagerly (trace.py's `array_args`)."""
    return any(id(x) in tr.array_args for tr in STATE.traces)


def as_tensor(x: Any, dtype: dt.DType | None = None, like: Tensor | None = None,
              const: bool = False) -> Tensor:
    """An operand as a Tensor of `dtype` (a cast is recorded for Tensors).

    While tracing, a user's NumPy array is captured by reference, whatever its size: an input
    read afresh at every call, and a dtype change is a cast in the graph, so an in-place change
    of the array is always seen. Python scalars and lists, and arrays the library builds itself
    (`const=True`), are constants of the trace."""
    if isinstance(x, Tensor):
        return cast(x, dtype) if dtype is not None and x.dtype is not dtype else x
    if isinstance(x, (list, tuple)):
        x = np.asarray(x)
        const = True
    if not (_is_scalar(x) or isinstance(x, np.ndarray)):
        raise TypeError(f"expected a Tensor, NumPy array or number, got {type(x).__name__} "
                        f"(at {user_location()})")
    if isinstance(x, np.ndarray) and dt.from_numpy(x.dtype) is None:
        raise TypeError(f"unsupported NumPy dtype {x.dtype} (at {user_location()})")
    if not const and STATE.traces and isinstance(x, np.ndarray):
        t = STATE.traces[-1].lift_array(x)
        return cast(t, dtype) if dtype is not None and t.dtype is not dtype else t
    if dtype is not None and type(x) is int:
        x = wrap_int(x, dtype)
    arr = np.asarray(x, dtype=(dtype or (_scalar_dtype(x) if _is_scalar(x)
                                         else dt.as_dtype(x.dtype))).np)
    if like is not None and like._traced:
        return like.__tj_const__(arr)
    if like is not None:                # eager: the constant lives on like's device
        return like.__tj_const__(arr)
    return Tensor(arr)


def cast(x, dtype) -> Tensor:
    dtype = dt.as_dtype(dtype)
    x = as_tensor(x)
    if x.dtype is dtype:
        return x
    out = bind(P.cast, x, dtype=dtype)
    return out


def _axes(x: Tensor, axis, dim=None, op: str = "reduce") -> tuple[int, ...]:
    if dim is not None:
        axis = dim
    if axis is None:
        return tuple(range(x.ndim))
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    out = []
    for a in axes:
        if not -builtins.max(x.ndim, 1) <= a < builtins.max(x.ndim, 1):   # 0-d: 0 and -1
            raise _err(op, f"axis {a} is out of range for {_fmt(x)}", IndexError)
        out.append(a % x.ndim if x.ndim else 0)
    if len(set(out)) != len(out):
        raise _err(op, f"repeated axis in {axes}")
    return tuple(sorted(out)) if x.ndim else ()
