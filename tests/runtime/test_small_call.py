"""The lean small-array call of a compiled graph (runtime/small_call.py), which the eager fused
composites run: it agrees with the executable's general run and with NumPy, copies
non-contiguous arguments and makes NumPy scalars 0-d arrays as the general run does, binds size-0
intermediates, and is safe from several threads at once."""
import threading

import numpy as np
import pytest

import tracejit as tj
from tracejit.ir.passes import optimize
from tracejit.runtime.backend import get_backend
from tracejit.runtime.eager_composites import compile_graph
from tracejit.tracer.trace import trace


def _graph(fn, *arrays):
    tr = trace(fn, tuple(tj.tensor(a) for a in arrays), {}, {})
    return optimize(tr.graph)


def _sig(x, y):
    return tj.sigmoid(x) * y + 1.0, x - y


def _want(x, y):
    return 1 / (1 + np.exp(-x)) * y + 1.0, x - y


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(4, 8), (1,), (), (0, 3)])
def test_lean_call_matches_general_run_and_numpy(dtype, shape):
    rng = np.random.default_rng(0)
    x, y = (rng.standard_normal(shape).astype(dtype) for _ in range(2))
    g = _graph(_sig, x, y)
    run = compile_graph(g)
    assert run.__name__ == "run_small"          # one native segment: the lean call
    general = get_backend().compile(g).run
    for _ in range(3):
        got, want = run([x, y]), general([x, y])
        for a, b, c in zip(got, want, _want(x, y)):
            assert a.shape == shape and a.dtype == dtype
            np.testing.assert_array_equal(a, b)
            np.testing.assert_allclose(a, c, rtol=1e-6 if dtype == np.float32 else 1e-14)


def test_outputs_are_new_arrays_each_call():
    x = np.linspace(-1, 1, 6)
    run = compile_graph(_graph(_sig, x, x))
    a, b = run([x, x]), run([x, x])
    assert a[0] is not b[0] and not np.shares_memory(a[0], b[0])
    assert not np.shares_memory(a[0], x)


def test_non_contiguous_and_numpy_scalar_arguments():
    """A transposed view is copied (as the general run copies it); a NumPy scalar (a scalar
    loss's gradient is one) is made a 0-d array."""
    rng = np.random.default_rng(1)
    base = rng.standard_normal((8, 4))
    x = base.T                                  # non-contiguous
    y = rng.standard_normal((4, 8))
    run = compile_graph(_graph(_sig, np.ascontiguousarray(x), y))
    for a, c in zip(run([x, y]), _want(x, y)):
        np.testing.assert_allclose(a, c, rtol=1e-14)
    s = np.float64(0.5)                         # a NumPy scalar for a 0-d input
    run0 = compile_graph(_graph(_sig, np.array(0.5), np.array(2.0)))
    for args in ([s, np.array(2.0)], [s, np.float64(2.0)], [np.array(0.5), np.float64(2.0)]):
        for a, c in zip(run0(args), _want(0.5, 2.0)):
            assert type(a) is np.ndarray and a.shape == ()
            np.testing.assert_allclose(a, c, rtol=1e-14)


@pytest.mark.parametrize("make", [
    lambda g: g[:, :8],                          # an LSTM's gate slice: rows strided
    lambda g: g[:, 8:16],
    lambda g: g[::2, :8][:2],                    # rows and columns strided
    lambda g: g[:, ::4],
    lambda g: g[:0, :8],                         # size 0
    lambda g: g[:1, 24:],                        # one row
    lambda g: np.broadcast_to(g[0, :8], (4, 8)),  # stride 0, read-only
])
def test_strided_views_take_the_lean_call_with_a_copy(make):
    """The lean call copies a non-contiguous argument and runs natively, never reading past
    the view (values against NumPy; the view's base and the arguments are left unchanged)."""
    rng = np.random.default_rng(2)
    gates = rng.standard_normal((4, 32)).astype(np.float32)
    keep = gates.copy()
    x = make(gates)
    y = rng.standard_normal(x.shape).astype(np.float32)
    run = compile_graph(_graph(_sig, np.ascontiguousarray(x), y))
    assert run.__name__ == "run_small"
    for _ in range(2):
        for a, c in zip(run([x, y]), _want(x, y)):
            assert a.shape == x.shape and a.flags.c_contiguous
            np.testing.assert_allclose(a, c, rtol=1e-6)
    np.testing.assert_array_equal(gates, keep)


def test_size_zero_intermediates_are_bound():
    """A graph whose intermediates are all size 0 has a scratch layout of 0 bytes; its slots
    must still be bound (the native code reads their array headers)."""
    def f(x):
        return tj.softmax(x, -1).sum(-1)
    x = np.zeros((0, 4))
    g = _graph(f, x)
    exe = get_backend().compile(g)
    assert exe.scratch_layout and exe.scratch_bytes == 0      # (what this test is about)
    run = compile_graph(g)
    for _ in range(2):
        out, = run([x])
        assert out.shape == (0,)


def test_calls_from_two_threads():
    rng = np.random.default_rng(2)
    xs = [rng.standard_normal((16, 16)) for _ in range(8)]
    run = compile_graph(_graph(_sig, xs[0], xs[1]))
    errors = []

    def work(k):
        for i in range(300):
            x, y = xs[(i + k) % 8], xs[(i + 2 * k + 1) % 8]
            got = run([x, y])
            for a, c in zip(got, _want(x, y)):
                if not np.allclose(a, c, rtol=1e-13):
                    errors.append((k, i))
    threads = [threading.Thread(target=work, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
