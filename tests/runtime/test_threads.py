"""Compiled functions called from several threads: single-flight compilation, concurrent calls
of one executable, the output-ownership rule, and the garbage collector left alone."""
import gc
import sys
import threading

import numpy as np
import pytest

import tracejit as tj
from tracejit.runtime.llvm_backend import LLVMExecutable

N_THREADS = 8


def run_threads(n, target):
    """Run target(i) in n threads started together; re-raise the first error."""
    errors = []
    barrier = threading.Barrier(n)

    def body(i):
        try:
            barrier.wait(timeout=30)
            target(i)
        except BaseException as e:      # noqa: BLE001 -- reported below, in the test's thread
            errors.append(e)
    threads = [threading.Thread(target=body, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a thread hung"
    if errors:
        raise errors[0]


def test_new_signature_from_eight_threads_compiles_once():
    @tj.compile
    def f(x, w):
        return tj.tanh(x @ w + 1.0).sum(axis=1)

    rng = np.random.default_rng(0)
    xs = [rng.standard_normal((5, 7)).astype(np.float32) for _ in range(N_THREADS)]
    w = rng.standard_normal((7, 3)).astype(np.float32)
    results = [None] * N_THREADS

    def call(i):
        results[i] = f(xs[i], w).numpy()
    run_threads(N_THREADS, call)
    info = f.cache_info()
    assert info.misses == 1 and info.entries == 1
    assert info.hits == N_THREADS - 1
    for x, r in zip(xs, results):
        np.testing.assert_allclose(r, np.tanh(x @ w + 1.0).sum(axis=1), rtol=1e-5, atol=1e-5)


def test_a_failed_compilation_lets_waiting_threads_try_themselves():
    calls = []

    @tj.compile
    def f(x):
        calls.append(1)
        raise ValueError("boom in the user's function")

    outcomes = []

    def call(i):
        with pytest.raises(ValueError, match="boom"):
            f(np.ones(3, np.float32))
        outcomes.append(i)
    run_threads(4, call)
    assert len(outcomes) == 4 and len(calls) >= 1 and f.cache_info().entries == 0


def _pause_in_native_calls(monkeypatch, n):
    """Make every native segment call wait until n calls are inside it at once. If calls of one
    executable were serialized, the barrier could never fill and would raise instead."""
    barrier = threading.Barrier(n)
    real_bind = LLVMExecutable._bind_functions

    def bind(self):
        real_bind(self)
        seg = self.only_seg

        def paused(addr):
            barrier.wait(timeout=20)
            seg(addr)
        self.only_seg = paused
    monkeypatch.setattr(LLVMExecutable, "_bind_functions", bind)


def test_concurrent_calls_of_one_executable_are_not_serialized_and_do_not_mix(monkeypatch):
    _pause_in_native_calls(monkeypatch, 4)

    @tj.compile
    def f(x):
        # a reduction feeding an elementwise kernel: an intermediate buffer between kernels
        return tj.exp(x - x.max(axis=1, keepdims=True)) * 2.0 + x.sum()

    f.lower(np.zeros((6, 33), np.float32))          # compiled once, before the threads
    exe = f.lower(np.zeros((6, 33), np.float32))._entry.exe
    assert exe.only_seg is not None and len(exe.plan.kernels) > 1, "one segment, several kernels"
    rng = np.random.default_rng(1)
    xs = [rng.standard_normal((6, 33)).astype(np.float32) for _ in range(4)]
    results = [None] * 4

    def call(i):
        results[i] = f(xs[i]).numpy()
    run_threads(4, call)
    for x, r in zip(xs, results):
        want = np.exp(x - x.max(axis=1, keepdims=True)) * 2.0 + x.sum()
        np.testing.assert_allclose(r, want, rtol=1e-5, atol=1e-5)


def test_many_threads_many_calls_each_result_correct():
    @tj.compile
    def f(a, b):
        h = a @ b                                    # a matmul step, then a fused epilogue
        return tj.tanh(h) + h.sum(axis=0), (a * a).sum()

    rng = np.random.default_rng(2)
    b = rng.standard_normal((9, 4)).astype(np.float32)
    f(np.zeros((3, 9), np.float32), b)
    bad = []

    def call(i):
        local = np.random.default_rng(100 + i)
        for _ in range(40):
            a = local.standard_normal((3, 9)).astype(np.float32)
            y, s = f(a, b)
            h = a @ b
            if not (np.allclose(y.numpy(), np.tanh(h) + h.sum(axis=0), rtol=1e-4, atol=1e-4)
                    and np.allclose(s.item(), (a * a).sum(), rtol=1e-4)):
                bad.append(i)
    run_threads(N_THREADS, call)
    assert not bad
    assert f.cache_info().misses == 1


@pytest.mark.parametrize("n", [5, (4 << 20) // 4 + 3])      # a small and a pooled output
def test_results_held_by_the_user_are_never_overwritten(n):
    f = tj.compile(lambda x: x * 3.0 + 1.0)
    held = [f(np.full(n, float(i), np.float32)) for i in range(3)]
    views = [h.numpy()[1:] for h in held]
    arrays = [h.numpy() for h in held]
    del held
    for i in range(6):
        f(np.full(n, 100.0 + i, np.float32))
    for i, (a, v) in enumerate(zip(arrays, views)):
        assert a[0] == a[-1] == 3.0 * i + 1.0
        assert v[0] == 3.0 * i + 1.0


def test_ownership_does_not_depend_on_reference_counts(monkeypatch):
    """CPython 3.14 lends borrowed references to locals, so sys.getrefcount reports one fewer
    than 3.11 does. Simulate that: a result the user holds must still not be reused."""
    real = sys.getrefcount
    # - 2: one for the borrowed reference, one for this lambda's own argument
    monkeypatch.setattr(sys, "getrefcount", lambda o: real(o) - 2)
    f = tj.compile(lambda x: x + 1.0)
    first = f(np.zeros(4, np.float32))
    second = f(np.ones(4, np.float32))
    assert first.tolist() == [1.0] * 4 and second.tolist() == [2.0] * 4


def test_compilation_leaves_the_garbage_collector_on():
    # paused while tracing and compiling (runtime/gc_pause.py), on again once the last
    # concurrent compile has finished
    seen = []

    def body(x):
        seen.append(gc.isenabled())
        return x * 2.0

    f = tj.compile(body)
    f(np.ones(3, np.float32))
    g = tj.compile(tj.grad(lambda x: (body(x) ** 2).sum()))

    def call(i):
        g(np.full(3, float(i), np.float32))
        seen.append(gc.isenabled())
    run_threads(4, call)
    inside = seen[:2]                   # the traces of f and of g
    assert inside == [False, False] and all(seen[2:]) and len(seen) == 6 and gc.isenabled()


def test_different_signatures_compile_concurrently_and_correctly():
    """Eight threads compile eight signatures at once (llvmlite serializes its LLVM calls)."""
    @tj.compile
    def f(x):
        return tj.log(tj.exp(x) + 1.0) * x.sum(axis=-1, keepdims=True)

    xs = [np.linspace(-1, 1, 3 * (i + 2)).astype(np.float32).reshape(3, i + 2)
          for i in range(N_THREADS)]
    results = [None] * N_THREADS

    def call(i):
        results[i] = f(xs[i]).numpy()
    run_threads(N_THREADS, call)
    assert f.cache_info().misses == N_THREADS
    for x, r in zip(xs, results):
        np.testing.assert_allclose(r, np.log(np.exp(x) + 1.0) * x.sum(-1, keepdims=True),
                                   rtol=1e-5, atol=1e-6)


def test_backward_through_a_compiled_function_from_threads():
    @tj.compile
    def f(x, w):
        return (tj.tanh(x @ w) ** 2).sum()

    rng = np.random.default_rng(3)
    w0 = rng.standard_normal((5, 3)).astype(np.float32)
    xs = [rng.standard_normal((4, 5)).astype(np.float32) for _ in range(N_THREADS)]
    grads = [None] * N_THREADS

    def call(i):
        w = tj.tensor(w0, requires_grad=True)
        f(xs[i], w).backward()
        grads[i] = w.grad.numpy()
    run_threads(N_THREADS, call)
    for x, g in zip(xs, grads):
        t = np.tanh(x @ w0)
        np.testing.assert_allclose(g, x.T @ (2 * t * (1 - t * t)), rtol=1e-4, atol=1e-5)
    assert f.cache_info().misses == 1
