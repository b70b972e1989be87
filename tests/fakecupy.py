"""A strict stand-in for CuPy, for testing the device plumbing on machines without a GPU.

Arrays keep their data in host memory but behave like CuPy's where it matters to tracejit:
NumPy functions and ufuncs dispatch to them (NEP 13/18) and return them, `.get()` copies to the
host, `.device.id` says where they live, and — the point of it — any implicit conversion to a
NumPy array, or mixing with a NumPy array in one call, raises TypeError as CuPy does. It says
nothing about CUDA kernels; those run only in the `gpu` tests."""
from __future__ import annotations

import types

import numpy as np

_HOST_ERR = "Implicit conversion to a NumPy array is not allowed"
# what a real GPU would do, counted: "kernels" (ufunc and array-function calls, each at most one
# kernel launch on CuPy), "to_host" (device-to-host reads: get, item, bool, float, tolist; each
# makes the host wait for the device), "to_device" (host-to-device copies, also synchronous)
COUNTS = {"kernels": 0, "to_host": 0, "to_device": 0}


def _unwrap(x):
    if isinstance(x, ndarray):
        return x._a
    if isinstance(x, np.ndarray) and x.ndim > 0:
        raise TypeError(f"Unsupported type {type(x)} (a host array mixed with device arrays)")
    if isinstance(x, (list, tuple)):
        return type(x)(_unwrap(v) for v in x)
    if isinstance(x, dict):
        return {k: _unwrap(v) for k, v in x.items()}
    return x


def _wrap(x):
    if isinstance(x, (np.ndarray, np.generic)):
        return ndarray(np.asarray(x))
    if isinstance(x, (list, tuple)):
        return type(x)(_wrap(v) for v in x)
    return x


class _Device:
    def __init__(self, id: int = 0) -> None:       # noqa: A002
        self.id = id

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


class ndarray(np.lib.mixins.NDArrayOperatorsMixin):
    __array_priority__ = 2000

    def __init__(self, a) -> None:
        self._a = a
        self.device = _Device(0)

    shape = property(lambda self: self._a.shape)
    dtype = property(lambda self: self._a.dtype)
    ndim = property(lambda self: self._a.ndim)
    size = property(lambda self: self._a.size)
    base = property(lambda self: None)
    flags = property(lambda self: types.SimpleNamespace(c_contiguous=True, f_contiguous=False,
                                                        owndata=True))
    T = property(lambda self: ndarray(self._a.T))

    @property
    def __cuda_array_interface__(self):
        return {"shape": self.shape, "typestr": self.dtype.str, "version": 3,
                "data": (self._a.ctypes.data, False)}

    def __array__(self, *args, **kwargs):
        raise TypeError(_HOST_ERR)

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        # CuPy's __array_ufunc__ forwards plain calls only: `np.add.at(a, i, v)` and the other
        # ufunc methods return NotImplemented, so NumPy raises TypeError (seen on an H200);
        # CuPy's spelling of np.add.at is `a.scatter_add(i, v)` (cupyx.scatter_add)
        if method != "__call__":
            return NotImplemented
        COUNTS["kernels"] += 1
        return _wrap(ufunc(*_unwrap(inputs), **_unwrap(kwargs)))

    def __array_function__(self, func, types, args, kwargs):
        COUNTS["kernels"] += 1
        return _wrap(func(*_unwrap(args), **_unwrap(kwargs)))

    def __getattr__(self, name):
        # methods CuPy arrays share with NumPy's (min, max, sum, transpose, ...) stay on device
        if name.startswith("_") or name in ("tobytes", "tofile", "ctypes", "data"):
            raise AttributeError(name)
        attr = getattr(self._a, name)
        if not callable(attr):
            return _wrap(attr)
        return lambda *a, **k: _wrap(attr(*_unwrap(a), **_unwrap(k)))

    def get(self) -> np.ndarray:
        COUNTS["to_host"] += 1
        return self._a.copy()

    def copy(self) -> "ndarray":
        return ndarray(self._a.copy())

    def astype(self, dtype, **kw) -> "ndarray":
        return ndarray(self._a.astype(dtype, **kw))

    def reshape(self, *shape) -> "ndarray":
        return ndarray(self._a.reshape(*shape))

    def item(self):
        COUNTS["to_host"] += 1
        return self._a.item()

    def tolist(self):
        COUNTS["to_host"] += 1
        return self._a.tolist()

    def __getitem__(self, key):
        return _wrap(self._a[_unwrap(key)])

    def scatter_add(self, slices, value) -> None:
        """np.add.at on the device: repeated indices accumulate."""
        np.add.at(self._a, _unwrap(slices), _unwrap(value))

    def __setitem__(self, key, value):
        self._a[_unwrap(key)] = _unwrap(value)

    def __len__(self) -> int:
        return len(self._a)

    def __bool__(self) -> bool:
        COUNTS["to_host"] += 1
        return bool(self._a)

    def __float__(self) -> float:
        COUNTS["to_host"] += 1
        return float(self._a)

    def __repr__(self) -> str:
        return f"fakecupy.array({self._a!r})"


def asarray(a, dtype=None) -> ndarray:
    if isinstance(a, ndarray):
        return a if dtype is None else a.astype(dtype)
    COUNTS["to_device"] += 1
    return ndarray(np.array(a, dtype=dtype))


def ascontiguousarray(a, dtype=None) -> ndarray:
    return asarray(a, dtype)


def empty(shape, dtype=float) -> ndarray:
    return ndarray(np.empty(shape, dtype))


def full(shape, fill_value, dtype=None) -> ndarray:
    """A fill kernel on the device (fill_value is a host scalar: no copy)."""
    COUNTS["kernels"] += 1
    return ndarray(np.full(shape, fill_value, dtype))


def module() -> types.ModuleType:
    """A module object that looks like `import cupy` on a one-GPU machine."""
    m = types.ModuleType("cupy")
    m.ndarray, m.asarray, m.ascontiguousarray, m.empty = ndarray, asarray, ascontiguousarray, empty
    m.full = full
    m.cuda = types.SimpleNamespace(
        runtime=types.SimpleNamespace(getDeviceCount=lambda: 1),
        Device=_Device)
    return m
