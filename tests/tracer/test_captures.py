"""Tensors and NumPy arrays a compiled function reads from its closure are inputs of the graph,
whatever op reads them first: values, gradients and in-place updates all match eager mode."""
import logging

import numpy as np
import pytest

import tracejit as tj
from conftest import assert_close

RNG = np.random.default_rng(7)

# (name, capture shape, x shape, fn(x, b)): each reads the capture through a different first op
READS = [
    ("broadcast", (4,), (3, 4), lambda x, b: tj.tanh(x * b).sum()),
    ("reshape", (4,), (2, 2), lambda x, b: (x * b.reshape(2, 2)).sin().sum()),
    ("slice", (6,), (3, 4), lambda x, b: (x * b[1:5]).sum()),
    ("0-d", (), (3, 4), lambda x, b: (tj.exp(x * b)).sum()),
    ("full shape", (3, 4), (3, 4), lambda x, b: tj.tanh(x * b).sum()),
    ("transpose", (4, 3), (3, 4), lambda x, b: (x * b.T).sum()),
    ("op on the capture alone", (4,), (3, 4), lambda x, b: x.sum() + (b * b).sum()),
    ("capture is the whole result", (4,), (3, 4), lambda x, b: (b * 3.0).sum()),
    ("reduction first", (3, 4), (3,), lambda x, b: (x * b.sum(axis=1)).sum()),
]


def _eager(fn, x, b_value):
    """fn evaluated eagerly on a fresh copy of the capture: its value and the capture's grad."""
    b = tj.tensor(b_value, requires_grad=True)
    y = fn(tj.tensor(x), b)
    y.backward()
    return y.detach().numpy(), b.grad.numpy()


@pytest.mark.parametrize("name,bshape,xshape,fn", READS, ids=[r[0] for r in READS])
def test_captured_tensor_values_grads_and_updates(name, bshape, xshape, fn):
    b = tj.tensor(RNG.standard_normal(bshape).astype(np.float32), requires_grad=True)
    f = tj.compile(lambda x: fn(x, b))
    x = RNG.standard_normal(xshape).astype(np.float32)

    y = f(x)
    want, want_grad = _eager(fn, x, b.detach().numpy().copy())
    assert_close(y, want, rtol=1e-5)
    assert y.requires_grad                       # the capture requires grad: so does the result
    y.backward()
    assert_close(b.grad, want_grad, rtol=1e-5)

    with tj.no_grad():
        b.add_(1.5)                              # in place: the next call reads the new value
    assert_close(f(x), _eager(fn, x, b.detach().numpy().copy())[0], rtol=1e-5)
    b.data = tj.tensor(RNG.standard_normal(bshape).astype(np.float32))   # new storage
    assert_close(f(x), _eager(fn, x, b.detach().numpy().copy())[0], rtol=1e-5)
    assert f.cache_info().misses == 1            # same shapes: no retrace

    with tj.no_grad():                           # no grad wanted: the plain compiled call
        assert not f(x).requires_grad


def test_captures_are_graph_inputs_not_constants():
    b = tj.randn(4)
    s = tj.tensor(2.0)
    f = tj.compile(lambda x: x * b.reshape(1, 4) * s)
    text = f.lower(np.ones((3, 4), np.float32)).as_text()
    assert "%cap0: f32[4]" in text and "%cap1: f32[]" in text
    assert "constant" not in text


def test_capture_used_twice_is_one_input():
    b = tj.randn(4)
    f = tj.compile(lambda x: x * b + b.reshape(4) * 2)
    text = f.lower(np.ones(4, np.float32)).as_text()
    assert "%cap0" in text and "%cap1" not in text


def test_grad_and_value_and_grad_see_captures():
    b = tj.tensor(np.array([1.0, 2.0, 3.0], np.float32))

    def loss(x):
        return (x * x * b[None, :]).sum()

    g = tj.grad(tj.compile(loss))
    vg = tj.value_and_grad(tj.compile(loss))
    gp = tj.grad(loss)                           # plain function, eager engine
    x = np.ones((2, 3), np.float32)
    assert_close(g(x), 2 * x * b.numpy())
    with tj.no_grad():
        b.mul_(10.0)
    for dx in (g(x), vg(x)[1], gp(tj.tensor(x))):
        assert_close(dx, 2 * x * b.numpy())
    assert_close(vg(x)[0], (x * x * b.numpy()).sum())


def test_grad_of_plain_function_inside_compile_with_capture():
    w = tj.tensor(-2.0)

    @tj.compile
    def f(x):
        return tj.grad(lambda x: (tj.sin(x) * w).sum())(x)

    x = np.array([0.3, 0.4], np.float32)
    assert_close(f(x), np.cos(x) * -2.0)
    with tj.no_grad():
        w.fill_(3.0)
    assert_close(f(x), np.cos(x) * 3.0)


def test_nested_compiled_function_capture():
    b = tj.tensor(np.array([1.0, 2.0], np.float32), requires_grad=True)
    inner = tj.compile(lambda x: x * b.reshape(1, 2))
    outer = tj.compile(lambda x: inner(x).sum() * 2)
    x = np.ones((3, 2), np.float32)
    y = outer(x)
    assert_close(y, 18.0)
    y.backward()
    assert_close(b.grad, np.array([6.0, 6.0], np.float32))
    with tj.no_grad():
        b.sub_(1.0)
    assert_close(outer(x), 6.0)


def test_captured_tensor_shape_change_retraces(monkeypatch, caplog):
    monkeypatch.setenv("TRACEJIT_LOG", "recompiles")
    b = tj.ones(4)
    f = tj.compile(lambda x: (x + b.reshape(-1)[:2]).sum())
    assert f(np.zeros(2, np.float32)).item() == 2.0
    b.data = tj.full((5,), 3.0)
    with caplog.at_level(logging.WARNING, logger="tracejit"):
        assert f(np.zeros(2, np.float32)).item() == 6.0
    assert f.cache_info().misses == 2
    assert "captured tensor cap0 changed" in caplog.text


def test_detach_and_data_of_a_capture_read_fresh_without_grad():
    b = tj.tensor(np.array([1.0, 2.0], np.float32), requires_grad=True)
    f = tj.compile(lambda x: (x * b.detach() + x * b.data).sum())
    x = np.ones((3, 2), np.float32)
    y = f(x)
    assert_close(y, 18.0)
    if y.requires_grad:              # (whether it does is the compiled call's pruning)
        y.backward()
        assert b.grad is None or not b.grad.numpy().any()
    with tj.no_grad():
        b.mul_(2.0)
    assert_close(f(x), 36.0)
    b.data = tj.tensor(np.array([0.5, 0.5], np.float32))       # new storage
    assert_close(f(x), 6.0)


def test_item_of_a_capture_is_a_guard_that_retraces_when_it_changes():
    s = tj.tensor(2.0)
    flag = tj.tensor(True)

    @tj.compile
    def f(x):
        k = s.item()                             # a Python number: the trace depends on it
        return x * k if flag else x - k

    x = np.ones(2, np.float32)
    assert_close(f(x), [2.0, 2.0])
    assert_close(f(x), [2.0, 2.0])
    assert f.cache_info().misses == 1
    with tj.no_grad():
        s.fill_(5.0)
    assert_close(f(x), [5.0, 5.0])               # not the stale 2.0: traced again
    flag.data = tj.tensor(False)
    assert_close(f(x), [-4.0, -4.0])
    assert f.cache_info().misses == 3


def test_data_dependent_control_flow_on_a_capture_is_a_clear_error():
    b = tj.randn(3)
    f = tj.compile(lambda x: x * 2 if b.sum() > 0 else x)
    with pytest.raises(RuntimeError, match="tj.where"):
        f(np.ones(3, np.float32))


def test_in_place_update_of_a_trace_constant_by_a_traced_value():
    @tj.compile
    def f(x):
        acc = tj.zeros(3)                        # made inside the trace
        acc.add_(x)
        acc += x
        return acc

    assert_close(f(np.ones(3, np.float32)), [2.0, 2.0, 2.0])
    assert_close(f(np.full(3, 2.0, np.float32)), [4.0, 4.0, 4.0])


# -- NumPy arrays ---------------------------------------------------------------------------------
ARRAYS = [
    ("small", lambda: np.array([1.0, 2.0, 3.0], np.float32), np.float32),
    ("uniform", lambda: np.full(40, 2.0, np.float32), np.float32),
    ("large", lambda: RNG.standard_normal(100).astype(np.float32), np.float32),
    ("promotes to f64", lambda: np.array([1.0, 2.0, 3.0]), np.float64),
    ("int promoted to float", lambda: np.arange(5), np.float32),
    ("non-contiguous", lambda: RNG.standard_normal(60).astype(np.float32)[::3], np.float32),
    ("0-d", lambda: np.array(1.5, np.float32), np.float32),
]


@pytest.mark.parametrize("name,make,out_dtype", ARRAYS, ids=[a[0] for a in ARRAYS])
def test_numpy_array_capture_is_read_by_reference(name, make, out_dtype):
    arr = make()
    f = tj.compile(lambda x: x * arr + arr)
    x = RNG.standard_normal(arr.shape).astype(np.float32)
    y = f(x)
    assert y.dtype.np == out_dtype
    assert_close(y, (x * arr + arr).astype(out_dtype), rtol=1e-6)
    arr[...] = arr * 3 + 1                       # the user's array, changed in place
    assert_close(f(x), (x * arr + arr).astype(out_dtype), rtol=1e-6)
    assert f.cache_info().misses == 1
    assert "constant" not in f.lower(x).as_text()


def test_numpy_capture_in_unary_and_where():
    mask = np.array([True, False, True])
    arr = np.array([0.0, 1.0, 2.0], np.float32)
    f = tj.compile(lambda x: tj.where(mask, x, tj.exp(arr)))
    x = np.full(3, 7.0, np.float32)
    assert_close(f(x), np.where(mask, x, np.exp(arr)))
    mask[:] = False
    arr += 1
    assert_close(f(x), np.exp(arr), rtol=1e-6)


def test_python_scalars_and_lists_stay_constants():
    f = tj.compile(lambda x: x * [1.0, 2.0] + 3.0)
    assert "constant" in f.lower(np.ones(2, np.float32)).as_text()
    assert_close(f(np.ones(2, np.float32)), [4.0, 5.0])


# -- a captured name bound to a new object --------------------------------------------------------
SCALE = np.array([2.0, 2.0], np.float32)


def _scaled(x):
    return x * SCALE


def test_rebinding_a_captured_closure_variable_traces_again():
    b = tj.ones(2)
    arr = np.ones(2, np.float32)
    f = tj.compile(lambda x: x * b + arr)
    x = np.ones(2, np.float32)
    assert_close(f(x), [2.0, 2.0])
    b = tj.full((2,), 3.0)                       # noqa: F841  (read by f through its closure)
    assert_close(f(x), [4.0, 4.0])
    arr = np.zeros(2, np.float32)                # noqa: F841
    assert_close(f(x), [3.0, 3.0])
    assert f.cache_info().misses == 3


def test_rebinding_a_captured_global_traces_again(monkeypatch, caplog):
    global SCALE
    monkeypatch.setenv("TRACEJIT_LOG", "recompiles")
    f = tj.compile(_scaled)
    x = np.ones(2, np.float32)
    old = SCALE
    try:
        assert_close(f(x), [2.0, 2.0])
        SCALE = np.array([5.0, 6.0], np.float32)
        with caplog.at_level(logging.WARNING, logger="tracejit"):
            assert_close(f(x), [5.0, 6.0])
        assert "captured global 'SCALE' now names another object" in caplog.text
    finally:
        SCALE = old
