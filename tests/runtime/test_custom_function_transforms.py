"""Custom autograd.Functions under the IR transforms (#15): the reverse-mode IR transform cannot
see a Function's backward staticmethod, so tj.jacrev, tj.grad of a compiled function and the
backward of a compiled call go by the eager engine when the trace applied one (as
torch.func.jacrev / torch.compile call it). The Function below is a straight-through
estimator: its backward and jvp are NOT the derivatives of its forward's ops (sign'(x) = 0), so
only they give the expected results."""
from __future__ import annotations

import numpy as np
import pytest

import tracejit as tj

X = np.array([0.5, -1.0, 2.0, -0.25])


class SignST(tj.autograd.Function):
    @staticmethod
    def forward(x):
        return tj.sign(x)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_forward(*inputs)

    @staticmethod
    def backward(ctx, g):
        return g

    @staticmethod
    def jvp(ctx, t):
        return t


def f(x):
    """sign_st(x) * x: straight through, d/dx = x + sign(x); second derivative 2 (diagonal)."""
    return SignST.apply(x) * x


def df(x):
    return np.diag(x + np.sign(x))


def test_jacrev_uses_the_backward():
    for _ in range(2):                  # (the second call: the kept trace)
        np.testing.assert_allclose(tj.jacrev(f)(X).numpy(), df(X), rtol=1e-12)
    np.testing.assert_allclose(tj.jacfwd(f)(X).numpy(), df(X), rtol=1e-12)
    np.testing.assert_allclose(tj.jacobian(f)(X).numpy(), df(X), rtol=1e-12)


def test_grad_of_a_compiled_function_uses_the_backward():
    loss = tj.compile(lambda x: f(x).sum())
    for _ in range(2):
        np.testing.assert_allclose(tj.grad(loss)(X).numpy(), X + np.sign(X), rtol=1e-12)
        v, g = tj.value_and_grad(loss)(X)
        np.testing.assert_allclose(g.numpy(), X + np.sign(X), rtol=1e-12)
        np.testing.assert_allclose(v.item(), np.abs(X).sum(), rtol=1e-12)


def test_backward_of_a_compiled_call_uses_the_backward():
    loss = tj.compile(lambda x: f(x).sum())
    for _ in range(2):
        x = tj.tensor(X, requires_grad=True)
        out = loss(x)
        out.backward()
        np.testing.assert_allclose(out.item(), np.abs(X).sum(), rtol=1e-12)
        np.testing.assert_allclose(x.grad.numpy(), X + np.sign(X), rtol=1e-12)
    # without gradients the compiled kernels run as before
    np.testing.assert_allclose(loss(X).item(), np.abs(X).sum(), rtol=1e-12)


@pytest.mark.parametrize("compiled", [False, True])
def test_hessian_is_forward_over_the_custom_backward(compiled):
    # g(x) = sign_st(x) x^2 / 3: the backward gives dg/dx = (x^2 + 2 sign(x) x) / 3 (the
    # sign straight through); its forward-mode derivative (the jvp straight through too) is
    # (2x + 2x + 2 sign(x)) / 3
    h = tj.hessian(lambda x: (f(x) * x).sum() / 3)
    h = tj.compile(h) if compiled else h
    want = np.diag((4 * X + 2 * np.sign(X)) / 3)
    np.testing.assert_allclose(h(X).numpy(), want, rtol=1e-12)


XS = np.array([[0.5, -1.0, 2.0], [-0.25, 1.5, -3.0]])


def test_vmap_differentiated_from_outside_calls_the_functions():
    """grad(vmap(f)) and jvp(vmap(f)): each example applies the Function (its backward and jvp
    run); vmap(grad(f)) and undifferentiated calls batch as usual."""
    loss = lambda xs: tj.vmap(f)(xs).sum()          # noqa: E731
    for _ in range(2):
        np.testing.assert_allclose(tj.grad(loss)(XS).numpy(), XS + np.sign(XS), rtol=1e-12)
        np.testing.assert_allclose(tj.grad(tj.compile(loss))(XS).numpy(), XS + np.sign(XS),
                                   rtol=1e-12)
        out, tan = tj.jvp(tj.vmap(f), (XS,), (np.ones_like(XS),))
        np.testing.assert_allclose(out.numpy(), np.abs(XS), rtol=1e-12)
        np.testing.assert_allclose(tan.numpy(), XS + np.sign(XS), rtol=1e-12)
        np.testing.assert_allclose(tj.vmap(tj.grad(lambda x: f(x).sum()))(XS).numpy(),
                                   XS + np.sign(XS), rtol=1e-12)
        np.testing.assert_allclose(tj.vmap(f)(XS).numpy(), np.abs(XS), rtol=1e-12)


def test_vmap_with_parameters_that_require_grad():
    w = tj.tensor(np.array([1.0, 2.0, -1.0]), requires_grad=True)
    xs = tj.tensor(XS, requires_grad=True)
    out = tj.vmap(lambda x: f(x * w), in_axes=0, out_axes=1)(xs)
    assert out.shape == (3, 2)
    out.sum().backward()
    z = XS * w.detach().numpy()
    np.testing.assert_allclose(xs.grad.numpy(), (z + np.sign(z)) * w.detach().numpy(),
                               rtol=1e-12)
    np.testing.assert_allclose(w.grad.numpy(), ((z + np.sign(z)) * XS).sum(0), rtol=1e-12)
