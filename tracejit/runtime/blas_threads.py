"""The BLAS calls of compiled CPU code run on tracejit's thread count (TRACEJIT_NUM_THREADS).

A compiled function's GEMMs are NumPy matmuls, so OpenBLAS ran them on its own thread count
(every core unless OPENBLAS_NUM_THREADS was set), whatever TRACEJIT_NUM_THREADS said. With
TRACEJIT_NUM_THREADS=1 on a loaded machine its extra threads spun waiting for each other: a
conv2d forward+backward took 6-30x the CPU time of the same GEMMs on one thread. OpenBLAS
(0.3.27 on) has a thread-local thread count, `openblas_set_num_threads_local`, which returns
the previous one: `limit(n)` sets it for the calling thread only, and `restore` puts it back
after the call, so user code's own NumPy calls keep OpenBLAS's setting.

Other BLAS builds (MKL, Accelerate, an older OpenBLAS) lack the symbol: `limit` is then a
no-op and the environment's settings (OPENBLAS_NUM_THREADS, MKL_NUM_THREADS) decide.
"""
from __future__ import annotations

import ctypes
import glob
import os
import threading

import numpy as np

_UNSET = object()
_setter = _UNSET
_lock = threading.Lock()


def _candidates() -> list[str]:
    """OpenBLAS shared libraries NumPy may use: the wheel's bundled copy first, then any
    OpenBLAS this process has loaded (a distribution's NumPy linked to the system's)."""
    root = os.path.dirname(np.__file__)
    paths = sorted(glob.glob(os.path.join(root, "..", "numpy.libs", "*openblas*")) +
                   glob.glob(os.path.join(root, ".dylibs", "*openblas*")))
    try:
        with open("/proc/self/maps") as f:
            for ln in f:
                p = ln.split()[-1] if len(ln.split()) >= 6 else ""
                if p.startswith("/") and "openblas" in os.path.basename(p).lower() \
                        and p not in paths:
                    paths.append(p)
    except OSError:
        pass
    return paths


def _find_setter():
    for path in _candidates():
        try:
            lib = ctypes.CDLL(path)
            fn = lib.openblas_set_num_threads_local
        except (OSError, AttributeError):
            continue
        fn.restype, fn.argtypes = ctypes.c_int, [ctypes.c_int]
        return fn
    return None


def _get_setter():
    global _setter
    if _setter is _UNSET:
        with _lock:
            if _setter is _UNSET:
                _setter = _find_setter()
    return _setter


def limit(n: int) -> int | None:
    """Run this thread's BLAS calls on n threads; the previous count (for `restore`), or None
    when the BLAS has no thread-local setting."""
    fn = _get_setter()
    return None if fn is None else fn(max(int(n), 1))


def restore(prev: int | None) -> None:
    """Undo `limit` (a no-op for None)."""
    if prev is not None:
        _setter(prev)
