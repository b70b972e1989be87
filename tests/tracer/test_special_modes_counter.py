"""state.SPECIAL_MODES: how many traces, forward-AD levels, checkpoint recomputations, read
recordings and autocast regions are open over all threads (#14). While it is 0 the eager fast
paths skip their thread-local reads, so it must never read 0 while one is open, and modes stay
per thread: an op in one thread takes the mode another thread has open into account only as
a reason to read its own state."""
import threading

import numpy as np
import pytest

import tracejit as tj
from tracejit.tracer.state import SPECIAL_MODES
import tracejit.autograd.forward_ad as fwAD


def test_every_mode_counts_while_open_and_not_after():
    assert SPECIAL_MODES[0] == 0
    seen = []

    @tj.compile
    def f(x):
        seen.append(SPECIAL_MODES[0])
        return tj.tanh(x) * 2.0

    f(tj.tensor(np.ones(3, np.float32)))
    with fwAD.dual_level():
        seen.append(SPECIAL_MODES[0])
    with tj.autocast("cpu"):
        seen.append(SPECIAL_MODES[0])
    x = tj.tensor(np.ones(3), requires_grad=True)

    def block(t):
        seen.append(SPECIAL_MODES[0])
        return tj.sin(t) * t
    tj.checkpoint(block, x, use_reentrant=False).sum().backward()
    assert all(n >= 1 for n in seen) and len(seen) >= 4, seen
    assert SPECIAL_MODES[0] == 0


def test_a_mode_left_by_an_exception_is_counted_out():
    @tj.compile
    def bad(x):
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        bad(tj.tensor(np.ones(2)))
    with pytest.raises(KeyError):
        with fwAD.dual_level():
            raise KeyError("k")
    with pytest.raises(KeyError):
        with tj.autocast("cpu"):
            raise KeyError("k")
    assert SPECIAL_MODES[0] == 0


def test_eager_ops_in_one_thread_while_another_traces():
    """Thread A is inside a trace (the counter is 1) while thread B runs eager ops: B's ops
    record their nodes and give their values (its own state has no trace), and A's trace
    still traces its ops."""
    inside, release = threading.Event(), threading.Event()
    result = {}

    @tj.compile
    def f(x):
        inside.set()
        release.wait(30)
        return (x * x).sum()

    def a():
        result["a"] = f(tj.tensor(np.array([1.0, 2.0, 3.0]))).item()

    t = threading.Thread(target=a)
    t.start()
    assert inside.wait(30)
    try:
        assert SPECIAL_MODES[0] >= 1
        w = tj.tensor(np.array([0.5, -1.0]), requires_grad=True)
        y = tj.tanh(w * w + 1.0)[:1]
        assert y.grad_fn is not None and not y._traced
        y.sum().backward()
        v = np.array([0.5, -1.0])
        np.testing.assert_allclose(w.grad.numpy(),
                                   [(1 - np.tanh(v[0] ** 2 + 1) ** 2) * 2 * v[0], 0.0])
    finally:
        release.set()
        t.join(30)
    assert result["a"] == 14.0
    assert SPECIAL_MODES[0] == 0
