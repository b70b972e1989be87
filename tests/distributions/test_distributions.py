"""tj.distributions against torch.distributions: log_prob, cdf, entropy, moments and their
gradients exactly on the same values (tracejit's own samples fed to torch), sampling loosely
(moments of many draws at a fixed seed), rsample gradients by float64 central differences
(the same generator seed replays the same standard draws), argument checks, shapes, and use
inside tj.compile."""
import numpy as np
import pytest
import torch

import tracejit as tj
import tracejit.distributions as D
import torch.distributions as TD

RS = np.random.RandomState(0)


def T(a, grad=False):
    return torch.tensor(np.asarray(a, dtype=np.float64), requires_grad=grad)


def J(a, grad=False):
    return tj.tensor(np.asarray(a, dtype=np.float64), requires_grad=grad)


def close(a, b, tol=1e-10):
    a = a.detach().numpy() if isinstance(a, torch.Tensor) else a.detach().numpy()
    b = b.detach().numpy() if isinstance(b, torch.Tensor) else b.numpy()
    np.testing.assert_allclose(a, b, rtol=tol, atol=tol)


# (name, tracejit params, torch params): float64, broadcast between a (2, 3) and a (3,) param
UNIVARIATE = [
    ("Normal", lambda: (RS.randn(2, 3), RS.rand(3) + 0.5)),
    ("Laplace", lambda: (RS.randn(2, 3), RS.rand(3) + 0.5)),
    ("Uniform", lambda: (RS.randn(2, 3) - 2, RS.rand(3) + 0.5)),
    ("Exponential", lambda: (RS.rand(2, 3) + 0.5,)),
]


@pytest.mark.parametrize("name,make", UNIVARIATE, ids=[u[0] for u in UNIVARIATE])
def test_univariate_against_torch(name, make):
    params = make()
    jp, tp = [J(p, True) for p in params], [T(p, True) for p in params]
    d, t = getattr(D, name)(*jp), getattr(TD, name)(*tp)
    assert d.batch_shape == tuple(t.batch_shape) == (2, 3) and d.event_shape == ()
    tj.manual_seed(1)
    x = d.sample((5,))
    assert tuple(x.shape) == (5, 2, 3) and not x.requires_grad
    xt = torch.tensor(x.numpy())
    lp, lpt = d.log_prob(x), t.log_prob(xt)
    close(lp, lpt)
    close(d.cdf(x), t.cdf(xt))
    q = tj.tensor(RS.rand(5, 2, 3))
    close(d.icdf(q), t.icdf(torch.tensor(q.numpy())), 1e-9)
    close(d.entropy(), t.entropy())
    for m in ("mean", "variance", "stddev"):
        close(getattr(d, m), getattr(t, m))
    if name != "Uniform":
        close(d.mode, t.mode)
    # gradients of log_prob + entropy with respect to every parameter
    (lp.sum() + d.entropy().sum()).backward()
    (lpt.sum() + t.entropy().sum()).backward()
    for a, b in zip(jp, tp):
        close(a.grad, b.grad)
    # size 0 and 1
    assert tuple(d.sample((0,)).shape) == (0, 2, 3)
    one = getattr(D, name)(*[p[..., :1] for p in jp])
    assert tuple(one.rsample().shape) == one.batch_shape == (2, 1)


def test_rsample_gradients_by_central_differences():
    # the same tj.Generator seed replays the same standard draws, so x(params) is a function
    cases = [(D.Normal, [0.3, 1.7]), (D.Laplace, [-0.2, 0.8]), (D.Uniform, [0.5, 2.5]),
             (D.Exponential, [1.3])]
    for cls, ps in cases:
        def f(*args):
            x = cls(*args).rsample((7,), generator=tj.Generator().manual_seed(5))
            return (x * x).sum()
        args = [J(p, True) for p in ps]
        f(*args).backward()
        for i in range(len(ps)):
            h = 1e-6
            up = [J(p + h * (j == i)) for j, p in enumerate(ps)]
            dn = [J(p - h * (j == i)) for j, p in enumerate(ps)]
            fd = (f(*up).item() - f(*dn).item()) / (2 * h)
            assert abs(args[i].grad.item() - fd) < 1e-5 * (1 + abs(fd)), (cls, i)


def test_sample_moments_at_a_fixed_seed():
    tj.manual_seed(0)
    n = 20000
    for d, mean, var in [(D.Normal(J([1.0, -2.0]), J([0.5, 2.0])), [1, -2], [0.25, 4]),
                         (D.Laplace(J(0.5), J(1.5)), 0.5, 4.5),
                         (D.Uniform(J(-1.0), J(3.0)), 1.0, 16 / 12),
                         (D.Exponential(J(2.0)), 0.5, 0.25),
                         (D.Bernoulli(probs=J([0.2, 0.9])), [0.2, 0.9], [0.16, 0.09])]:
        x = d.sample((n,)).numpy()
        assert x.shape[0] == n
        np.testing.assert_allclose(x.mean(0), mean, atol=6 * np.sqrt(np.max(var) / n))
        np.testing.assert_allclose(x.var(0), var, rtol=0.06)
    u = D.Uniform(J(-1.0), J(3.0)).sample((1000,)).numpy()
    assert u.min() >= -1 and u.max() < 3
    assert D.Exponential(J(2.0)).sample((1000,)).numpy().min() >= 0
    # generator= gives reproducible draws, independent of the default generator
    g1, g2 = tj.Generator().manual_seed(3), tj.Generator().manual_seed(3)
    a = D.Normal(J(0.0), J(1.0)).sample((4,), generator=g1)
    b = D.Normal(J(0.0), J(1.0)).sample((4,), generator=g2)
    np.testing.assert_array_equal(a.numpy(), b.numpy())
