"""Gamma, Beta and Dirichlet against torch.distributions (float64, values and gradients on
tracejit's samples), their KL pairs, sample moments at a fixed seed, and tj.compile."""
import numpy as np
import pytest
import torch

import tracejit as tj
import tracejit.distributions as D
import torch.distributions as TD

RS = np.random.RandomState(2)


def close(a, b, tol=1e-9):
    np.testing.assert_allclose(a.detach().numpy(), b.detach().numpy(), rtol=tol, atol=tol)


def _pairs():
    a, b = RS.rand(2, 3) * 3 + 0.2, RS.rand(3) * 2 + 0.3
    c = RS.rand(2, 4) * 3 + 0.2
    return [("Gamma", (a, b)), ("Beta", (a, b)), ("Dirichlet", (c,))]


@pytest.mark.parametrize("name,params", _pairs(), ids=["Gamma", "Beta", "Dirichlet"])
def test_against_torch(name, params):
    jp = [tj.tensor(p, requires_grad=True) for p in params]
    tp = [torch.tensor(p, requires_grad=True) for p in params]
    d, t = getattr(D, name)(*jp), getattr(TD, name)(*tp)
    assert d.batch_shape == tuple(t.batch_shape) and d.event_shape == tuple(t.event_shape)
    tj.manual_seed(3)
    x = d.sample((4,))
    assert tuple(x.shape) == (4,) + d.batch_shape + d.event_shape and not x.requires_grad
    xt = torch.tensor(x.numpy())
    lp, lpt = d.log_prob(x), t.log_prob(xt)
    close(lp, lpt)
    close(d.entropy(), t.entropy())
    for m in ("mean", "variance", "mode"):
        close(getattr(d, m), getattr(t, m))
    (lp.sum() + d.entropy().sum()).backward()
    (lpt.sum() + t.entropy().sum()).backward()
    for a, b in zip(jp, tp):
        close(a.grad, b.grad, 1e-8)
    q = [p[..., ::-1].copy() for p in params]
    kl = D.kl_divergence(d, getattr(D, name)(*[tj.tensor(p) for p in q]))
    klt = TD.kl_divergence(t, getattr(TD, name)(*[torch.tensor(p) for p in q]))
    close(kl, klt)
    for a in jp:
        a.grad = None
    kl.sum().backward()
    for a, b in zip(jp, tp):
        b.grad = None
    klt.sum().backward()
    for a, b in zip(jp, tp):
        close(a.grad, b.grad, 1e-8)
    r = d.rsample((2,))
    assert r.requires_grad and tuple(r.shape) == (2,) + d.batch_shape + d.event_shape
    assert d.expand((5,) + d.batch_shape).sample().shape == (5,) + d.batch_shape + d.event_shape


def test_sample_moments_and_support():
    tj.manual_seed(0)
    n = 8000
    conc = np.array([0.3, 1.0, 4.0, 60.0])
    g = D.Gamma(tj.tensor(conc), tj.tensor(2.0, dtype=tj.float64)).sample((n,)).numpy()
    assert (g > 0).all()
    np.testing.assert_allclose(g.mean(0), conc / 2, rtol=0.05)
    np.testing.assert_allclose(g.var(0), conc / 4, rtol=0.12)
    b = D.Beta(tj.tensor([0.5, 2.0]), tj.tensor([0.5, 3.0])).sample((n,)).numpy()
    assert b.dtype == np.float32 and ((b > 0) & (b < 1)).all()
    np.testing.assert_allclose(b.mean(0), [0.5, 0.4], atol=0.015)
    np.testing.assert_allclose(b.var(0), [0.125, 0.04], rtol=0.1)
    s = D.Dirichlet(tj.tensor([1.0, 2.0, 3.0])).sample((n,)).numpy()
    np.testing.assert_allclose(s.sum(-1), 1, atol=1e-5)
    np.testing.assert_allclose(s.mean(0), [1 / 6, 2 / 6, 3 / 6], atol=0.015)
    assert D.Gamma(1.0, 1.0).sample((0,)).shape == (0,)
    with pytest.raises(ValueError, match="Expected parameter concentration"):
        D.Dirichlet(tj.tensor([1.0, -1.0]))
    with pytest.raises(ValueError, match="within the support"):
        D.Beta(tj.tensor(1.0), tj.tensor(1.0)).log_prob(tj.tensor(1.5))


def test_rsample_implicit_gradients():
    # d x / d alpha at a fixed CDF value: -(dP/dalpha) / (dP/dx), P = torch.special.gammainc
    from tracejit.distributions.gamma import _dx_dalpha
    a = np.array([0.05, 0.5, 1.0, 3.0, 12.0, 80.0, 80.0])
    x = np.array([1e-4, 0.4, 2.0, 5.0, 9.0, 70.0, 95.0])
    h = 1e-6
    P = lambda a_, x_: torch.special.gammainc(torch.tensor(a_), torch.tensor(x_)).numpy()
    want = -(P(a + h, x) - P(a - h, x)) / (P(a, x * (1 + h)) - P(a, x * (1 - h))) * x
    np.testing.assert_allclose(_dx_dalpha(tj.tensor(x), tj.tensor(a)).numpy(), want, rtol=1e-6)
    # the reparametrized draws' gradients are unbiased: d E[x] / d params, loosely
    tj.manual_seed(5)
    al = tj.tensor([0.4, 2.0, 7.0], dtype=tj.float64, requires_grad=True)
    rate = tj.tensor(1.5, dtype=tj.float64, requires_grad=True)
    D.Gamma(al, rate).rsample((2000,)).mean(0).sum().backward()
    np.testing.assert_allclose(al.grad.numpy(), 1 / 1.5, rtol=0.1)
    np.testing.assert_allclose(rate.grad.item(), -9.4 / 1.5 ** 2, rtol=0.1)
    c = tj.tensor([2.0, 3.0, 5.0], dtype=tj.float64, requires_grad=True)
    D.Dirichlet(c).rsample((2000,))[:, 0].mean().backward()
    np.testing.assert_allclose(c.grad.numpy(), [8 / 100, -2 / 100, -2 / 100], atol=0.012)


def test_compiled_beta_loss_and_sample():
    def f(a, b, x):
        d = D.Beta(a, b)
        # (rsample compiles too, but its lgamma/digamma series costs seconds to compile)
        return -d.log_prob(x).mean() + D.kl_divergence(d, D.Beta(b, a)).mean(), d.sample((3,))

    a0, b0 = np.array([0.7, 2.0]), np.array([1.5, 0.4])
    x = tj.tensor(np.array([0.2, 0.9]))
    outs = []
    for fn in (f, tj.compile(f)):
        tj.manual_seed(7)           # the same draws eagerly and compiled
        a, b = tj.tensor(a0, requires_grad=True), tj.tensor(b0, requires_grad=True)
        loss, s = fn(a, b, x)
        loss.backward()
        outs.append((loss.item(), a.grad.numpy(), b.grad.numpy(), s.numpy()))
    for u, v in zip(outs[0][:3], outs[1][:3]):
        np.testing.assert_allclose(u, v, rtol=1e-9)
    s = outs[1][3]
    assert s.shape == (3, 2) and ((s > 0) & (s < 1)).all()
