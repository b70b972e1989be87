"""TRACEJIT_PROFILE (tracejit/runtime/profiler.py): the per-kernel table's bookkeeping, and that
a compiled function built with the variable set records its kernels and extern calls."""
import numpy as np

import tracejit as tj
from tracejit.runtime import profiler


def test_table_accumulates_and_sorts():
    profiler.reset()
    profiler.record(("f", "k0", "loop", "8x8", "add,mul"), 0.001)
    profiler.record(("f", "k0", "loop", "8x8", "add,mul"), 0.003)
    profiler.record(("f", "k1", "matmul", "8x4", "matmul"), 0.010)
    es = profiler.entries()
    assert [(e.kernel, e.calls) for e in es] == [("k1", 1), ("k0", 2)]
    assert abs(es[1].seconds - 0.004) < 1e-12 and es[1].median == 0.002
    profiler.record(("f", "k0", "loop", "8x8", "add,mul"), 0.500)     # an interrupted call
    text = profiler.table()
    # k0's median call is 3 ms (of 1, 3, 500): 3 calls x 3 ms against k1's 10 ms
    assert "| f:k1 | matmul | 8x4 | matmul | 1 | 10000.0 | 10.00 | 52.6% |" in text
    assert "| f:k0 | loop | 8x8 | add,mul | 3 | 3000.0 | 504.00 | 47.4% |" in text
    profiler.reset()
    assert profiler.entries() == []


def test_enabled_reads_the_environment(monkeypatch):
    monkeypatch.delenv("TRACEJIT_PROFILE", raising=False)
    assert not profiler.enabled()
    monkeypatch.setenv("TRACEJIT_PROFILE", "1")
    assert profiler.enabled()
    monkeypatch.setenv("TRACEJIT_PROFILE", "0")
    assert not profiler.enabled()


def test_profiled_cuda_launch_keys(fake_gpu, monkeypatch):
    """The CUDA backend names every launch (kernels and the cuBLAS GEMM) for the table."""
    monkeypatch.setenv("TRACEJIT_PROFILE", "1")
    f = tj.compile(lambda x, w: tj.tanh(x @ w).sum())
    exe = f.lower(tj.ones((4, 8), device="cuda"), tj.ones((8, 3), device="cuda"))._entry.exe
    kinds = [k[2] for k in exe._prof_keys]
    assert "matmul" in kinds and len(kinds) == len(exe.program.launches)
    assert all(k[0] and k[1] for k in exe._prof_keys)


def test_unprofiled_cuda_executable_has_no_keys(fake_gpu, monkeypatch):
    monkeypatch.delenv("TRACEJIT_PROFILE", raising=False)
    f = tj.compile(lambda x: x * 2)
    assert f.lower(tj.ones(4, device="cuda"))._entry.exe._prof_keys is None


def test_profiled_llvm_step_times_every_kernel(monkeypatch):
    """Built with TRACEJIT_PROFILE=1, each kernel and each BLAS call is a timed step of its
    own; results are unchanged."""
    monkeypatch.setenv("TRACEJIT_PROFILE", "1")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((16, 8)).astype(np.float32)
    w = rng.standard_normal((8, 4)).astype(np.float32)

    def f(x, w):
        h = tj.tanh(x @ w)
        return (h * h).sum(), h.exp().sum(axis=0)
    g = tj.compile(f)
    profiler.reset()
    a, b = g(x, w)
    h = np.tanh(x.astype(np.float64) @ w)
    np.testing.assert_allclose(a.item(), (h * h).sum(), rtol=1e-4)
    np.testing.assert_allclose(b.numpy(), np.exp(h).sum(0), rtol=1e-4)
    n_kernels = len(g.lower(x, w).kernels.splitlines())
    es = profiler.entries()
    assert len(es) == n_kernels and all(e.calls == 1 for e in es)
    assert "matmul" in {e.kind for e in es}
    g(x, w)
    assert all(e.calls == 2 for e in profiler.entries())
    profiler.reset()
