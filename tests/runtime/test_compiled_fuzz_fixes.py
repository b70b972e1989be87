"""Regression tests for the silent wrongs the compiled-vs-torch fuzzer (tests/compiled_fuzz_run.py)
found, each as small as the bug: compiled values, dtypes and gradients against torch."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import tracejit as tj


@pytest.mark.parametrize("body", [lambda L, x, s: x + s * 2, lambda L, x, s: x - 3 * s,
                                  lambda L, x, s: x * (s + 1) + s * s])
def test_python_scalar_argument_with_a_number_stays_weak(body):
    # a traced Python float times a number promoted a float32 tensor to float64
    x = np.array([1.0, 2.0, 3.0], np.float32)
    got = tj.compile(lambda x, s: body(tj, x, s))(x, 0.5)
    want = body(torch, torch.tensor(x), 0.5)
    assert got.dtype == tj.float32
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-6)


def _mul_into(L, x, w):
    y = x * 1
    y.mul_(w)                   # MulBackward saves y's OLD value for w's gradient
    return (y * y).sum()


@pytest.mark.parametrize("way", ["compile(grad)", "grad(compile)", "grad"])
def test_in_place_op_inside_a_traced_grad_saves_the_old_value(way):
    # compile(grad(f)) differentiated w through y's NEW value (y*w), not the y it multiplied
    X, W = np.array([1.0, 2.0, 3.0]), np.array([2.0, 3.0, 4.0])
    w = torch.tensor(W, requires_grad=True)
    want = torch.autograd.grad(_mul_into(torch, torch.tensor(X), w), w)[0]
    f = lambda x, w: _mul_into(tj, x, w)             # noqa: E731
    g = {"compile(grad)": tj.compile(tj.grad(f, argnums=1)),
         "grad(compile)": tj.grad(tj.compile(f), argnums=1), "grad": tj.grad(f, argnums=1)}[way]
    np.testing.assert_allclose(g(tj.tensor(X), tj.tensor(W)).numpy(), want.numpy())


def _saved_then_changed(L, a0, a2):
    m = a2 * a0[2]              # saves a2
    with L.no_grad():
        a2.add_(-1.0)           # ... which changes before backward
    return m * 3


@pytest.mark.parametrize("way", ["compile(grad)", "grad(compile)", "grad"])
def test_saved_value_changed_in_place_inside_a_traced_grad_raises_as_eagerly(way):
    # torch raises; the traced tape read the new value and returned a wrong gradient (-1.5
    # where the forward's factor was 0.5)
    A0, A2 = np.array([1.0, 2.0, 3.0, 4.0]), np.array(0.5)
    a0 = torch.tensor(A0, requires_grad=True)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        torch.autograd.grad(_saved_then_changed(torch, a0, torch.tensor(A2)), a0)
    f = lambda a0, a2: _saved_then_changed(tj, a0, a2)      # noqa: E731
    g = {"compile(grad)": tj.compile(tj.grad(f)), "grad(compile)": tj.grad(tj.compile(f)),
         "grad": tj.grad(f)}[way]
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        g(tj.tensor(A0), tj.tensor(A2))


def _write_through_detach(L, a):
    with L.no_grad():
        a.detach().add_(1.0)    # writes into the differentiated argument itself
    return (a * a).sum()


@pytest.mark.parametrize("way", ["compile(grad)", "grad(compile)", "grad"])
def test_differentiated_argument_written_through_detach_is_written_back(way):
    # compile(grad(f)) and grad(compile(f)) returned the gradient at the new value but left
    # the caller's argument unchanged (torch and eager tj.grad change it)
    A = np.array([1.0, 2.0])
    t = torch.tensor(A, requires_grad=True)
    want = torch.autograd.grad(_write_through_detach(torch, t), t)[0]
    f = lambda a: _write_through_detach(tj, a)           # noqa: E731
    g = {"compile(grad)": tj.compile(tj.grad(f)), "grad(compile)": tj.grad(tj.compile(f)),
         "grad": tj.grad(f)}[way]
    for _ in range(2):          # the first call traces, the second runs the cached program
        a = tj.tensor(A)
        got = g(a)
        np.testing.assert_allclose(got.numpy(), want.numpy())
        np.testing.assert_allclose(a.numpy(), t.detach().numpy())


def _bump_global():
    G_C1.add_(G_C0[0] * 2)
    return G_C1 * 1


def _calls_helper():
    return _bump_global()


@pytest.mark.parametrize("fn", [_bump_global, _calls_helper])
@pytest.mark.parametrize("grad", [False, True])
def test_global_capture_written_in_place_and_rebound(fn, grad):
    # a capture read only inside a helper was not guarded (rebinding it read the old object);
    # written with a value that requires grad, its array was copied into the trace as a
    # constant (every later call, and a rebound global, read the first call's value)
    global G_C0, G_C1
    G_C0 = tj.tensor(np.array([0.5, -1.0, 2.0]), requires_grad=grad)
    G_C1 = tj.tensor(np.array(0.25))
    f = tj.compile(fn)
    np.testing.assert_allclose(f().detach().numpy(), 1.25)
    np.testing.assert_allclose(f().detach().numpy(), 2.25)
    G_C1 = tj.tensor(np.array(0.25))            # rebound: traced again, the new one written
    np.testing.assert_allclose(f().detach().numpy(), 1.25)
    np.testing.assert_allclose(G_C1.detach().numpy(), 1.25)


def test_backward_inside_with_an_argument_that_requires_grad_is_refused():
    # backward() inside a compiled step never filled an argument's .grad (torch does): with a
    # parameter in the loss the argument's .grad silently stayed None
    p = tj.nn.Parameter(tj.tensor(np.ones(3)))

    def step(x):
        loss = (x * p).sum()
        loss.backward()
        return loss
    f = tj.compile(step)
    f(tj.tensor(np.ones(3)))                    # traced with an argument without grad
    x = tj.tensor(np.ones(3), requires_grad=True)
    with pytest.raises(RuntimeError, match="requires grad, and the compiled function runs "
                                           "backward"):
        f(x)
    assert x.grad is None
    np.testing.assert_allclose(f(x.detach()).numpy(), 3.0)
    np.testing.assert_allclose(p.grad.numpy(), [2.0, 2.0, 2.0])


@pytest.mark.parametrize("dtype", [np.int64, np.float32, np.bool_])
def test_flip_over_unit_axes_is_not_its_input_inside_a_trace(dtype):
    # flip of a size-1 axis returned its input itself in a trace: the fill_ after it showed
    def body(a):
        b = a.flip(0)
        a.fill_(0)
        return b
    x = np.array([[[1]]]).astype(dtype)
    want = body(torch.tensor(x)).numpy()
    np.testing.assert_array_equal(tj.compile(body)(tj.tensor(x)).numpy(), want)


@pytest.mark.parametrize("compiled", [False, True])
def test_setitem_value_with_leading_unit_axes(compiled):
    # x[1] = v with v of shape [1, 4] was refused ("cannot assign"); torch and NumPy drop the
    # leading unit axes
    def body(L, x, v):
        x[1] = v
        x[0, 1:3] = v[..., :2] * 3
        return x
    want = body(torch, torch.zeros(3, 4), torch.arange(4.0).reshape(1, 1, 4))
    f = (lambda x, v: body(tj, x, v))
    f = tj.compile(f) if compiled else f
    got = f(tj.zeros(3, 4), tj.tensor(np.arange(4.0, dtype=np.float32).reshape(1, 1, 4)))
    np.testing.assert_array_equal(got.numpy(), want.numpy())


def _view_then_base_under_no_grad(L, a):
    m = a * 2
    u = m[0]                    # a view of m, made with grad on
    with L.no_grad():
        m.add_(-1.0)            # u follows and keeps its history (torch: AsStridedBackward)
    return u, m


def test_view_of_a_value_changed_under_no_grad_keeps_its_gradient_when_compiled():
    # the compiled call's u did not require grad and gave no gradient (its rederived value sat
    # behind a no_grad barrier: traced values from arguments do not require grad on the tape)
    grads = []
    for L, f in ((torch, lambda a: _view_then_base_under_no_grad(torch, a)),
                 (tj, tj.compile(lambda a: _view_then_base_under_no_grad(tj, a)))):
        a = L.tensor(np.ones((2, 3)), requires_grad=True)
        u, m = f(a)
        assert u.requires_grad
        (u.sum() * 3 + m.sum()).backward()
        grads.append(a.grad.numpy())
    np.testing.assert_allclose(grads[1], grads[0])


_WRITES = {
    "setitem": lambda c, a: c.__setitem__((1, slice(None)), a),
    "copy_": lambda c, a: c.copy_(a.expand(5, 4)),
    "add_": lambda c, a: c.add_(a),
    "mul_": lambda c, a: c.mul_(a),
}


def _capture(L, layout: str):
    """A captured [5, 4] global: contiguous, or every other column of a wider base."""
    vals = np.arange(20.0).reshape(5, 4) / 7 - 1
    if layout == "contiguous":
        return L.tensor(vals.copy())
    wide = np.zeros((5, 8))
    wide[:, ::2] = vals
    return L.tensor(wide)[:, ::2]


@pytest.mark.parametrize("write", list(_WRITES))
@pytest.mark.parametrize("layout", ["contiguous", "strided view"])
@pytest.mark.parametrize("through", ["capture", "expand view"])
@pytest.mark.parametrize("way", ["compile(grad)", "grad(compile)", "grad"])
def test_argument_written_into_a_capture_gets_its_gradient(write, layout, through, way):
    # compile(grad(f)) gave a zero gradient to an argument written in place into a captured
    # tensor (or a view of one) and read back: the trace kept the capture's new value without
    # the write's autograd history (compiled fuzzer seed 70343)
    def make(L):
        c = _capture(L, layout)

        def f(a):
            v = c if through == "capture" else c.expand(5, 4)
            _WRITES[write](v, a)
            return (v * v * 0.5).sum() + (c @ L.tensor(np.arange(4.0))).sum()
        return f
    A = np.array([0.75])
    a = torch.tensor(A, requires_grad=True)
    want = torch.autograd.grad(make(torch)(a), a)[0]
    f = make(tj)
    g = {"compile(grad)": tj.compile(tj.grad(f)), "grad(compile)": tj.grad(tj.compile(f)),
         "grad": tj.grad(f)}[way]
    np.testing.assert_allclose(g(tj.tensor(A)).numpy(), want.numpy(), rtol=1e-12)


def test_compiled_fuzz_seed_70343_grad_of_a_write_into_a_captured_view():
    import compiled_fuzz_run as R
    assert R.run_grad(70343) == "ok"
