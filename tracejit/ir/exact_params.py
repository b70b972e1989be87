"""Exact forms of instruction parameters, for keys that must never confuse two instructions: the
disk cache's executable keys (runtime/exe_cache.py) and structural kernel keys
(codegen/kernel_key.py).

`exact_param(v)` is hashable, compares equal only for parameters that mean the same thing, and
has an exact repr (the disk cache writes keys as text). Floats go by their bits (0.0 and -0.0
differ, as do NaN payloads), booleans apart from the integers they equal, NumPy arrays by dtype,
shape and bytes (a digest of the bytes past 64), containers element by element with their kind.
Anything else raises Inexact: the caller then keeps no key for that instruction."""
from __future__ import annotations

import hashlib
import struct

import numpy as np

from .dtypes import DType


class Inexact(Exception):
    """A parameter value this module cannot describe exactly (its type's name)."""


def exact_param(v):
    """The exact form of parameter value v (see the module docstring), or raise Inexact."""
    t = type(v)
    if t is int or t is str or v is None:
        return v
    if t is bool:
        return ("bool", v)
    if t is float:
        return ("float", struct.pack("<d", v))
    if t is tuple or t is list:
        if t is tuple and all(type(x) is int for x in v):
            return v
        return (t.__name__, tuple(exact_param(x) for x in v))
    if t is dict:
        return ("dict", tuple(sorted(((exact_param(k), exact_param(x)) for k, x in v.items()),
                                     key=repr)))
    if isinstance(v, DType):
        return ("dtype", v.name)
    if isinstance(v, np.ndarray):
        a = np.ascontiguousarray(v)
        data = a.tobytes()
        return ("array", a.dtype.str, a.shape,
                data if len(data) <= 64 else hashlib.sha256(data).hexdigest())
    if isinstance(v, np.generic):
        return ("scalar", v.dtype.str, v.tobytes())
    if isinstance(v, np.dtype):
        return ("npdtype", v.str, v.name)
    if t is slice:
        return ("slice", exact_param(v.start), exact_param(v.stop), exact_param(v.step))
    raise Inexact(t.__name__)


__all__ = ["exact_param", "Inexact"]
