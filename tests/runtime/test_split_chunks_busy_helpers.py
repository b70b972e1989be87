"""A kernel split across threads never waits for a helper that has not started its chunk: the
calling thread runs that chunk itself (a loaded machine schedules helper threads late; with
every helper busy, e.g. running another call's chunks, the call would wait for them)."""
import threading

import numpy as np

import tracejit as tj
from tracejit.runtime import llvm_backend


def test_call_completes_while_every_helper_is_busy(monkeypatch):
    monkeypatch.setenv("TRACEJIT_NUM_THREADS", "2")
    a = np.arange(512 * 1024, dtype=np.float32).reshape(512, 1024) / 1000.0
    f = tj.compile(lambda x: tj.tanh(x) * 2.0 + 1.0)
    assert "split across threads" in f.lower(a).program

    pool = llvm_backend._thread_pool()
    n = pool._max_workers
    release = threading.Event()
    started = threading.Barrier(n + 1)

    def block():
        started.wait(timeout=30)
        release.wait(timeout=20)         # bounded: the old code waited here, not forever
    blockers = [pool.submit(block) for _ in range(n)]
    try:
        started.wait(timeout=30)         # every helper thread is now inside block()
        out = f(a).numpy()
        still_blocked = not any(b.done() for b in blockers)
    finally:
        release.set()
        for b in blockers:
            b.result()
    assert still_blocked                 # the call did not wait for a helper
    np.testing.assert_allclose(out, np.tanh(a) * 2.0 + 1.0, rtol=1e-6, atol=1e-6)


def test_split_kernel_values_with_free_helpers(monkeypatch):
    monkeypatch.setenv("TRACEJIT_NUM_THREADS", "3")
    a = np.linspace(-3, 3, 300 * 1000, dtype=np.float32).reshape(300, 1000)
    f = tj.compile(lambda x: tj.exp(x) - x)
    assert "split across threads" in f.lower(a).program
    for _ in range(20):
        np.testing.assert_allclose(f(a).numpy(), np.exp(a) - a, rtol=1e-6, atol=1e-6)
