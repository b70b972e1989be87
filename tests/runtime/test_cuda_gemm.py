"""Direct cuBLAS GEMMs (tracejit/runtime/cuda_gemm.py): the call plumbing (transpose flags,
leading dimensions, batch strides, data and compute types) checked against NumPy through a
strict host emulation of cublasGemmEx / cublasGemmStridedBatchedEx that reads operands from raw
pointers in cuBLAS's column-major convention, and on a real GPU (`gpu` marker) for float32,
float16 and bfloat16 (tensor cores, float32 accumulation)."""
import ctypes

import numpy as np
import pytest

import tracejit as tj
from tracejit.ir.dtypes import bf16
from tracejit.runtime import cuda_gemm

BF16 = np.dtype(bf16.np)
NP_OF = {cuda_gemm.CUDA_R_32F: np.dtype(np.float32), cuda_gemm.CUDA_R_16F: np.dtype(np.float16),
         cuda_gemm.CUDA_R_16BF: BF16}


class _Data:
    def __init__(self, ptr):
        self.ptr = ptr


class HostArray:
    """The slice of CuPy's ndarray that cuda_gemm uses, over a NumPy array (views share memory)."""

    def __init__(self, a):
        self.a = a

    shape = property(lambda self: self.a.shape)
    strides = property(lambda self: self.a.strides)
    itemsize = property(lambda self: self.a.itemsize)
    dtype = property(lambda self: self.a.dtype)
    ndim = property(lambda self: self.a.ndim)
    data = property(lambda self: _Data(self.a.__array_interface__["data"][0]))

    def reshape(self, shape):
        return HostArray(self.a.reshape(shape))

    def __setitem__(self, key, value):
        self.a[key] = value


class FakeCupy:
    copies = 0

    @classmethod
    def ascontiguousarray(cls, x):
        cls.copies += 1
        return HostArray(np.ascontiguousarray(x.a))


def _colmajor(ptr, dtype, rows, cols, ld):
    """The column-major matrix cuBLAS reads at ptr (rows x cols, leading dimension ld)."""
    assert ld >= max(1, rows), (ld, rows)
    n = ld * (cols - 1) + rows
    buf = (ctypes.c_byte * (n * dtype.itemsize)).from_address(ptr)
    flat = np.frombuffer(buf, dtype=dtype, count=n)
    return np.lib.stride_tricks.as_strided(flat, (rows, cols), (dtype.itemsize, ld * dtype.itemsize))


class FakeCublas:
    """Strict host emulation: every argument checked, results written through the pointer."""

    def __init__(self):
        self.calls = []

    def setPointerMode(self, handle, mode):
        assert mode == cuda_gemm.CUBLAS_POINTER_MODE_HOST

    def _one(self, ta, tb, m, n, k, alpha, A, at, lda, B, bt, ldb, beta, C, ct, ldc, compute):
        assert compute == cuda_gemm.CUBLAS_COMPUTE_32F and at == bt == ct
        dt = NP_OF[at]
        f32 = lambda p: np.frombuffer((ctypes.c_float * 1).from_address(p), np.float32)[0]  # noqa
        a = _colmajor(A, dt, *((m, k) if ta == 0 else (k, m)), lda).astype(np.float64)
        b = _colmajor(B, dt, *((k, n) if tb == 0 else (n, k)), ldb).astype(np.float64)
        a, b = (a if ta == 0 else a.T), (b if tb == 0 else b.T)
        c = _colmajor(C, dt, m, n, ldc)
        # float32 accumulation, one rounding to the output type
        c[...] = (f32(alpha) * (a.astype(np.float32) @ b.astype(np.float32))
                  + f32(beta) * 0).astype(dt)

    def gemmEx(self, handle, ta, tb, m, n, k, alpha, A, at, lda, B, bt, ldb, beta, C, ct, ldc,
               compute, algo):
        self.calls.append(("gemmEx", ta, tb, m, n, k))
        self._one(ta, tb, m, n, k, alpha, A, at, lda, B, bt, ldb, beta, C, ct, ldc, compute)

    def gemmStridedBatchedEx(self, handle, ta, tb, m, n, k, alpha, A, at, lda, sa, B, bt, ldb,
                             sb, beta, C, ct, ldc, sc, count, compute, algo):
        self.calls.append(("batched", ta, tb, m, n, k, count, sa, sb))
        item = NP_OF[at].itemsize
        for i in range(count):
            self._one(ta, tb, m, n, k, alpha, A + i * sa * item, at, lda, B + i * sb * item, bt,
                      ldb, beta, C + i * sc * item, ct, ldc, compute)


@pytest.fixture
def blas(monkeypatch):
    fake = FakeCublas()
    monkeypatch.setattr(cuda_gemm, "cublas_binding", lambda: fake)
    monkeypatch.setattr(cuda_gemm, "cublas_handle", lambda cp: 1)
    FakeCupy.copies = 0
    return fake


def _operands(rng, batch, m, k, n, ta, tb, dtype, bcast_b=False):
    def make(shape, transposed):
        x = rng.standard_normal(shape).astype(np.float32).astype(dtype)
        return np.swapaxes(np.ascontiguousarray(np.swapaxes(x, -1, -2)), -1, -2) if transposed else x
    a = make(batch + (m, k), ta)
    b = make((k, n) if bcast_b else batch + (k, n), tb)
    if bcast_b:
        b = np.broadcast_to(b, batch + (k, n))
    return a, b


@pytest.mark.parametrize("dtype", [np.float32, np.float16, BF16])
@pytest.mark.parametrize("ta,tb", [(False, False), (True, False), (False, True), (True, True)])
@pytest.mark.parametrize("batch,m,k,n", [((), 5, 7, 3), ((), 1, 1, 1), ((3,), 4, 6, 2),
                                         ((2, 3), 2, 5, 4), ((), 0, 3, 2), ((2,), 3, 0, 2)])
def test_gemm_views_match_numpy(blas, dtype, ta, tb, batch, m, k, n):
    rng = np.random.default_rng(0)
    a, b = _operands(rng, batch, m, k, n, ta, tb, dtype)
    out = np.full(batch + (m, n), np.nan, dtype)
    cuda_gemm.gemm(FakeCupy, HostArray(a), HostArray(b), HostArray(out))
    want = (a.astype(np.float32) @ b.astype(np.float32)).astype(dtype)
    tol = 1e-5 if dtype == np.float32 else 2e-2
    np.testing.assert_allclose(out.astype(np.float32), want.astype(np.float32), rtol=tol, atol=tol)
    assert FakeCupy.copies == 0                      # transposed views go as flags, not copies
    if m * n * int(np.prod(batch)) and k:
        assert len(blas.calls) == 1
        assert blas.calls[0][0] == ("gemmEx" if int(np.prod(batch)) == 1 else "batched")
        if min(m, k, n) > 1:                          # 1-wide matrices read either way
            assert blas.calls[0][1:3] == (int(tb), int(ta))   # C^T = B^T A^T: b's flag first


def test_broadcast_weight_is_batch_stride_zero(blas):
    rng = np.random.default_rng(1)
    a, b = _operands(rng, (4,), 3, 5, 2, False, True, np.float32, bcast_b=True)
    out = np.empty((4, 3, 2), np.float32)
    cuda_gemm.gemm(FakeCupy, HostArray(a), HostArray(b), HostArray(out))
    np.testing.assert_allclose(out, a @ b, rtol=1e-5)
    assert FakeCupy.copies == 0 and blas.calls[0][7] == 0     # the weight: stride 0


def test_view_cublas_cannot_describe_is_copied_once(blas):
    """Rows broadcast with stride 0 have no leading dimension: that operand is copied."""
    rng = np.random.default_rng(2)
    a = np.broadcast_to(rng.standard_normal((1, 4)).astype(np.float32), (3, 4))
    b = rng.standard_normal((4, 2)).astype(np.float32)
    out = np.empty((3, 2), np.float32)
    cuda_gemm.gemm(FakeCupy, HostArray(a), HostArray(b), HostArray(out))
    np.testing.assert_allclose(out, a @ b, rtol=1e-5)
    assert FakeCupy.copies == 1


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("ta,tb,batch", [(False, True, ()), (True, False, ()), (False, False, (3,)),
                                         (True, True, (2, 2))])
def test_gemm_on_the_gpu_matches_numpy(dtype, ta, tb, batch):
    cp = pytest.importorskip("cupy")
    if cp.cuda.runtime.getDeviceCount() == 0:
        pytest.skip("no GPU")
    dt = BF16 if dtype == "bfloat16" else np.dtype(dtype)
    rng = np.random.default_rng(3)
    a, b = _operands(rng, batch, 64, 96, 48, ta, tb, dt)
    da = cp.asarray(np.ascontiguousarray(a))
    db = cp.asarray(np.ascontiguousarray(b))
    if ta:
        da = cp.swapaxes(cp.ascontiguousarray(cp.swapaxes(da, -1, -2)), -1, -2)
    if tb:
        db = cp.swapaxes(cp.ascontiguousarray(cp.swapaxes(db, -1, -2)), -1, -2)
    out = cp.empty(batch + (64, 48), dt)
    cuda_gemm.gemm(cp, da, db, out)
    want = a.astype(np.float64) @ b.astype(np.float64)
    tol = 1e-4 if dtype == "float32" else 2e-2
    np.testing.assert_allclose(cp.asnumpy(out).astype(np.float64), want, rtol=tol, atol=tol * 10)


def test_cuda_backend_keeps_16bit_matmuls_for_tensor_cores():
    """bfloat16 and float16 matmuls reach the CUDA backend's GEMM step in their own dtype (they
    used to be widened to float32 GEMMs for bfloat16)."""
    from tracejit.ir.core import Aval, Graph
    from tracejit.ir.primitives import matmul
    from tracejit.runtime.cuda_backend import prepare
    for dt in (bf16, np.float16):
        from tracejit.ir.dtypes import as_dtype
        d = bf16 if dt is bf16 else as_dtype(np.float16)
        g = Graph("half")
        a, b = g.add_input(Aval((4, 8), d)), g.add_input(Aval((8, 2), d))
        g.outputs = [matmul(a, b)]
        mm = [i for i in prepare(g).instrs if i.prim.name == "matmul"]
        assert len(mm) == 1 and mm[0].out.dtype is d and all(v.dtype is d for v in mm[0].inputs)


def test_matmul_step_dispatch(blas):
    """float32/16-bit go to cuBLAS directly; float64 stays with cupy.matmul."""
    calls = []

    class Cp(FakeCupy):
        @staticmethod
        def matmul(a, b, out=None):
            calls.append("cupy.matmul")
            out.a[...] = a.a @ b.a
    rng = np.random.default_rng(4)
    for dt in (np.float32, np.float64):
        a, b = (rng.standard_normal(s).astype(dt) for s in ((3, 4), (4, 5)))
        out = np.empty((3, 5), dt)
        cuda_gemm.matmul(Cp, HostArray(a), HostArray(b), HostArray(out))
        np.testing.assert_allclose(out, a @ b, rtol=1e-5)
    assert len(blas.calls) == 1 and calls == ["cupy.matmul"]


# -- end to end on a real GPU: folded GEMMs, operand views and tensor-core 16-bit GEMMs ----------
@pytest.mark.gpu
@pytest.mark.skipif(not tj.cuda_available(), reason="needs an NVIDIA GPU and CuPy")
@pytest.mark.parametrize("autocast", [False, True])
@pytest.mark.parametrize("shape", [(4, 16, 32, 24), (2, 1, 8, 1), (3, 5, 1, 7)])
def test_linear_training_grads_on_gpu(shape, autocast):
    bsz, t, c, d = shape
    rng = np.random.default_rng(6)
    x = rng.standard_normal((bsz, t, c)).astype(np.float32)
    w = (rng.standard_normal((d, c)) * 0.3).astype(np.float32)
    w2 = (rng.standard_normal((c, d)) * 0.3).astype(np.float32)

    def loss(x, w, w2):
        if autocast:
            with tj.autocast("cuda", dtype=tj.bfloat16):
                y = tj.tanh(x @ w.T) @ w2.T
        else:
            y = tj.tanh(x @ w.T) @ w2.T
        return (y.float() * x).sum()
    g = tj.grad(tj.compile(loss), argnums=(0, 1, 2))
    got = g(*(tj.tensor(a, device="cuda") for a in (x, w, w2)))
    x64, w64, w264 = (a.astype(np.float64) for a in (x, w, w2))
    h = np.tanh(x64 @ w64.T)
    gu = (x64 @ w264) * (1 - h * h)                # d loss / d (x @ w.T)
    want = (gu @ w64 + h @ w264.T, np.einsum("btd,btc->dc", gu, x64),
            np.einsum("btc,btd->cd", x64, h))
    tol = 3e-2 if autocast else 1e-4
    for a, b in zip(got, want):
        np.testing.assert_allclose(a.to("cpu").numpy().astype(np.float64), b, rtol=tol,
                                   atol=tol * max(1.0, float(np.abs(b).max())))
