"""A strict stand-in for CuPy, for testing the device plumbing on machines without a GPU.

Arrays keep their data in host memory but behave like CuPy's where it matters to tracejit:
NumPy functions and ufuncs dispatch to them (NEP 13/18) and return them, `.get()` copies to the
host, `.device.id` says where they live, and — the point of it — any implicit conversion to a
NumPy array, or mixing with a NumPy array in one call, raises TypeError as CuPy does. It says
nothing about CUDA kernels; those run only in the `gpu` tests, except through `KERNELS` (a
test's host stand-ins for a compiled module's functions, see fake_cuda_program.py).

Streams and CUDA graphs (`Stream.begin_capture`/`end_capture`, `Graph.launch`) are strict
too: while the current stream captures, a kernel launch, a device copy (`a[...] = b`) or a
cuBLAS call on a handle set to that stream is recorded, not run; anything that allocates,
reads to the host, or is an unrecorded CuPy computation raises, as CUDA refuses it (or as it
would silently leave the work out of the graph). A replay resolves every recorded address to
memory that is still allocated, or raises: a graph must not outlive its buffers."""
from __future__ import annotations

import ctypes
import itertools
import threading
import types
import weakref

import numpy as np

_HOST_ERR = "Implicit conversion to a NumPy array is not allowed"
# what a real GPU would do, counted: "kernels" (ufunc and array-function calls, each at most one
# kernel launch on CuPy), "to_host" (device-to-host reads: get, item, bool, float, tolist; each
# makes the host wait for the device), "to_device" (host-to-device copies, also synchronous)
COUNTS = {"kernels": 0, "to_host": 0, "to_device": 0}


# -- device memory: every fake array's root buffer, found again by address on a replay -----------
_ROOTS: "weakref.WeakValueDictionary[int, np.ndarray]" = weakref.WeakValueDictionary()
# methods that make views (no kernel, no allocation): allowed while a stream captures
_VIEWS = frozenset({"view", "reshape", "transpose", "swapaxes"})


def _ptr(a: np.ndarray) -> int:
    return a.__array_interface__["data"][0]


def _register(a) -> None:
    if not isinstance(a, np.ndarray):
        return
    while isinstance(a.base, np.ndarray):
        a = a.base
    _ROOTS[id(a)] = a


class MemoryPointer:
    def __init__(self, ptr: int) -> None:
        self.ptr = ptr


def _spec(a: np.ndarray) -> tuple:
    return (_ptr(a), a.shape, a.strides, a.dtype)


def _memory(ptr: int, nbytes: int) -> tuple[np.ndarray, int]:
    """The live allocation holding [ptr, ptr + nbytes), and ptr's offset in it."""
    for root in list(_ROOTS.values()):
        start = _ptr(root)
        if start <= ptr and ptr + nbytes <= start + root.nbytes:
            return root, ptr - start
    raise RuntimeError(f"fake CuPy: a CUDA graph replay touches address {ptr:#x} (+{nbytes} "
                       f"bytes), which is no longer allocated: the graph outlived a buffer")


def _resolve(spec) -> np.ndarray:
    if not isinstance(spec, tuple):
        return spec                     # a scalar argument
    ptr, shape, strides, dtype = spec
    if 0 in shape:
        return np.empty(shape, dtype)
    low = sum((n - 1) * st for n, st in zip(shape, strides) if st < 0)
    high = sum((n - 1) * st for n, st in zip(shape, strides) if st > 0) + dtype.itemsize
    root, off = _memory(ptr + low, high - low)
    flat = root.reshape(-1).view(np.uint8)
    return np.lib.stride_tricks.as_strided(flat[off - low:].view(dtype), shape, strides)


# -- streams and graphs ----------------------------------------------------------------------------
_STREAMS: "weakref.WeakValueDictionary[int, Stream]" = weakref.WeakValueDictionary()
_PTRS = itertools.count(0x1000, 0x10)
_LOCAL = threading.local()
# what ran on the "device", in order (kernels by name, GEMMs, device copies); tests clear it
LOG: list[tuple] = []
# host stand-ins for compiled modules: cubin bytes -> {function name: fn(grid, block, arrays)}
KERNELS: dict[bytes, dict] = {}


class Stream:
    def __init__(self, non_blocking: bool = False, null: bool = False) -> None:
        self.ptr = 0 if null else next(_PTRS)
        self.recording: list | None = None
        _STREAMS[self.ptr] = self

    def __enter__(self):
        _stack().append(self)
        return self

    def __exit__(self, *exc):
        _stack().pop()
        return False

    def begin_capture(self, mode=None) -> None:
        if self.ptr == 0:
            raise RuntimeError("fake CuPy: the legacy default stream cannot capture "
                               "(cudaErrorStreamCaptureUnsupported)")
        if self.recording is not None:
            raise RuntimeError("fake CuPy: the stream is already capturing")
        self.recording = []

    def is_capturing(self) -> bool:
        return self.recording is not None

    def end_capture(self) -> "Graph":
        if self.recording is None:
            raise RuntimeError("fake CuPy: the stream is not capturing")
        ops, self.recording = self.recording, None
        return Graph(ops)

    def synchronize(self) -> None:
        _no_capture("a stream synchronize")
        fakecupy_pinned.settle(self.ptr)


Stream.null = Stream(null=True)


def _stack() -> list:
    st = getattr(_LOCAL, "stack", None)
    if st is None:
        st = _LOCAL.stack = []
    return st


def get_current_stream() -> Stream:
    st = _stack()
    return st[-1] if st else Stream.null


def _capturing() -> Stream | None:
    s = get_current_stream()
    return s if s.recording is not None else None


def _no_capture(what: str) -> None:
    s = _capturing()
    if s is not None:
        raise RuntimeError(f"fake CuPy: {what} while stream {s.ptr:#x} is capturing a CUDA "
                           f"graph (operation not permitted when stream is capturing)")


class Graph:
    """A captured CUDA graph: its operations, replayed in order on every launch."""

    def __init__(self, ops: list) -> None:
        self.ops = ops
        self.launches = 0

    def launch(self, stream=None) -> None:
        _no_capture("a graph launch")
        self.launches += 1
        for op in self.ops:
            _run(op)


def _run(op: tuple) -> None:
    kind = op[0]
    if kind == "kernel":
        _, name, fn, grid, block, specs = op
        LOG.append(("kernel", name, grid, block))
        fn(grid, block, [_resolve(a) for a in specs])
    elif kind == "copy":
        dst, src = _resolve(op[2]), _resolve(op[3])
        LOG.append(("copy", dst.shape))
        dst[...] = src
    else:
        CUBLAS.run(op)


class _Function:
    def __init__(self, name: str, fn) -> None:
        self.name, self.fn = name, fn

    def __call__(self, grid, block, args, **kw) -> None:
        arrays = [a._a if isinstance(a, ndarray) else a for a in args]
        op = ("kernel", self.name, self.fn, tuple(grid), tuple(block),
              [_spec(a) if isinstance(a, np.ndarray) else a for a in arrays])
        stream = _capturing()
        if stream is not None:
            stream.recording.append(op)
        else:
            _run(op)


class Module:
    """cupy.cuda.function.Module: the functions come from KERNELS (host stand-ins)."""

    def load(self, cubin: bytes) -> None:
        if cubin not in KERNELS:
            raise RuntimeError("fake CuPy runs no CUDA: register host stand-ins for this "
                               "module's functions in fakecupy.KERNELS")
        self.table = KERNELS[cubin]

    def get_function(self, name: str) -> _Function:
        return _Function(name, self.table[name])


def _colmajor(ptr: int, dtype, rows: int, cols: int, ld: int) -> np.ndarray:
    """The column-major matrix cuBLAS reads at ptr (rows x cols, leading dimension ld)."""
    if ld < max(1, rows):
        raise RuntimeError(f"fake cuBLAS: leading dimension {ld} < rows {rows}")
    n = ld * (cols - 1) + rows
    _memory(ptr, n * dtype.itemsize)         # still allocated
    buf = (ctypes.c_byte * (n * dtype.itemsize)).from_address(ptr)
    flat = np.frombuffer(buf, dtype=dtype, count=n)
    return np.lib.stride_tricks.as_strided(flat, (rows, cols),
                                           (dtype.itemsize, ld * dtype.itemsize))


class Cublas:
    """The cuBLAS library: handle, stream, workspace and GEMM calls (with CuPy's binding
    names, as runtime/cublas_ctypes.py names them): a GEMM on a handle set to a capturing
    stream is recorded; float32 accumulation, one rounding."""
    TYPES = {0: np.dtype(np.float32), 2: np.dtype(np.float16)}      # + 14: bfloat16 (below)

    def __init__(self) -> None:
        self.handles: dict[int, dict] = {}
        self._ids = itertools.count(1)
        self.captured_workspaces: list = []

    def create(self) -> int:
        h = next(self._ids)
        self.handles[h] = {"stream": 0, "workspace": None}
        return h

    def destroy(self, handle: int) -> None:
        self.handles.pop(handle, None)

    def setStream(self, handle: int, stream_ptr: int) -> None:
        # cuBLAS documents that cublasSetStream resets the handle's workspace to its own pool
        self.handles[handle]["stream"] = stream_ptr
        self.handles[handle]["workspace"] = None

    def setWorkspace(self, handle: int, ptr: int, nbytes: int) -> None:
        _memory(ptr, nbytes)
        self.handles[handle]["workspace"] = (ptr, nbytes)

    def setPointerMode(self, handle: int, mode: int) -> None:
        assert mode == 0

    def _issue(self, handle: int, op: tuple) -> None:
        stream = _STREAMS.get(self.handles[handle]["stream"])
        if stream is not None and stream.recording is not None:
            stream.recording.append(op)
            # the workspace each recorded GEMM ran with (None: cuBLAS's own pool)
            self.captured_workspaces.append(self.handles[handle]["workspace"])
        else:
            self.run(op)

    @staticmethod
    def _host_f32(p: int) -> float:        # alpha, beta: read when the call is issued
        return float(np.frombuffer((ctypes.c_float * 1).from_address(p), np.float32)[0])

    def gemmEx(self, handle, ta, tb, m, n, k, alpha, A, at, lda, B, bt, ldb, beta, C, ct, ldc,
               compute, algo):
        self._issue(handle, ("gemm", ta, tb, m, n, k, self._host_f32(alpha), A, at, lda, 0, B,
                             ldb, 0, self._host_f32(beta), C, ldc, 0, 1))

    def gemmStridedBatchedEx(self, handle, ta, tb, m, n, k, alpha, A, at, lda, sa, B, bt, ldb,
                             sb, beta, C, ct, ldc, sc, count, compute, algo):
        self._issue(handle, ("gemm", ta, tb, m, n, k, self._host_f32(alpha), A, at, lda, sa, B,
                             ldb, sb, self._host_f32(beta), C, ldc, sc, count))

    def run(self, op: tuple) -> None:
        _, ta, tb, m, n, k, alpha, A, at, lda, sa, B, ldb, sb, beta, C, ldc, sc, count = op
        LOG.append(("gemm", m, n, k, count))
        dt = self.TYPES[at]
        for i in range(count):
            off = lambda p, s: p + i * s * dt.itemsize          # noqa: E731
            a = _colmajor(off(A, sa), dt, *((m, k) if ta == 0 else (k, m)), lda)
            b = _colmajor(off(B, sb), dt, *((k, n) if tb == 0 else (n, k)), ldb)
            a, b = (a if ta == 0 else a.T), (b if tb == 0 else b.T)
            c = _colmajor(off(C, sc), dt, m, n, ldc)
            ab = alpha * (a.astype(np.float32) @ b.astype(np.float32))
            # beta == 0: C is not read (it may hold NaN garbage), as cuBLAS documents
            c[...] = (ab if beta == 0 else ab + beta * c.astype(np.float32)).astype(dt)


class CupyCublas:
    """CuPy 14's binding of that library (cupy_backends.cuda.libs.cublas), as strict as it is:
    it has no setWorkspace; its setStream raises NotImplementedError while the stream captures
    (CuPy refuses cuBLAS calls during capture); its gemmEx and gemmStridedBatchedEx first set
    the handle to CuPy's current stream (CuPy's _setStream), so they refuse capture too.
    tracejit's graph path calls the library directly (CUBLAS_LIB: runtime/cublas_ctypes.py)."""

    def __init__(self, lib: Cublas) -> None:
        self.lib = lib

    handles = property(lambda self: self.lib.handles)
    captured_workspaces = property(lambda self: self.lib.captured_workspaces)

    def create(self) -> int:
        return self.lib.create()

    def destroy(self, handle: int) -> None:
        self.lib.destroy(handle)

    def setPointerMode(self, handle: int, mode: int) -> None:
        self.lib.setPointerMode(handle, mode)

    def setStream(self, handle: int, stream: int) -> None:
        s = _STREAMS.get(stream)
        if s is not None and s.recording is not None:
            raise NotImplementedError("calling cuBLAS API during stream capture is currently "
                                      "unsupported")
        self.lib.setStream(handle, stream)

    def gemmEx(self, handle, transa, transb, m, n, k, alpha, A, Atype, lda, B, Btype, ldb,
               beta, C, Ctype, ldc, computeType, algo):
        self.setStream(handle, get_current_stream().ptr)
        self.lib.gemmEx(handle, transa, transb, m, n, k, alpha, A, Atype, lda, B, Btype, ldb,
                        beta, C, Ctype, ldc, computeType, algo)

    def gemmStridedBatchedEx(self, handle, transa, transb, m, n, k, alpha, A, Atype, lda,
                             strideA, B, Btype, ldb, strideB, beta, C, Ctype, ldc, strideC,
                             batchCount, computeType, algo):
        self.setStream(handle, get_current_stream().ptr)
        self.lib.gemmStridedBatchedEx(handle, transa, transb, m, n, k, alpha, A, Atype, lda,
                                      strideA, B, Btype, ldb, strideB, beta, C, Ctype, ldc,
                                      strideC, batchCount, computeType, algo)

    def run(self, op: tuple) -> None:
        self.lib.run(op)


from tracejit.ir.dtypes import bf16 as _bf16  # noqa: E402

Cublas.TYPES[14] = np.dtype(_bf16.np)
CUBLAS_LIB = Cublas()                      # the library (tracejit's ctypes binding of it)
CUBLAS = CupyCublas(CUBLAS_LIB)            # CuPy's binding of it
_SHARED_HANDLE = CUBLAS.create()           # CuPy's own handle per device


def _unwrap(x):
    if isinstance(x, ndarray):
        return x._a
    if isinstance(x, np.ndarray) and x.ndim > 0:
        raise TypeError(f"Unsupported type {type(x)} (a host array mixed with device arrays)")
    if isinstance(x, (list, tuple)):
        return _same_sequence(x, [_unwrap(v) for v in x])
    if isinstance(x, dict):
        return {k: _unwrap(v) for k, v in x.items()}
    return x


def _wrap(x):
    if isinstance(x, (np.ndarray, np.generic)):
        return ndarray(np.asarray(x))
    if isinstance(x, (list, tuple)):
        return _same_sequence(x, [_wrap(v) for v in x])
    return x


def _same_sequence(x, items: list):
    # a named tuple (np.linalg.svd's SVDResult) takes its fields as arguments
    return type(x)(*items) if hasattr(x, "_fields") else type(x)(items)


class _Device:
    compute_capability = "90"

    def __init__(self, id: int = 0) -> None:       # noqa: A002
        self.id = id

    def synchronize(self) -> None:
        _no_capture("a device synchronize")
        fakecupy_pinned.settle(None)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


class ndarray(np.lib.mixins.NDArrayOperatorsMixin):
    __array_priority__ = 2000

    def __init__(self, a) -> None:
        self._a = a
        self.device = _Device(0)
        _register(a)

    @property
    def data(self) -> "MemoryPointer":
        return MemoryPointer(_ptr(self._a))

    def set(self, arr, stream=None) -> None:
        """Host-to-device copy into this (contiguous) array."""
        _no_capture("a host-to-device copy (ndarray.set)")
        COUNTS["to_device"] += 1
        if not isinstance(arr, np.ndarray) or arr.dtype != self.dtype or arr.size != self.size:
            raise TypeError("ndarray.set: a host array of the same dtype and size is required")
        fakecupy_pinned.copy_starts(arr, stream)
        self._a[...] = arr.reshape(self.shape)

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
        _no_capture(f"np.{ufunc.__name__} (a CuPy kernel outside the recorded launches)")
        COUNTS["kernels"] += 1
        return _wrap(ufunc(*_unwrap(inputs), **_unwrap(kwargs)))

    def __array_function__(self, func, types, args, kwargs):
        _no_capture(f"np.{func.__name__}")
        COUNTS["kernels"] += 1
        return _wrap(func(*_unwrap(args), **_unwrap(kwargs)))

    def __getattr__(self, name):
        # methods CuPy arrays share with NumPy's (min, max, sum, transpose, ...) stay on device
        if name.startswith("_") or name in ("tobytes", "tofile", "ctypes", "data"):
            raise AttributeError(name)
        attr = getattr(self._a, name)
        if not callable(attr):
            return _wrap(attr)
        if name not in _VIEWS:
            _no_capture(f"ndarray.{name}")
        return lambda *a, **k: _wrap(attr(*_unwrap(a), **_unwrap(k)))

    def get(self) -> np.ndarray:
        _no_capture("a device-to-host copy")
        COUNTS["to_host"] += 1
        return self._a.copy()

    def copy(self) -> "ndarray":
        _no_capture("an allocation (ndarray.copy)")
        return ndarray(self._a.copy())

    def astype(self, dtype, **kw) -> "ndarray":
        _no_capture("an allocation (ndarray.astype)")
        return ndarray(self._a.astype(dtype, **kw))

    def reshape(self, *shape) -> "ndarray":
        return ndarray(self._a.reshape(*shape))

    def item(self):
        _no_capture("a device-to-host copy")
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
        stream = _capturing()
        if stream is not None:          # a copy kernel: recorded
            if isinstance(value, np.ndarray) and value.ndim:
                _no_capture("a host-to-device copy")
            dst = _spec(self._a[_unwrap(key)])
            src = _spec(value._a) if isinstance(value, ndarray) else value
            stream.recording.append(("copy", "copy", dst, src))
            return
        if isinstance(value, ndarray):
            LOG.append(("copy", self._a[_unwrap(key)].shape))
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
    _no_capture("a host-to-device copy (cupy.asarray)")
    COUNTS["to_device"] += 1
    return ndarray(np.array(a, dtype=dtype))


def ascontiguousarray(a, dtype=None) -> ndarray:
    a = asarray(a, dtype)
    if not a._a.flags.c_contiguous:
        _no_capture("an allocation (cupy.ascontiguousarray)")
        a = ndarray(np.ascontiguousarray(a._a))
    return a


def empty(shape, dtype=float) -> ndarray:
    _no_capture("an allocation (cupy.empty)")
    return ndarray(np.empty(shape, dtype))


def full(shape, fill_value, dtype=None) -> ndarray:
    """A fill kernel on the device (fill_value is a host scalar: no copy)."""
    _no_capture("an allocation (cupy.full)")
    COUNTS["kernels"] += 1
    return ndarray(np.full(shape, fill_value, dtype))


def module() -> types.ModuleType:
    """A module object that looks like `import cupy` on a one-GPU machine."""
    m = types.ModuleType("cupy")
    m.ndarray, m.asarray, m.ascontiguousarray, m.empty = ndarray, asarray, ascontiguousarray, empty
    m.full = full
    m.cuda = types.SimpleNamespace(
        runtime=types.SimpleNamespace(getDeviceCount=lambda: 1),
        Device=_Device, Stream=Stream, get_current_stream=get_current_stream,
        Event=fakecupy_pinned.Event, alloc_pinned_memory=fakecupy_pinned.alloc_pinned_memory,
        function=types.SimpleNamespace(Module=Module),
        # (whole CUDA executables are cached on disk keyed by it: runtime/cuda_exe_cache.py)
        nvrtc=types.SimpleNamespace(getVersion=lambda: (13, 0)),
        device=types.SimpleNamespace(get_cublas_handle=lambda: _SHARED_HANDLE))
    return m


import fakecupy_pinned  # noqa: E402  (it reads this module's streams and LOG)
