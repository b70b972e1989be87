"""cuBLAS through ctypes, for recording GEMMs into CUDA graphs.

CuPy's own bindings (cupy_backends.cuda.libs.cublas) cannot be used while a stream captures:
CuPy 14's `setStream` raises NotImplementedError("calling cuBLAS API during stream capture is
currently unsupported") when the stream is capturing, and its `gemmEx` and
`gemmStridedBatchedEx` call it first (they set the handle to CuPy's current stream). They also
have no `cublasSetWorkspace`, which a capture needs (cuBLAS must not allocate while a graph
records). So the graph path calls the library CuPy has already loaded, directly, with the
same Python names and argument orders as CuPy's module (cuda_gemm uses either one).

The library is found where CuPy loaded it (its path in /proc/self/maps after CuPy's binding is
imported), else by its usual names."""
from __future__ import annotations

import ctypes
import ctypes.util
import os
from typing import Any

_SONAMES = ("libcublas.so.13", "libcublas.so.12", "libcublas.so")
c_int, c_void_p, c_size_t, c_ll = ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t, \
    ctypes.c_longlong
# (exported symbol, argument types); every function returns a cublasStatus_t (int)
_SIGNATURES = {
    "cublasCreate_v2": [ctypes.POINTER(c_void_p)],
    "cublasDestroy_v2": [c_void_p],
    "cublasSetStream_v2": [c_void_p, c_void_p],
    "cublasSetWorkspace_v2": [c_void_p, c_void_p, c_size_t],
    "cublasSetPointerMode_v2": [c_void_p, c_int],
    "cublasGemmEx": [c_void_p, c_int, c_int, c_int, c_int, c_int, c_void_p,
                     c_void_p, c_int, c_int, c_void_p, c_int, c_int, c_void_p,
                     c_void_p, c_int, c_int, c_int, c_int],
    "cublasGemmStridedBatchedEx": [c_void_p, c_int, c_int, c_int, c_int, c_int, c_void_p,
                                   c_void_p, c_int, c_int, c_ll, c_void_p, c_int, c_int, c_ll,
                                   c_void_p, c_void_p, c_int, c_int, c_ll, c_int, c_int,
                                   c_int],
}


class CublasError(RuntimeError):
    pass


def _loaded_path() -> str | None:
    """The libcublas CuPy loaded into this process, by its mapping (Linux)."""
    try:
        with open("/proc/self/maps") as fh:
            for line in fh:
                path = line.rsplit(None, 1)[-1] if "/" in line else ""
                if os.path.basename(path).startswith("libcublas.so"):
                    return path
    except OSError:
        pass
    return None


def _load() -> ctypes.CDLL:
    try:                      # CuPy's binding loads the library it was built against
        from cupy_backends.cuda.libs import cublas  # noqa: F401
    except Exception:
        pass
    tried = []
    path = _loaded_path()
    names = ([path] if path else []) + list(_SONAMES)
    found = ctypes.util.find_library("cublas")
    if found:
        names.append(found)
    for name in names:
        try:
            return ctypes.CDLL(name)
        except OSError as e:
            tried.append(f"{name}: {e}")
    raise CublasError("tracejit: libcublas not found (" + "; ".join(tried) + ")")


class Binding:
    """The cuBLAS calls of cuda_gemm, named and ordered as CuPy's binding names them; unlike
    CuPy's, none of them touches the handle's stream, and setWorkspace exists."""

    def __init__(self, lib: Any = None) -> None:
        lib = _load() if lib is None else lib
        self._fn = {}
        for name, argtypes in _SIGNATURES.items():
            f = getattr(lib, name)           # AttributeError names a missing symbol
            f.argtypes, f.restype = argtypes, c_int
            self._fn[name] = f

    def _call(self, name: str, *args) -> None:
        status = self._fn[name](*args)
        if status != 0:
            raise CublasError(f"{name} failed: cublasStatus_t {status}")

    def create(self) -> int:
        h = c_void_p()
        self._call("cublasCreate_v2", ctypes.byref(h))
        return int(h.value or 0)

    def destroy(self, handle: int) -> None:
        self._call("cublasDestroy_v2", handle)

    def setStream(self, handle: int, stream: int) -> None:
        self._call("cublasSetStream_v2", handle, stream)

    def setWorkspace(self, handle: int, ptr: int, nbytes: int) -> None:
        self._call("cublasSetWorkspace_v2", handle, ptr, nbytes)

    def setPointerMode(self, handle: int, mode: int) -> None:
        self._call("cublasSetPointerMode_v2", handle, mode)

    def gemmEx(self, handle, transa, transb, m, n, k, alpha, A, Atype, lda, B, Btype, ldb,
               beta, C, Ctype, ldc, computeType, algo) -> None:
        self._call("cublasGemmEx", handle, transa, transb, m, n, k, alpha, A, Atype, lda, B,
                   Btype, ldb, beta, C, Ctype, ldc, computeType, algo)

    def gemmStridedBatchedEx(self, handle, transa, transb, m, n, k, alpha, A, Atype, lda,
                             strideA, B, Btype, ldb, strideB, beta, C, Ctype, ldc, strideC,
                             batchCount, computeType, algo) -> None:
        self._call("cublasGemmStridedBatchedEx", handle, transa, transb, m, n, k, alpha, A,
                   Atype, lda, strideA, B, Btype, ldb, strideB, beta, C, Ctype, ldc, strideC,
                   batchCount, computeType, algo)


_BINDING: Binding | None = None


def binding() -> Binding:
    """The process's binding (loaded on first use)."""
    global _BINDING
    if _BINDING is None:
        _BINDING = Binding()
    return _BINDING
