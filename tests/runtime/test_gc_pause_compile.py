"""Python's cyclic collector is paused while tj.compile traces and compiles (runtime/gc_pause.py):
no full collection in the middle of a cold compile. It is on again afterwards (after a failed
trace too, and only when the last of concurrent compiles ends), stays off when the user had
turned it off, and compiled results are unchanged."""
import gc
import threading

import numpy as np
import pytest

import tracejit as tj
from tracejit.runtime import llvm_backend


@pytest.fixture
def collector_on():
    was = gc.isenabled()
    gc.enable()
    yield
    if not was:
        gc.disable()


def test_paused_while_tracing_and_compiling(collector_on, monkeypatch):
    seen = {}
    real_plan = llvm_backend.make_plan

    def plan(g):
        seen["plan"] = gc.isenabled()
        return real_plan(g)
    monkeypatch.setattr(llvm_backend, "make_plan", plan)

    def f(x, y):
        seen["trace"] = gc.isenabled()
        return tj.tanh(x * 2.0 + y).sum(axis=0) * 0.37

    x = np.linspace(-1, 1, 12, dtype=np.float32).reshape(4, 3)
    y = np.arange(3, dtype=np.float32) * 0.1
    out = tj.compile(f)(x, y)
    assert seen == {"trace": False, "plan": False}
    assert gc.isenabled()
    np.testing.assert_allclose(np.asarray(out), (np.tanh(x * 2 + y).sum(0) * 0.37),
                               rtol=1e-5, atol=1e-6)


def test_back_on_after_a_failed_trace(collector_on):
    def bad(x):
        raise ValueError("user error inside the traced function")

    with pytest.raises(ValueError, match="user error inside"):
        tj.compile(bad)(np.ones(3, np.float32))
    assert gc.isenabled()


def test_left_off_when_the_user_turned_it_off():
    was = gc.isenabled()
    gc.disable()
    try:
        inside = []
        out = tj.compile(lambda x: (inside.append(gc.isenabled()), x + 1.0)[1])(
            np.zeros(2, np.float32))
        np.testing.assert_array_equal(np.asarray(out), [1.0, 1.0])
        assert inside == [False]
        assert not gc.isenabled()
    finally:
        if was:
            gc.enable()


def test_concurrent_compiles_resume_after_the_last(collector_on):
    a_inside, release_a = threading.Event(), threading.Event()
    seen = {}

    def fa(x):
        seen["a"] = gc.isenabled()
        a_inside.set()
        assert release_a.wait(60)
        return x * 3.0

    def fb(x):
        seen["b"] = gc.isenabled()
        return x - 1.0

    res = {}
    ta = threading.Thread(target=lambda: res.setdefault("a", tj.compile(fa)(np.ones(4, np.float32))))
    ta.start()
    try:
        assert a_inside.wait(60)
        res["b"] = tj.compile(fb)(np.ones(4, np.float32))
        assert not gc.isenabled()          # a's compile is still running
    finally:
        release_a.set()
        ta.join(60)
    assert gc.isenabled()
    assert seen == {"a": False, "b": False}
    np.testing.assert_array_equal(np.asarray(res["a"]), np.full(4, 3.0, np.float32))
    np.testing.assert_array_equal(np.asarray(res["b"]), np.zeros(4, np.float32))
