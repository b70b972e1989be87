"""runtime/cublas_ctypes.py, the ctypes binding of cuBLAS that the CUDA-graph path calls
(CuPy 14's own binding refuses calls while a stream captures and has no setWorkspace): each
call reaches the C symbol with cuBLAS's argument order, and 64-bit strides stay 64-bit. The
library is stood in for by C-callable Python functions of cuBLAS's C signatures."""
from __future__ import annotations

import ctypes

import pytest

from tracejit.runtime import cublas_ctypes
from tracejit.runtime.cublas_ctypes import _SIGNATURES, Binding, CublasError


class _Lib:
    """Symbols as C function pointers of the exact C signatures; each records its args."""

    def __init__(self, status: int = 0) -> None:
        self.calls: list = []
        self._keep = []
        for name, argtypes in _SIGNATURES.items():
            proto = ctypes.CFUNCTYPE(ctypes.c_int, *argtypes)

            def fn(*args, name=name):
                if name == "cublasCreate_v2":
                    args[0][0] = 0x1234           # the handle written through the pointer
                    args = ()
                self.calls.append((name,) + tuple(args))
                return status
            cfn = proto(fn)
            self._keep.append(cfn)
            setattr(self, name, ctypes.cast(cfn, proto))


def test_every_call_reaches_its_symbol_in_cublas_order():
    lib = _Lib()
    b = Binding(lib)
    h = b.create()
    assert h == 0x1234
    b.setStream(h, 0x55)
    b.setWorkspace(h, 0x7000, 32 << 20)
    b.setPointerMode(h, 0)
    b.gemmEx(h, 1, 0, 3, 4, 5, 0x10, 0x20, 14, 3, 0x30, 14, 5, 0x40, 0x50, 14, 3, 68, -1)
    big = 3 << 32                                     # a stride past 32 bits
    b.gemmStridedBatchedEx(h, 0, 1, 3, 4, 5, 0x10, 0x20, 0, 3, big, 0x30, 0, 4, 0, 0x40,
                           0x50, 0, 3, 12, 7, 68, -1)
    b.destroy(h)
    names = [c[0] for c in lib.calls]
    assert names == ["cublasCreate_v2", "cublasSetStream_v2", "cublasSetWorkspace_v2",
                     "cublasSetPointerMode_v2", "cublasGemmEx", "cublasGemmStridedBatchedEx",
                     "cublasDestroy_v2"]
    assert lib.calls[1] == ("cublasSetStream_v2", 0x1234, 0x55)
    assert lib.calls[2] == ("cublasSetWorkspace_v2", 0x1234, 0x7000, 32 << 20)
    assert lib.calls[4] == ("cublasGemmEx", 0x1234, 1, 0, 3, 4, 5, 0x10, 0x20, 14, 3, 0x30,
                            14, 5, 0x40, 0x50, 14, 3, 68, -1)
    assert lib.calls[5] == ("cublasGemmStridedBatchedEx", 0x1234, 0, 1, 3, 4, 5, 0x10, 0x20,
                            0, 3, big, 0x30, 0, 4, 0, 0x40, 0x50, 0, 3, 12, 7, 68, -1)


def test_a_failing_status_raises_naming_the_call():
    b = Binding(_Lib(status=7))
    with pytest.raises(CublasError, match="cublasSetWorkspace_v2 failed: cublasStatus_t 7"):
        b.setWorkspace(1, 2, 3)


def test_a_library_without_a_symbol_is_refused():
    lib = _Lib()
    del lib.cublasSetWorkspace_v2
    with pytest.raises(AttributeError, match="cublasSetWorkspace_v2"):
        Binding(lib)


def test_no_library_says_which_names_were_tried(monkeypatch):
    monkeypatch.setattr(cublas_ctypes, "_loaded_path", lambda: None)
    monkeypatch.setattr(cublas_ctypes, "_SONAMES", ("libcublas_tj_absent.so.99",))
    monkeypatch.setattr(cublas_ctypes.ctypes.util, "find_library", lambda name: None)
    with pytest.raises(CublasError, match="libcublas_tj_absent.so.99"):
        cublas_ctypes._load()
