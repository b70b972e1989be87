"""torch.finfo / torch.iinfo for the IR's dtypes: the numeric limits models use to build masks
(HF's `(1.0 - mask) * torch.finfo(dtype).min`) and clamps, as plain Python numbers."""
from __future__ import annotations

import ml_dtypes
import numpy as np

from . import dtypes as dt

_TORCH_NAME = {dt.f16: "float16", dt.bf16: "bfloat16", dt.f32: "float32", dt.f64: "float64",
               dt.u8: "uint8", dt.i8: "int8", dt.i16: "int16", dt.i32: "int32",
               dt.i64: "int64"}


class finfo:                                 # noqa: N801  (torch's name)
    """Limits of a floating dtype (float32 when none is given), as torch.finfo reports them."""

    def __init__(self, dtype=None) -> None:
        d = dt.f32 if dtype is None else dt.as_dtype(dtype)
        if not d.is_float:
            raise TypeError(f"finfo() requires a floating point input type, got {d}; use "
                            f"iinfo to handle '{_TORCH_NAME.get(d, d.name)}'")
        info = ml_dtypes.finfo(d.np)
        self.bits: int = int(info.bits)
        self.eps: float = float(info.eps)
        self.max: float = float(info.max)
        self.min: float = float(info.min)
        self.tiny: float = float(info.tiny)
        self.smallest_normal: float = float(info.smallest_normal)
        self.resolution: float = 10.0 ** -int(info.precision)     # torch: a power of 10
        self.dtype: str = _TORCH_NAME[d]

    def __repr__(self) -> str:
        return (f"finfo(resolution={self.resolution}, min={self.min}, max={self.max}, "
                f"eps={self.eps}, smallest_normal={self.smallest_normal}, tiny={self.tiny}, "
                f"dtype={self.dtype})")


class iinfo:                                 # noqa: N801
    """Limits of an integer dtype, as torch.iinfo reports them."""

    def __init__(self, dtype) -> None:
        d = dt.as_dtype(dtype)
        if not d.is_int:
            raise TypeError(f"iinfo() requires an integer input type, got {d}; use finfo to "
                            f"handle '{_TORCH_NAME.get(d, d.name)}'")
        info = np.iinfo(d.np)
        self.bits: int = int(info.bits)
        self.max: int = int(info.max)
        self.min: int = int(info.min)
        self.dtype: str = _TORCH_NAME[d]

    def __repr__(self) -> str:
        return f"iinfo(min={self.min}, max={self.max}, dtype={self.dtype})"
