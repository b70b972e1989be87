"""tj.checkpoint differentiates what its function reads from its closure; set_grad_enabled
called as a plain function sets the mode (as in PyTorch)."""
import numpy as np
import pytest

import tracejit as tj
from conftest import assert_close

def _params():
    """The same w, b, h at every call (float64)."""
    rng = np.random.default_rng(3)
    w = tj.tensor(rng.standard_normal((4, 3)), requires_grad=True)
    b = tj.tensor(rng.standard_normal(3), requires_grad=True)
    h = tj.tensor(rng.standard_normal((2, 4)), requires_grad=True)
    return w, b, h


def _grads(use_checkpoint: bool, block, h_requires_grad=True):
    """Gradients of a loss through `block(h)` (which reads w, b from its closure)."""
    w, b, h = _params()
    h.requires_grad_(h_requires_grad)
    fn = block(w, b)
    y = tj.checkpoint(fn, h) if use_checkpoint else fn(h)
    (y * y).sum().backward()
    return [t.grad.numpy() if t.grad is not None else None for t in (w, b, h)]


def _dense(w, b):
    return lambda h: tj.tanh(h @ w + b)


@pytest.mark.parametrize("h_requires_grad", [True, False])
def test_checkpoint_closure_parameters_get_their_gradient(h_requires_grad):
    want = _grads(False, _dense, h_requires_grad)
    got = _grads(True, _dense, h_requires_grad)
    assert got[0] is not None and got[1] is not None
    for g, e in zip(got, want):
        if e is None:
            assert g is None
        else:
            assert_close(g, e, rtol=1e-10)


def test_checkpoint_closure_non_leaf_and_the_rest_of_the_graph():
    w, b, h = _params()
    w2 = w * 2.0                                # a non-leaf read from the closure

    def fn(h):
        return tj.sin(h @ w2) * b

    y = tj.checkpoint(fn, h)
    ((y * y).sum() + w2.sum()).backward()       # w2's node is also used outside the block
    gw, gb, gh = w.grad.numpy(), b.grad.numpy(), h.grad.numpy()

    w, b, h = (tj.tensor(t.detach().numpy(), requires_grad=True) for t in (w, b, h))
    w2 = w * 2.0
    y = fn(h)
    ((y * y).sum() + w2.sum()).backward()
    assert_close(gw, w.grad, rtol=1e-10)
    assert_close(gb, b.grad, rtol=1e-10)
    assert_close(gh, h.grad, rtol=1e-10)


def test_checkpoint_hook_on_closure_parameter_runs_once():
    w, b, h = _params()
    calls = []
    w.register_hook(lambda g: calls.append(1) or g * 2)
    tj.checkpoint(_dense(w, b), h).sum().backward()
    got = w.grad.numpy()
    assert len(calls) == 1
    w2, b2, h2 = (tj.tensor(t.detach().numpy(), requires_grad=True) for t in (w, b, h))
    _dense(w2, b2)(h2).sum().backward()
    assert_close(got, 2 * w2.grad.numpy(), rtol=1e-10)


def test_checkpoint_of_a_compiled_block_with_closure_parameter():
    w, b, h = _params()
    block = tj.compile(lambda h: tj.tanh(h @ w + b))
    tj.checkpoint(block, h).sum().backward()
    got = [t.grad.numpy() for t in (w, b, h)]
    w2, b2, h2 = (tj.tensor(t.detach().numpy(), requires_grad=True) for t in (w, b, h))
    _dense(w2, b2)(h2).sum().backward()
    for g, t in zip(got, (w2, b2, h2)):
        assert_close(g, t.grad, rtol=1e-10)


def test_nested_checkpoint_with_closures():
    w, b, h = _params()
    inner = _dense(w, b)
    outer = lambda h: tj.checkpoint(inner, h) * 3.0      # noqa: E731
    tj.checkpoint(outer, h).sum().backward()
    got = [t.grad.numpy() for t in (w, b, h)]
    w2, b2, h2 = (tj.tensor(t.detach().numpy(), requires_grad=True) for t in (w, b, h))
    (_dense(w2, b2)(h2) * 3.0).sum().backward()
    for g, t in zip(got, (w2, b2, h2)):
        assert_close(g, t.grad, rtol=1e-10)


def test_checkpoint_second_derivative_through_closure():
    w, b, h = _params()
    y = tj.checkpoint(_dense(w, b), h).sum()
    (gw,) = tj.autograd.grad(y, [w], create_graph=True)
    (gw * gw).sum().backward()
    got = h.grad.numpy()
    w2, b2, h2 = (tj.tensor(t.detach().numpy(), requires_grad=True) for t in (w, b, h))
    (gw2,) = tj.autograd.grad(_dense(w2, b2)(h2).sum(), [w2], create_graph=True)
    (gw2 * gw2).sum().backward()
    assert_close(got, h2.grad, rtol=1e-10)


def test_checkpoint_closure_parameter_changed_before_backward_is_an_error():
    w, b, h = _params()
    y = tj.checkpoint(_dense(w, b), h).sum()
    with tj.no_grad():
        w.mul_(2.0)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.backward()


def test_checkpoint_without_grad_needed_returns_plain_result():
    w = tj.ones(3)
    y = tj.checkpoint(lambda h: h * w, tj.ones(3))
    assert not y.requires_grad and y.grad_fn is None


# -- set_grad_enabled -----------------------------------------------------------------------------
@pytest.fixture
def restore_grad_mode():
    yield
    tj.set_grad_enabled(True)


def test_set_grad_enabled_as_a_plain_call(restore_grad_mode):
    x = tj.ones(3, requires_grad=True)
    tj.set_grad_enabled(False)
    assert not tj.is_grad_enabled()
    y = x * 2
    assert not y.requires_grad and y.grad_fn is None
    tj.set_grad_enabled(True)
    assert tj.is_grad_enabled()
    y = x * 2
    assert y.requires_grad and y.grad_fn is not None


def test_set_grad_enabled_context_manager_restores_the_previous_mode(restore_grad_mode):
    with tj.no_grad():
        with tj.set_grad_enabled(True):
            assert tj.is_grad_enabled()
        assert not tj.is_grad_enabled()
    with tj.set_grad_enabled(False):
        assert not tj.is_grad_enabled()
    assert tj.is_grad_enabled()


def test_set_grad_enabled_decorator_sets_the_mode_only_inside(restore_grad_mode):
    @tj.set_grad_enabled(False)
    def f():
        return tj.is_grad_enabled()

    assert tj.is_grad_enabled()              # decorating did not switch gradients off
    assert f() is False
    assert tj.is_grad_enabled()
