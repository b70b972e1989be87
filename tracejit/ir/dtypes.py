"""The IR's element types: a closed set, each tied to one NumPy dtype. bfloat16 is the
`ml_dtypes` NumPy dtype (the one JAX and CuPy use): NumPy has none of its own."""
from __future__ import annotations

import ml_dtypes
import numpy as np


class DType:
    """An IR element type. Instances are singletons; compare with `is` or `==`."""

    __slots__ = ("name", "np", "kind", "bits", "signed")

    def __init__(self, name: str, np_dtype: type, kind: str, bits: int) -> None:
        self.name = name            # short form used in IR text: f32, i64, u8, bool
        self.np = np.dtype(np_dtype)
        self.kind = kind            # "f" float, "i" integer (u8 too), "b" bool
        self.bits = bits
        # uint8 is the one unsigned integer (as torch's): codegen picks unsigned compare,
        # divide, shift, extend and convert for it
        self.signed = self.np.kind in "fi"

    @property
    def is_float(self) -> bool:
        return self.kind == "f"

    @property
    def is_int(self) -> bool:
        return self.kind == "i"

    @property
    def is_signed(self) -> bool:
        """torch.dtype.is_signed: False for uint8 and bool."""
        return self.signed

    def __repr__(self) -> str:
        return self.name

    def __reduce__(self):           # pickles as a reference to the singleton
        return (dtype_from_name, (self.name,))


f16 = DType("f16", np.float16, "f", 16)
bf16 = DType("bf16", ml_dtypes.bfloat16, "f", 16)
f32 = DType("f32", np.float32, "f", 32)
f64 = DType("f64", np.float64, "f", 64)
u8 = DType("u8", np.uint8, "i", 8)
i8 = DType("i8", np.int8, "i", 8)
i16 = DType("i16", np.int16, "i", 16)
i32 = DType("i32", np.int32, "i", 32)
i64 = DType("i64", np.int64, "i", 64)
bool_ = DType("bool", np.bool_, "b", 8)

ALL = (f16, bf16, f32, f64, u8, i8, i16, i32, i64, bool_)
SMALL_INT = (u8, i8, i16)      # computed in their own width: arithmetic wraps as torch's
HALF = (f16, bf16)            # 16-bit floats: stored narrow, computed in float32
HALF_NP = (f16.np, bf16.np)
_BY_NAME = {d.name: d for d in ALL}
_BY_NP = {d.np: d for d in ALL}
NP_TO_DTYPE = _BY_NP          # numpy dtype -> DType, for hot paths that hold a numpy dtype
_ALIASES = {"float16": f16, "float32": f32, "float64": f64, "float": f32, "double": f64,
            "half": f16, "bfloat16": bf16, "int32": i32, "int64": i64, "int": i64, "long": i64,
            "bool": bool_, "bool_": bool_, "uint8": u8, "int8": i8, "int16": i16, "byte": u8,
            "char": i8, "short": i16}


def dtype_from_name(name: str) -> DType:
    return _BY_NAME[name]


def as_dtype(x) -> DType:
    """Accept a DType, its name, a NumPy dtype or a Python/NumPy type; raise TypeError otherwise."""
    if isinstance(x, DType):
        return x
    if isinstance(x, str):
        d = _BY_NAME.get(x) or _ALIASES.get(x)
        if d is not None:
            return d
    if x is float:
        return f32
    if x is int:
        return i64
    if x is bool:
        return bool_
    try:
        npd = np.dtype(x)
    except TypeError:
        npd = None
    if npd is not None and npd in _BY_NP:
        return _BY_NP[npd]
    raise TypeError(f"unsupported dtype {x!r}; tracejit supports {', '.join(d.name for d in ALL)}")


def from_numpy(npd: np.dtype) -> DType | None:
    return _BY_NP.get(np.dtype(npd))
