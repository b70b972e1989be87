"""Grad mode inside compiled functions (no_grad, enable_grad, set_grad_enabled, inference_mode,
.data, in-place updates under no_grad): values and gradients equal PyTorch's for every way a
compiled function is differentiated (a compiled call then .backward()/autograd.grad, tj.grad or
value_and_grad of a compiled function, a compiled tj.grad, forward mode)."""
import numpy as np
import pytest
import torch
import torch.autograd.forward_ad as fwAD

import tracejit as tj

X = np.array([1.0, 2.0, -3.0, 0.5])
T = np.array([0.5, -1.0, 2.0, 3.0])


def body_no_grad(L, x):
    with L.no_grad():
        y = x * 2
    return (x * y).sum()


def body_enable_in_no_grad(L, x):
    with L.no_grad():
        y = x * 2
        with L.enable_grad():
            z = x * 3
    return (x * y + z).sum()


def body_set_grad_enabled(L, x):
    with L.set_grad_enabled(False):
        y = x.exp()
    return (x.sin() * y).sum()


def body_inference_mode(L, x):
    with L.inference_mode():
        y = x * x
    if L is torch:
        y = y.clone()           # torch's inference tensors cannot be saved for backward
    return (x * y).sum()


def body_data(L, x):
    return (x * (x * 2).data).sum()


def body_shared(L, x):
    # the same expression with and without grad: no pass may merge them
    with L.no_grad():
        y = x.exp()
    return (y * x).sum() + (x.exp() * x).sum()


def body_inplace_mul(L, x):
    y = x * 2
    with L.no_grad():
        y.mul_(3)               # y keeps its history: d y / d x is still 2
    return (x * y).sum()


def body_inplace_add_dependent(L, x):
    y = x * 2
    with L.no_grad():
        y.add_(x * x)
    return (x * y).sum()


def body_data_inplace(L, x):
    y = x * 2
    y.data.mul_(3)
    return (x * y).sum()


def body_detach_inplace(L, x):
    y = x * 2
    d = y.detach()
    d.add_(1)
    return (x * y).sum() + d.sum()


BODIES = [body_no_grad, body_enable_in_no_grad, body_set_grad_enabled, body_inference_mode,
          body_data, body_shared, body_inplace_mul, body_inplace_add_dependent,
          body_data_inplace, body_detach_inplace]


def torch_value_grad(body):
    x = torch.tensor(X, requires_grad=True)
    out = body(torch, x)
    out.backward()
    return out.item(), x.grad.numpy()


def call_backward(body):
    x = tj.tensor(X, requires_grad=True)
    out = tj.compile(lambda x: body(tj, x))(x)
    out.backward()
    return out.item(), x.grad.numpy()


def call_autograd_grad(body):
    x = tj.tensor(X, requires_grad=True)
    out = tj.compile(lambda x: body(tj, x))(x)
    g, = tj.autograd.grad(out, [x])
    return out.item(), g.numpy()


def grad_of_compiled(body):
    return None, tj.grad(tj.compile(lambda x: body(tj, x)))(tj.tensor(X)).numpy()


def value_and_grad_of_compiled(body):
    v, g = tj.value_and_grad(tj.compile(lambda x: body(tj, x)))(tj.tensor(X))
    return v.item(), g.numpy()


def compiled_grad(body):
    return None, tj.compile(tj.grad(lambda x: body(tj, x)))(tj.tensor(X)).numpy()


WAYS = [call_backward, call_autograd_grad, grad_of_compiled, value_and_grad_of_compiled,
        compiled_grad]


@pytest.mark.parametrize("way", WAYS, ids=lambda w: w.__name__)
@pytest.mark.parametrize("body", BODIES, ids=lambda b: b.__name__)
def test_gradients_match_torch(body, way):
    value, grad = way(body)
    t_value, t_grad = torch_value_grad(body)
    np.testing.assert_allclose(grad, t_grad, rtol=1e-12, atol=1e-12)
    if value is not None:
        np.testing.assert_allclose(value, t_value, rtol=1e-12)


FORWARD_BODIES = [body_no_grad, body_set_grad_enabled, body_inplace_mul,
                  body_inplace_add_dependent]


@pytest.mark.parametrize("body", FORWARD_BODIES, ids=lambda b: b.__name__)
def test_forward_mode_ignores_no_grad_as_torch(body):
    # PyTorch's forward AD ignores no_grad (and a no_grad in-place update changes the tangent)
    with fwAD.dual_level():
        d = fwAD.make_dual(torch.tensor(X), torch.tensor(T))
        t_tangent = fwAD.unpack_dual(body(torch, d)).tangent.numpy()
    f = tj.compile(lambda x: body(tj, x))
    _, tangent = tj.jvp(f, (tj.tensor(X),), (tj.tensor(T),))
    np.testing.assert_allclose(tangent.numpy(), t_tangent, rtol=1e-12)
    jac = torch.func.jacfwd(lambda x: body(torch, x))(torch.tensor(X)).numpy()
    np.testing.assert_allclose(tj.jacfwd(f)(tj.tensor(X)).numpy(), jac, rtol=1e-12)


def test_first_traced_under_no_grad_still_differentiates():
    # the caller's no_grad is not part of the function: a graph traced under it must not
    # treat the whole body as a constant when a later call needs gradients
    w = tj.tensor(np.arange(12.0).reshape(3, 4) / 7, requires_grad=True)
    x = tj.tensor(np.linspace(-1, 1, 20).reshape(5, 4))
    f = tj.compile(lambda x: (x @ w.T).square().sum())
    with tj.no_grad():
        f(x)
    f(x).backward()
    xa, wa = x.numpy(), w.detach().numpy()
    np.testing.assert_allclose(w.grad.numpy(), 2 * (xa @ wa.T).T @ xa, rtol=1e-12)
    a = tj.tensor(X, requires_grad=True)
    g = tj.compile(lambda a: (a * a).sum())
    with tj.no_grad():
        g(a)
    g(a).backward()
    np.testing.assert_allclose(a.grad.numpy(), 2 * X)


def test_checkpoint_inside_compiled_still_differentiates():
    def f(L, x):
        if L is torch:
            return torch.utils.checkpoint.checkpoint(lambda a: (a.sin() * a).sum(), x,
                                                     use_reentrant=False)
        return tj.checkpoint(lambda a: (a.sin() * a).sum(), x)
    for way in (call_backward, grad_of_compiled):
        _, g = way(f)
        np.testing.assert_allclose(g, torch_value_grad(f)[1], rtol=1e-12)


def test_inplace_under_no_grad_value_is_exact_with_infinities():
    # the no_grad update's value is the new value bit for bit, also where the old one is
    # infinite (masks filled twice) or the new one is -0.0
    def f(x):
        y = x * 1.0
        with tj.no_grad():
            y.masked_fill_(x > 1.5, float("-inf"))
            y.masked_fill_(x < 0, float("-inf"))
            y.mul_(-1.0)            # 0.0 -> -0.0
        return y
    x = tj.tensor(np.array([1.0, 2.0, -3.0, 0.0, 0.3]), requires_grad=True)
    out = tj.compile(f)(x).detach().numpy()
    expected = f(tj.tensor(x.detach().numpy())).numpy()
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(np.signbit(out), np.signbit(expected))


def test_compiled_module_with_no_grad_statistic():
    rng = np.random.default_rng(0)
    w, b, xs = rng.standard_normal((3, 4)), rng.standard_normal(3), rng.standard_normal((5, 4))

    def make(L):
        lin = L.nn.Linear(4, 3, dtype=L.float64)
        with L.no_grad():
            lin.weight.copy_(L.tensor(w))
            lin.bias.copy_(L.tensor(b))
        return lin

    def forward(L, lin, x):
        h = lin(x)
        with L.no_grad():
            scale = h.square().mean() + 1.0      # a constant to autograd
        return (h / scale).tanh().sum()

    lt = make(torch)
    forward(torch, lt, torch.tensor(xs)).backward()
    lj = make(tj)
    tj.compile(lambda x: forward(tj, lj, x))(tj.tensor(xs)).backward()
    np.testing.assert_allclose(lj.weight.grad.numpy(), lt.weight.grad.numpy(), rtol=1e-10)
    np.testing.assert_allclose(lj.bias.grad.numpy(), lt.bias.grad.numpy(), rtol=1e-10)


def test_create_graph_through_compiled_call_with_no_grad():
    def f(L, x):
        with L.no_grad():
            y = x.exp()
        return (x.sin() * x * y).sum()
    x = tj.tensor(X, requires_grad=True)
    g, = tj.autograd.grad(tj.compile(lambda x: f(tj, x))(x), [x], create_graph=True)
    gg, = tj.autograd.grad(g.sum(), [x])
    xt = torch.tensor(X, requires_grad=True)
    gt, = torch.autograd.grad(f(torch, xt), [xt], create_graph=True)
    ggt, = torch.autograd.grad(gt.sum(), [xt])
    np.testing.assert_allclose(g.detach().numpy(), gt.detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(gg.numpy(), ggt.numpy(), rtol=1e-12)


def test_item_inside_compiled_is_a_clear_error():
    def f(x):
        return x.sum() * float((x * x).sum().item())
    with pytest.raises(RuntimeError, match=r"item\(\) needs a concrete value"):
        tj.compile(f)(tj.tensor(X, requires_grad=True))


def hessian_rows_torch(x):
    h = lambda a: (a.sin() * a).sum()       # noqa: E731
    return torch.func.jacrev(torch.func.grad(h))(torch.tensor(x)).numpy()


def test_gradient_traced_inside_a_graph_is_differentiated():
    # a tj.grad traced into a graph: the graph's own reverse mode (jacrev, the backward of a
    # compiled call) differentiates the gradient, as torch.func's composable grad
    h = lambda a: (a.sin() * a).sum()       # noqa: E731
    expected = hessian_rows_torch(X)
    np.testing.assert_allclose(tj.jacrev(tj.grad(h))(tj.tensor(X)).numpy(), expected,
                               rtol=1e-12, atol=1e-14)
    x = tj.tensor(X, requires_grad=True)
    tj.compile(lambda a: tj.grad(h)(a).sum())(x).backward()
    np.testing.assert_allclose(x.grad.numpy(), expected.sum(0), rtol=1e-12)
