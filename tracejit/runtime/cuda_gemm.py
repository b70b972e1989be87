"""GEMMs on the GPU as direct cuBLAS calls (CuPy's bindings, cupy_backends.cuda.libs.cublas):
`cublasGemmEx` / `cublasGemmStridedBatchedEx` with compute type 32F, so float16 and bfloat16
matmuls run on tensor cores with float32 accumulation and one rounding of the result (the
interpreter's rule), and float32 ones in full float32 (not TF32).

Operands arrive as views (fusion leaves transposes of the last two axes, batch broadcasts and
reshapes of contiguous buffers to the GEMM): a row-major view is a column-major matrix with
the opposite transpose flag, a broadcast batch is batch stride 0, so no operand is copied. Only
a view cuBLAS cannot describe (a batch that is not one uniform stride) is made contiguous
first. float64 and integer matmuls stay with `cupy.matmul`.

cuBLAS is column-major: C = A @ B (row-major, [M, K] @ [K, N]) is computed as
C^T = B^T @ A^T, with m = N, n = M, and C^T's leading dimension N."""
from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np

from ..ir.dtypes import bf16

CUDA_R_32F, CUDA_R_16F, CUDA_R_16BF = 0, 2, 14
CUBLAS_COMPUTE_32F = 68
CUBLAS_GEMM_DEFAULT = -1
CUBLAS_OP_N, CUBLAS_OP_T = 0, 1
CUBLAS_POINTER_MODE_HOST = 0
DATA_TYPES = {np.dtype(np.float32): CUDA_R_32F, np.dtype(np.float16): CUDA_R_16F,
              np.dtype(bf16.np): CUDA_R_16BF}
_ONE = np.ones(1, np.float32)        # alpha and beta live on the host (pointer mode host)
_ZERO = np.zeros(1, np.float32)


def cublas_binding() -> Any:
    """CuPy's cuBLAS module (a seam: tests put a strict host emulation here). Not usable while
    a stream captures: CuPy's setStream raises then, and its gemmEx calls setStream."""
    from cupy_backends.cuda.libs import cublas
    return cublas


def graph_binding() -> Any:
    """The cuBLAS calls of the CUDA-graph path: the library itself through ctypes
    (runtime/cublas_ctypes.py), with setWorkspace and no capture check (a seam too)."""
    from . import cublas_ctypes
    return cublas_ctypes.binding()


def cublas_handle(cp: Any) -> int:
    """CuPy's cuBLAS handle of the current device, set to the current stream: the handle is
    shared, CuPy sets its stream only for its own calls, and a GEMM left on another stream
    would race with the kernels around it (a non-blocking stream does not wait for it)."""
    handle = cp.cuda.device.get_cublas_handle()
    cublas_binding().setStream(handle, cp.cuda.get_current_stream().ptr)
    return handle


def supported(dtype) -> bool:
    return np.dtype(dtype) in DATA_TYPES


def _matrix(x: Any) -> tuple[int, int] | None:
    """(transpose flag, leading dimension) of the last two axes of x as cuBLAS sees the
    column-major reading of its memory, or None when neither axis is unit-stride."""
    r, c = x.shape[-2:]
    item = x.itemsize
    sr, sc = (s // item for s in x.strides[-2:])
    if sc == 1 or c == 1:          # row-major: memory holds x^T column-major, ld = row stride
        ld = sr if r > 1 else max(c, 1)
        if ld >= max(c, 1):
            return CUBLAS_OP_N, ld
    if sr == 1 or r == 1:          # column-major (a transposed view): memory holds x, ld = sc
        ld = sc if c > 1 else max(r, 1)
        if ld >= max(r, 1):
            return CUBLAS_OP_T, ld
    return None                    # e.g. rows broadcast with stride 0


def _batch_stride(x: Any, batch: tuple[int, ...]) -> int | None:
    """The one element stride between consecutive flattened batch entries of x, or None."""
    n = math.prod(batch)
    if n <= 1:
        return 0
    item = x.itemsize
    strides = [s // item for s in x.strides[:-2]]
    offsets = np.zeros(1, np.int64)
    for d, s in zip(batch, strides):
        offsets = (offsets[:, None] + np.arange(d, dtype=np.int64)[None, :] * s).reshape(-1)
    step = int(offsets[1] - offsets[0])
    return step if np.array_equal(offsets, np.arange(n, dtype=np.int64) * step) else None


def _operand(cp: Any, x: Any, batch: tuple[int, ...]) -> tuple[Any, int, int, int]:
    """(array, transpose flag, leading dimension, batch stride) of a GEMM operand, copying
    only a view cuBLAS cannot describe."""
    if x.ndim - 2 < len(batch):
        x = x.reshape((1,) * (len(batch) + 2 - x.ndim) + tuple(x.shape))
    mat, bs = _matrix(x), _batch_stride(x, batch)
    if mat is None or bs is None:
        x = cp.ascontiguousarray(x)
        mat, bs = _matrix(x), _batch_stride(x, batch)
    return x, mat[0], mat[1], bs


def capture_problem(a: Any, b: Any, out: Any) -> str | None:
    """Why this GEMM cannot be recorded into a CUDA graph (None when it can): only the direct
    cuBLAS path is free of CuPy calls that refuse stream capture (cupy.matmul). Operands
    cuBLAS cannot take as views (`takes_view`) must be made contiguous before the capture."""
    if not (supported(out.dtype) and a.dtype == b.dtype == out.dtype):
        return f"a {np.dtype(out.dtype).name} matmul runs through cupy.matmul"
    return None


def takes_view(x: Any, out: Any) -> bool:
    """Whether cuBLAS reads operand x of a GEMM into `out` as it is (else gemm copies it)."""
    batch = tuple(out.shape[:-2])
    if x.ndim - 2 < len(batch):
        x = x.reshape((1,) * (len(batch) + 2 - x.ndim) + tuple(x.shape))
    return _matrix(x) is not None and _batch_stride(x, batch) is not None


def graph_handle(cp: Any, workspace: Any) -> int:
    """A cuBLAS handle of our own for recording GEMMs into CUDA graphs, with `workspace` (a
    device buffer its owner keeps alive) as its workspace: created outside any capture, so
    that cuBLAS allocates nothing while a graph records (CuPy's shared handle may be set to
    another workspace and stream by other code at any time)."""
    blas = graph_binding()
    handle = blas.create()
    try:
        blas.setWorkspace(handle, workspace.data.ptr, workspace.nbytes)
    except BaseException:
        blas.destroy(handle)
        raise
    return handle


def destroy_handle(handle: int) -> None:
    graph_binding().destroy(handle)


def set_stream(handle: int, stream_ptr: int, workspace: Any = None) -> None:
    """Set a handle's stream. cublasSetStream resets the handle's workspace to cuBLAS's own
    pool (cuBLAS documents it), so a graph_handle's `workspace` is set again after it."""
    blas = graph_binding()
    blas.setStream(handle, stream_ptr)
    if workspace is not None:
        blas.setWorkspace(handle, workspace.data.ptr, workspace.nbytes)


def gemm(cp: Any, a: Any, b: Any, out: Any, handle: int | None = None) -> None:
    """out[..., M, N] = a[..., M, K] @ b[..., K, N] on the current device and stream; `out`
    is contiguous, a and b are views of one dtype that cuBLAS takes (see `supported`).
    `handle`: a handle of the caller's (graph_handle), already set to its stream, called
    through graph_binding (CuPy's binding refuses calls while a stream captures)."""
    m, k = a.shape[-2:]
    n = b.shape[-1]
    batch = tuple(out.shape[:-2])
    count = math.prod(batch)
    if m == 0 or n == 0 or count == 0:
        return
    if k == 0:
        out[...] = 0
        return
    if handle is None:
        blas = cublas_binding()
        handle = cublas_handle(cp)
    else:
        blas = graph_binding()
    dtype = DATA_TYPES[np.dtype(out.dtype)]
    a, op_a, lda, sa = _operand(cp, a, batch)
    b, op_b, ldb, sb = _operand(cp, b, batch)
    blas.setPointerMode(handle, CUBLAS_POINTER_MODE_HOST)
    # column-major: C^T[N, M] = op(B^T)[N, K] @ op(A^T)[K, M]
    if count == 1:
        blas.gemmEx(handle, op_b, op_a, n, m, k, _ONE.ctypes.data,
                    b.data.ptr, dtype, ldb, a.data.ptr, dtype, lda,
                    _ZERO.ctypes.data, out.data.ptr, dtype, n,
                    CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT)
    else:
        blas.gemmStridedBatchedEx(handle, op_b, op_a, n, m, k, _ONE.ctypes.data,
                                  b.data.ptr, dtype, ldb, sb, a.data.ptr, dtype, lda, sa,
                                  _ZERO.ctypes.data, out.data.ptr, dtype, n, m * n, count,
                                  CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT)


_warned = False


def matmul(cp: Any, a: Any, b: Any, out: Any) -> None:
    """A matmul step of the CUDA backend: cuBLAS directly for float32/float16/bfloat16, else
    (or if CuPy's cuBLAS bindings fail here, with one warning) `cupy.matmul`."""
    global _warned
    if supported(out.dtype) and a.dtype == b.dtype == out.dtype:
        try:
            gemm(cp, a, b, out)
            return
        except Exception as e:          # an older CuPy without these bindings
            if not _warned:
                _warned = True
                warnings.warn(f"tracejit: direct cuBLAS GEMM unavailable ({type(e).__name__}: "
                              f"{e}); using cupy.matmul", RuntimeWarning, stacklevel=2)
    if np.dtype(out.dtype) == np.dtype(bf16.np):     # accumulate in float32, round once
        out[...] = cp.matmul(a.astype(np.float32), b.astype(np.float32)).astype(out.dtype)
    else:
        cp.matmul(a, b, out=out)
