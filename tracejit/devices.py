"""Devices: "cpu" holds NumPy arrays, "cuda[:N]" holds CuPy arrays on GPU N.

A leaf below both the tracer and the runtime (it imports only NumPy, the IR's dtype table and,
on demand, CuPy): the tracer asks it where a tensor lives and how to move one; the runtime asks
it for CuPy. Without CuPy or without a GPU,
asking for "cuda" raises a RuntimeError that says which of the two is missing."""
from __future__ import annotations

import os
from typing import Any

import numpy as np

from .ir import dtypes as dt


class Device:
    """A device, compared equal to its spelling: `t.device == "cuda:0"`."""

    __slots__ = ("type", "index")

    def __init__(self, type: str, index: int | None = None) -> None:    # noqa: A002
        self.type = type
        self.index = index if type == "cuda" else None

    def __str__(self) -> str:
        return self.type if self.index is None else f"{self.type}:{self.index}"

    def __repr__(self) -> str:
        return f"device(type='{self.type}'" + \
            ("" if self.index is None else f", index={self.index}") + ")"

    def __eq__(self, other: Any) -> bool:
        if isinstance(other, str):
            try:
                other = device(other)
            except ValueError:
                return False
        return isinstance(other, Device) and (self.type, self.index) == (other.type, other.index)

    def __hash__(self) -> int:
        return hash((self.type, self.index))


CPU = Device("cpu")


def device(spec: Any = None) -> Device:
    """Parse "cpu", "cuda", "cuda:1" or a Device. None means TRACEJIT_DEVICE (default cpu)."""
    if spec is None:
        spec = os.environ.get("TRACEJIT_DEVICE", "cpu")
    if isinstance(spec, Device):
        return spec
    if isinstance(spec, str):
        kind, _, idx = spec.partition(":")
        if kind == "cpu" and not idx:
            return CPU
        if kind == "cuda" and (not idx or idx.isdigit()):
            return Device("cuda", int(idx) if idx else 0)
    raise ValueError(f"unknown device {spec!r}: expected 'cpu', 'cuda' or 'cuda:N'")


_cupy: Any = None


def cupy_module() -> Any:
    """CuPy, once it is known to see a GPU; a clear RuntimeError otherwise."""
    global _cupy
    if _cupy is not None:
        return _cupy
    try:
        import cupy
    except ImportError:
        raise RuntimeError("device 'cuda' is not available: CuPy is not installed "
                           "(pip install 'tracejit[cuda]' on a machine with an NVIDIA GPU)") \
            from None
    try:
        n = cupy.cuda.runtime.getDeviceCount()
    except Exception as e:           # CuPy raises its own error types without a driver
        raise RuntimeError(f"device 'cuda' is not available: CuPy cannot reach a GPU "
                           f"({type(e).__name__}: {e})") from None
    if n == 0:
        raise RuntimeError("device 'cuda' is not available: CuPy found no GPU")
    _cupy = cupy
    return cupy


def cuda_available() -> bool:
    try:
        cupy_module()
        return True
    except RuntimeError:
        return False


def is_gpu_array(a: Any) -> bool:
    """A CuPy array (anything exposing the CUDA array interface)."""
    return hasattr(a, "__cuda_array_interface__")


def is_host(a: Any) -> bool:
    return type(a) is np.ndarray or isinstance(a, (np.ndarray, np.generic))


def device_of(a: Any) -> Device:
    """Where an array lives (NumPy: cpu; anything with a CuPy-style `.device.id`: cuda)."""
    if is_host(a):
        return CPU
    dev = getattr(a, "device", None)
    return Device("cuda", int(getattr(dev, "id", 0)))


def to_device(a: Any, dev: Device) -> Any:
    """`a` on `dev` (a copy when it moves; `a` itself when it is already there)."""
    if device_of(a) == dev:
        return a
    if dev.type == "cpu":
        return a.get()
    cp = cupy_module()
    with cp.cuda.Device(dev.index):
        try:
            return cp.asarray(a)
        except Exception as e:       # CuPy's error for a dtype it lacks varies by version
            if a.dtype != dt.bf16.np:
                raise
            raise TypeError(f"bfloat16 tensors on the GPU need a CuPy with bfloat16 support "
                            f"(CuPy 14 or newer, with ml_dtypes); CuPy "
                            f"{getattr(cp, '__version__', '?')} says: {e}") from None

