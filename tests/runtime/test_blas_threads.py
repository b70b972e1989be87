"""A compiled function's BLAS GEMMs run on TRACEJIT_NUM_THREADS threads (runtime/blas_threads.py),
and the calling thread's own BLAS setting is put back after the call."""
import numpy as np
import pytest

import tracejit as tj
from tracejit.runtime import blas_threads

needs_local = pytest.mark.skipif(blas_threads._get_setter() is None,
                                 reason="this BLAS has no thread-local thread count")


@needs_local
def test_limit_sets_the_thread_local_count_and_returns_the_previous():
    prev = blas_threads.limit(3)
    try:
        assert blas_threads.limit(1) == 3
        assert blas_threads.limit(2) == 1
    finally:
        blas_threads.restore(prev)


@needs_local
def test_compiled_gemm_runs_on_tracejit_threads_and_restores(monkeypatch):
    monkeypatch.setenv("TRACEJIT_NUM_THREADS", "1")
    seen = []
    real = blas_threads.limit
    monkeypatch.setattr(blas_threads, "limit", lambda n: seen.append(n) or real(n))

    @tj.compile
    def f(a, b):
        return tj.tanh(a @ b)

    rng = np.random.default_rng(0)
    a = rng.standard_normal((64, 48)).astype(np.float32)
    b = rng.standard_normal((48, 80)).astype(np.float32)
    before = real(3)                        # this test's own setting for the thread
    try:
        out = f(tj.tensor(a), tj.tensor(b)).numpy()
        assert seen and set(seen) == {1}
        assert real(before) == 3                   # the call put this thread's count back
    finally:
        blas_threads.restore(before)
    np.testing.assert_allclose(out, np.tanh(a @ b), rtol=1e-5, atol=1e-5)
