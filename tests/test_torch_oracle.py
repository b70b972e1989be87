"""PyTorch as an optional oracle: values, gradients, second derivatives and grad_fn names of a
set of programs, eager and compiled. Skipped cleanly when torch is not installed."""
import numpy as np
import pytest

import tracejit as tj
from conftest import assert_close

torch = pytest.importorskip("torch")
LABELS = np.array([1, 4, 0])


def _programs(lib):
    """The same programs written against tracejit (lib=tj) or torch (lib=torch)."""
    F = torch.nn.functional
    is_tj = lib is tj

    def ln(x):
        return tj.layer_norm(x, (x.shape[-1],)) if is_tj else F.layer_norm(x, x.shape[-1:])

    def ce(z, y):
        return tj.cross_entropy(z, y) if is_tj else F.cross_entropy(z, y)
    return {
        "mlp_mse": lambda x, w, y: ((lib.tanh(x @ w) - y) ** 2).mean(),
        "softmax_ce": lambda x, w, y: ce(x @ w, LABELS if is_tj else torch.tensor(LABELS)),
        "layer_norm_lse": lambda x, w, y: (lib.logsumexp(ln(x), -1) - ln(x)[:, 0]).mean(),
        "relu_max_ties": lambda x, w, y: (lib.relu(x) * lib.maximum(x, x)).sum(),
        "var_sigmoid": lambda x, w, y: lib.var(lib.sigmoid(x), 0).sum(),
        "indexing": lambda x, w, y: (x[1:, ::2] * x[np.array([0, 2])][:, :2]).sum()
        if is_tj else (x[1:, ::2] * x[torch.tensor([0, 2])][:, :2]).sum(),
        "softplus_pow": lambda x, w, y: ((tj.softplus(x) if is_tj else F.softplus(x)) ** 3).sum(),
    }


def _inputs():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 4))
    x[0, 0] = 0.0                        # a kink: relu'(0) = 0 in both
    w = rng.standard_normal((4, 5))
    y = rng.standard_normal((3, 5))
    return x, w, y


@pytest.mark.parametrize("name", sorted(_programs(tj)))
def test_values_and_gradients_match_torch(name):
    x, w, y = _inputs()
    f_tj, f_t = _programs(tj)[name], _programs(torch)[name]
    tx, tw = (torch.tensor(a, requires_grad=True) for a in (x, w))
    out_t = f_t(tx, tw, torch.tensor(y))
    gx_t, gw_t = torch.autograd.grad(out_t, (tx, tw), allow_unused=True)
    jx, jw = tj.tensor(x, requires_grad=True), tj.tensor(w, requires_grad=True)
    out_j = f_tj(jx, jw, tj.tensor(y))
    assert_close(out_j, out_t.detach().numpy(), rtol=1e-10, atol=1e-12)
    gx_j, gw_j = tj.autograd.grad(out_j, (jx, jw), allow_unused=True)
    for a, b in ((gx_j, gx_t), (gw_j, gw_t)):
        if b is None:
            assert a is None or np.allclose(a.numpy(), 0)
        else:
            assert_close(a, b.numpy(), rtol=1e-9, atol=1e-12)
    gc = tj.grad(tj.compile(f_tj), argnums=(0, 1))(x, w, y)
    for a, b in zip(gc, (gx_t, gw_t)):
        assert_close(a, b.numpy() if b is not None else np.zeros_like(a.numpy()), rtol=1e-9,
                     atol=1e-12)


def test_hessian_matches_torch():
    x = np.array([0.3, -1.2, 2.0])
    f_t = lambda v: (torch.tanh(v) * v.sin()).sum() * v.exp().sum()    # noqa: E731
    f_j = lambda v: (tj.tanh(v) * tj.sin(v)).sum() * tj.exp(v).sum()   # noqa: E731
    h_t = torch.autograd.functional.hessian(f_t, torch.tensor(x))
    assert_close(tj.hessian(f_j)(tj.tensor(x)), h_t.numpy(), rtol=1e-10)
    assert_close(tj.hessian(tj.compile(f_j))(x), h_t.numpy(), rtol=1e-10)


def test_grad_fn_names_match_torch():
    x = np.ones((2, 3))
    cases = [lambda a: a * 2, lambda a: a + a, lambda a: a.exp(), lambda a: a.sum(),
             lambda a: a.mean(), lambda a: a.tanh(), lambda a: a.sigmoid(), lambda a: a.T,
             lambda a: a[1:], lambda a: -a, lambda a: a / 3, lambda a: a ** 2,
             lambda a: a.reshape(3, 2), lambda a: a.relu(), lambda a: a.softmax(-1)]
    for f in cases:
        t = f(torch.tensor(x, requires_grad=True))
        j = f(tj.tensor(x, requires_grad=True))
        assert j.grad_fn.name() == t.grad_fn.name()
