"""In-place updates of captured tensors inside a compiled function (an optimizer step, a step
counter, a running statistic) are stored into those tensors after every call, as eagerly."""
import numpy as np
import pytest

import tracejit as tj
from conftest import assert_close


def test_counter_and_update_are_stored_after_each_call():
    step = tj.zeros(())
    w = tj.ones(3)

    @tj.compile
    def f(g):
        step.add_(1)
        w.sub_(0.5 * g * step)           # reads the step's new value
        return w * 2                     # and the parameter's new value

    g = np.ones(3, np.float32)
    want_w = np.ones(3, np.float32)
    for k in range(1, 4):
        out = f(g)
        want_w = want_w - 0.5 * k
        assert_close(step, np.float32(k))
        assert_close(w, want_w)
        assert_close(out, 2 * want_w)
    assert f.cache_info().misses == 1
    with tj.no_grad():
        f(g)                             # the cached fast path stores them too
    assert_close(step, np.float32(4))


def test_compiled_sgd_step_matches_the_eager_loop():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 3)).astype(np.float32)
    y = rng.standard_normal(8).astype(np.float32)
    w0 = rng.standard_normal(3).astype(np.float32)

    def loss(w):
        return ((tj.tensor(x) @ w - tj.tensor(y)) ** 2).mean()

    w_eager = tj.tensor(w0, requires_grad=True)
    for _ in range(5):
        w_eager.grad = None
        loss(w_eager).backward()
        with tj.no_grad():
            w_eager.sub_(0.1 * w_eager.grad)

    w = tj.tensor(w0)

    @tj.compile
    def step(lr):
        gw = tj.grad(loss)(w)
        with tj.no_grad():
            w.sub_(lr * gw)
        return loss(w)

    for _ in range(5):
        step(0.1)
    assert_close(w, w_eager, rtol=1e-5)
    assert step.cache_info().misses == 1


def test_update_with_a_cast_to_the_capture_dtype():
    acc = tj.zeros(2, dtype=tj.float32)
    f = tj.compile(lambda x: acc.add_(x))          # x is float64: stored as float32
    f(np.array([0.25, 0.5]))
    f(np.array([0.25, 0.5]))
    assert acc.dtype is tj.float32
    assert_close(acc, np.array([0.5, 1.0], np.float32))


def test_compiled_call_in_eager_autograd_with_a_write():
    buf = tj.zeros(3)
    f = tj.compile(lambda x: (buf.copy_(x.detach() * 2), (x * x).sum())[1])
    x = tj.tensor(np.array([1.0, 2.0, 3.0], np.float32), requires_grad=True)
    y = f(x)
    y.backward()
    assert_close(x.grad, 2 * x.detach().numpy())
    assert_close(buf, [2.0, 4.0, 6.0])


def test_grad_of_a_compiled_function_with_a_write():
    calls = tj.zeros(())

    def loss(x):
        calls.add_(1)
        return (tj.sin(x) * calls).sum()

    g = tj.grad(tj.compile(loss))
    x = np.array([0.1, 0.2], np.float32)
    assert_close(g(x), np.cos(x) * 1.0)
    assert_close(g(x), np.cos(x) * 2.0)
    assert_close(calls, np.float32(2))


def test_reading_a_written_capture_into_python_is_a_clear_error():
    s = tj.zeros(())

    @tj.compile
    def f(x):
        s.add_(1)
        return x * s.item()

    with pytest.raises(RuntimeError, match=r"updated in place .* is traced \(at "
                       r"test_capture_writes.py:\d+\)"):
        f(np.ones(2, np.float32))
