"""state.GRAD_OFF: how many threads have grad mode off (#14). While it is 0 the eager fast
paths (a + b, a @ b, x + bias, gate slices, W.T) take grad mode as on without reading the
thread's state, so it must never read 0 while a thread has grad mode off, and grad mode stays
per thread: a no_grad block in one thread changes nothing that another records."""
import threading

import numpy as np
import pytest

import tracejit as tj
from tracejit.tracer.state import GRAD_OFF


def _ops(lib, x, w, b):
    """The LSTM forward's fast-path ops: matmul with W.T, x + bias, a + b, a * b, gate slices."""
    g = x @ w.T + b
    i, f = g[:, :3], g[:, 3:]
    return i * f + i, x[1]


def _inputs(lib, rng_seed=0):
    rng = np.random.default_rng(rng_seed)
    return (lib.tensor(rng.standard_normal((4, 5)).astype(np.float32)),
            lib.tensor(rng.standard_normal((6, 5)).astype(np.float32), requires_grad=True),
            lib.tensor(rng.standard_normal(6).astype(np.float32), requires_grad=True))


def test_every_way_to_turn_grad_off_counts_and_is_counted_out():
    assert GRAD_OFF[0] == 0
    seen = []
    with tj.no_grad():
        seen.append(GRAD_OFF[0])
        with tj.enable_grad():
            seen.append(-GRAD_OFF[0])           # on again in this thread: 0
        with tj.no_grad():
            seen.append(GRAD_OFF[0])            # still one thread off
    with tj.inference_mode():
        seen.append(GRAD_OFF[0])
    tj.set_grad_enabled(False)
    seen.append(GRAD_OFF[0])
    tj.set_grad_enabled(True)

    @tj.no_grad()
    def f():
        seen.append(GRAD_OFF[0])
    f()
    with pytest.raises(KeyError):
        with tj.no_grad():
            raise KeyError("k")
    assert seen == [1, 0, 1, 1, 1, 1]
    assert GRAD_OFF[0] == 0


@pytest.mark.parametrize("off", ["no_grad", "inference_mode", "set_grad_enabled"])
def test_fast_paths_record_nothing_with_grad_off(off):
    x, w, b = _inputs(tj)
    ctx = {"no_grad": tj.no_grad, "inference_mode": tj.inference_mode,
           "set_grad_enabled": lambda: tj.set_grad_enabled(False)}[off]()
    with ctx:
        out, xt = _ops(tj, x, w, b)
        wt = w.T
        s = w[:, 1:3]
    assert out.grad_fn is None and not out.requires_grad
    assert xt.grad_fn is None and wt.grad_fn is None and s.grad_fn is None
    assert GRAD_OFF[0] == 0
    out, _ = _ops(tj, x, w, b)           # and on again: recorded, torch's names
    assert out.grad_fn is not None and out.grad_fn.name() == "AddBackward0"


def test_a_thread_with_grad_off_changes_nothing_another_records():
    """Thread A sits in no_grad (the counter is 1) while thread B runs the fast-path ops and
    backward: B's gradients are torch's; A's ops, run while B's grad mode is on, record none."""
    torch = pytest.importorskip("torch")
    inside, release, done = threading.Event(), threading.Event(), []

    def thread_a():
        with tj.no_grad():
            inside.set()
            release.wait(30)
            x, w, b = _inputs(tj)
            out, _ = _ops(tj, x, w, b)
            done.append(out.grad_fn is None and not out.requires_grad)

    t = threading.Thread(target=thread_a)
    t.start()
    try:
        assert inside.wait(30) and GRAD_OFF[0] == 1
        x, w, b = _inputs(tj)
        out, _ = _ops(tj, x, w, b)
        out.sum().backward()
        tx, tw, tb = _inputs(torch)
        tout, _ = _ops(torch, tx, tw, tb)
        tout.sum().backward()
        np.testing.assert_allclose(out.detach().numpy(), tout.detach().numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(w.grad.numpy(), tw.grad.numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(b.grad.numpy(), tb.grad.numpy(), rtol=1e-5, atol=1e-6)
    finally:
        release.set()
        t.join(30)
    assert done == [True]
    assert GRAD_OFF[0] == 0
