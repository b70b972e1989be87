"""Bernoulli, Categorical, OneHotCategorical, Independent, MultivariateNormal and
kl_divergence against torch.distributions on the same values (float64), with gradients;
argument and support checks; a REINFORCE and a VAE loss under tj.compile."""
import numpy as np
import pytest
import torch

import tracejit as tj
import tracejit.distributions as D
import torch.distributions as TD

RS = np.random.RandomState(1)


def T(a, grad=False):
    return torch.tensor(np.asarray(a, dtype=np.float64), requires_grad=grad)


def J(a, grad=False):
    return tj.tensor(np.asarray(a, dtype=np.float64), requires_grad=grad)


def close(a, b, tol=1e-10):
    np.testing.assert_allclose(a.detach().numpy(), b.detach().numpy(), rtol=tol, atol=tol)


@pytest.mark.parametrize("kind", ["probs", "logits"])
def test_discrete_against_torch(kind):
    raw = RS.rand(2, 4) + 0.1 if kind == "probs" else RS.randn(2, 4)
    for jc, tc, param, val in [
            (D.Categorical, TD.Categorical, raw, None),
            (D.OneHotCategorical, TD.OneHotCategorical, raw, None),
            (D.Bernoulli, TD.Bernoulli, raw / raw.max() * 0.9 if kind == "probs" else raw, None)]:
        jp, tp = J(param, True), T(param, True)
        d, t = jc(**{kind: jp}), tc(**{kind: tp})
        assert d.batch_shape == tuple(t.batch_shape) and d.event_shape == tuple(t.event_shape)
        tj.manual_seed(2)
        x = d.sample((3,))
        assert tuple(x.shape) == (3,) + tuple(t.batch_shape) + tuple(t.event_shape)
        xt = torch.tensor(x.numpy())
        lp, lpt = d.log_prob(x), t.log_prob(xt)
        close(lp, lpt)
        close(d.entropy(), t.entropy())
        close(d.probs, t.probs)
        close(d.logits, t.logits, 1e-9)
        for m in ("mean", "variance", "mode"):
            np.testing.assert_allclose(getattr(d, m).detach().numpy(),
                                       getattr(t, m).detach().numpy(), atol=1e-12)
        (lp.sum() + d.entropy().sum()).backward()
        (lpt.sum() + t.entropy().sum()).backward()
        close(jp.grad, tp.grad, 1e-9)
        close(d.enumerate_support(), t.enumerate_support())
        assert d.expand((5,) + d.batch_shape).batch_shape == (5,) + d.batch_shape


def test_categorical_frequencies_and_shapes():
    p = np.array([[0.1, 0.0, 0.6, 0.3], [0.25, 0.25, 0.25, 0.25]])
    c = D.Categorical(probs=J(p))
    tj.manual_seed(0)
    s = c.sample((20000,)).numpy()
    assert s.dtype == np.int64 and s.shape == (20000, 2)
    freq = np.stack([(s == k).mean(0) for k in range(4)], -1)
    np.testing.assert_allclose(freq, p, atol=0.015)
    assert (s[:, 0] != 1).all()                  # a zero-probability class is never drawn
    assert tuple(c.sample((0,)).shape) == (0, 2)
    one = D.Categorical(logits=J([[0.5]]))
    assert one.sample().numpy().tolist() == [0]
    close(one.log_prob(tj.tensor([0])), TD.Categorical(logits=T([[0.5]])).log_prob(
        torch.tensor([0])))
    # log_prob broadcasts the value against the batch
    lp = c.log_prob(tj.tensor([[0], [2], [3]]))
    close(lp, TD.Categorical(probs=T(p)).log_prob(torch.tensor([[0], [2], [3]])))


def _spd(n, batch=()):
    A = RS.randn(*batch, n, n)
    return A @ np.swapaxes(A, -1, -2) + n * np.eye(n)


@pytest.mark.parametrize("kw", ["covariance_matrix", "precision_matrix", "scale_tril"])
def test_multivariate_normal_against_torch(kw):
    m = _spd(3, (2,))
    m = np.linalg.cholesky(m) if kw == "scale_tril" else m
    loc = RS.randn(3)
    jl, jm, tl, tm = J(loc, True), J(m, True), T(loc, True), T(m, True)
    d = D.MultivariateNormal(jl, **{kw: jm})
    t = TD.MultivariateNormal(tl, **{kw: tm})
    assert d.batch_shape == (2,) and d.event_shape == (3,)
    x = d.rsample((4,))
    assert tuple(x.shape) == (4, 2, 3) and x.requires_grad
    xt = torch.tensor(x.detach().numpy())
    lp, lpt = d.log_prob(x.detach()), t.log_prob(xt)
    close(lp, lpt, 1e-9)
    close(d.entropy(), t.entropy(), 1e-9)
    for m_ in ("mean", "variance", "covariance_matrix", "precision_matrix", "scale_tril"):
        close(getattr(d, m_), getattr(t, m_), 1e-9)
    (lp.sum() + d.entropy().sum()).backward()
    (lpt.sum() + t.entropy().sum()).backward()
    close(jl.grad, tl.grad, 1e-9)
    close(jm.grad, tm.grad, 1e-8)


def test_multivariate_normal_samples_and_independent():
    L = np.linalg.cholesky(_spd(2))
    d = D.MultivariateNormal(J([1.0, -1.0]), scale_tril=J(L))
    tj.manual_seed(4)
    x = d.sample((20000,)).numpy()
    np.testing.assert_allclose(x.mean(0), [1, -1], atol=0.06)
    np.testing.assert_allclose(np.cov(x.T), L @ L.T, rtol=0.06, atol=0.06)
    loc, sc = RS.randn(2, 3), RS.rand(2, 3) + 0.5
    i = D.Independent(D.Normal(J(loc), J(sc)), 1)
    ti = TD.Independent(TD.Normal(T(loc), T(sc)), 1)
    assert i.batch_shape == (2,) and i.event_shape == (3,) and i.has_rsample
    v = i.sample((5,))
    close(i.log_prob(v), ti.log_prob(torch.tensor(v.numpy())))
    close(i.entropy(), ti.entropy())
    assert i.expand((4, 2)).batch_shape == (4, 2)
    with pytest.raises(ValueError, match="reinterpreted_batch_ndims"):
        D.Independent(D.Normal(J(loc), J(sc)), 3)


def test_kl_divergence_against_torch():
    a, b = RS.randn(2, 3), RS.rand(2, 3) + 0.5
    c, e = RS.randn(3), RS.rand(3) + 0.5
    pairs = [("Normal", (a, b), (c, e)), ("Laplace", (a, b), (c, e)),
             ("Exponential", (b,), (e,)), ("Uniform", (a - 3, b + 1), (a - 4, b + 2)),
             ("Bernoulli", (b / 2,), (b[::-1] / 2,)),
             ("Categorical", (RS.rand(2, 3),), (RS.rand(2, 3),)),
             ("OneHotCategorical", (RS.rand(2, 3),), (RS.rand(2, 3),))]
    for name, pp, qp in pairs:
        jp, jq = [J(x, True) for x in pp], [J(x, True) for x in qp]
        tp, tq = [T(x, True) for x in pp], [T(x, True) for x in qp]
        kl = D.kl_divergence(getattr(D, name)(*jp), getattr(D, name)(*jq))
        klt = TD.kl_divergence(getattr(TD, name)(*tp), getattr(TD, name)(*tq))
        close(kl, klt)
        kl.sum().backward()
        klt.sum().backward()
        for x, y in zip(jp + jq, tp + tq):
            close(x.grad, y.grad, 1e-9)
    # infinite where q has no mass, as torch
    kl = D.kl_divergence(D.Uniform(J(0.0), J(2.0)), D.Uniform(J(0.5), J(3.0)))
    assert kl.item() == np.inf
    close(D.kl_divergence(D.Categorical(probs=J([0.5, 0.5, 0.0])),
                          D.Categorical(probs=J([0.2, 0.0, 0.8]))),
          TD.kl_divergence(TD.Categorical(probs=T([0.5, 0.5, 0.0])),
                           TD.Categorical(probs=T([0.2, 0.0, 0.8]))))
    close(D.kl_divergence(D.Uniform(J(a - 1), J(a + 1)), D.Normal(J(c), J(e))),
          TD.kl_divergence(TD.Uniform(T(a - 1), T(a + 1)), TD.Normal(T(c), T(e))))
    # MVN pair, and Independent pairs
    pm, qm = _spd(3, (2,)), _spd(3)
    jp = [J(RS.randn(3), True), J(pm, True)]
    kl = D.kl_divergence(D.MultivariateNormal(jp[0], jp[1]),
                         D.MultivariateNormal(J(c), scale_tril=J(np.linalg.cholesky(qm))))
    tp = [T(jp[0].detach().numpy(), True), T(pm, True)]
    klt = TD.kl_divergence(TD.MultivariateNormal(tp[0], tp[1]),
                           TD.MultivariateNormal(T(c), scale_tril=T(np.linalg.cholesky(qm))))
    close(kl, klt, 1e-9)
    kl.sum().backward()
    klt.sum().backward()
    close(jp[1].grad, tp[1].grad, 1e-8)
    close(D.kl_divergence(D.Independent(D.Normal(J(a), J(b)), 1),
                          D.Independent(D.Normal(J(a * 0), J(b * 0 + 1)), 1)),
          TD.kl_divergence(TD.Independent(TD.Normal(T(a), T(b)), 1),
                           TD.Independent(TD.Normal(T(a * 0), T(b * 0 + 1)), 1)))


def test_register_kl_dispatch_and_missing_pair():
    class MyNormal(D.Normal):
        pass

    with pytest.raises(NotImplementedError, match="Normal and q type Exponential"):
        D.kl_divergence(D.Normal(0.0, 1.0), D.Exponential(1.0))
    # a subclass uses its parent's pair until it has its own
    p, q = MyNormal(J(0.0), J(1.0)), D.Normal(J(1.0), J(2.0))
    close(D.kl_divergence(p, q), D.kl_divergence(D.Normal(J(0.0), J(1.0)), q))

    @D.register_kl(MyNormal, D.Normal)
    def _mine(p, q):
        return p.loc * 0 + 42.0

    assert D.kl_divergence(p, q).item() == 42.0
    with pytest.raises(TypeError, match="Distribution subclass"):
        D.register_kl(int, D.Normal)


def test_argument_and_support_checks():
    with pytest.raises(ValueError, match=r"Expected parameter scale .* of distribution Normal"
                                         r".* to satisfy the constraint GreaterThan"):
        D.Normal(tj.tensor([0.0, 1.0]), tj.tensor([1.0, -1.0]))
    D.Normal(tj.tensor(0.0), tj.tensor(-1.0), validate_args=False)      # checks off
    with pytest.raises(ValueError, match="either `probs` or `logits`"):
        D.Categorical(probs=tj.tensor([0.5, 0.5]), logits=tj.tensor([0.0, 0.0]))
    with pytest.raises(ValueError, match="Expected parameter probs"):
        D.Bernoulli(probs=tj.tensor([1.5]))
    with pytest.raises(ValueError, match="within the support"):
        D.Exponential(tj.tensor(1.0)).log_prob(tj.tensor(-1.0))
    with pytest.raises(ValueError, match="within the support"):
        D.Categorical(logits=tj.zeros(3)).log_prob(tj.tensor(3))
    with pytest.raises(ValueError, match="must be a Tensor"):
        D.Normal(0.0, 1.0).log_prob(0.5)
    with pytest.raises(ValueError, match="not broadcastable"):
        D.Normal(tj.zeros(3), 1.0).log_prob(tj.zeros(2))
    with pytest.raises(ValueError, match="right-most size of value must match"):
        D.MultivariateNormal(tj.zeros(2), tj.eye(2)).log_prob(tj.zeros(3))
    with pytest.raises(ValueError, match="Exactly one of"):
        D.MultivariateNormal(tj.zeros(2))
    with pytest.raises(ValueError, match="positive_definite|PositiveDefinite"):
        D.MultivariateNormal(tj.zeros(2), tj.tensor([[1.0, 2.0], [2.0, 1.0]]))
    with pytest.raises(NotImplementedError, match="rsample"):
        D.Categorical(logits=tj.zeros(3)).rsample()
    assert D.Normal(0.0, 1.0).batch_shape == () and D.Normal(0.0, 1.0).sample().shape == ()
    assert D.Normal(0.0, 1.0).sample().dtype == tj.float32


def test_reinforce_and_vae_losses_compiled():
    logits0, obs = RS.randn(6, 4), RS.randn(6, 3)

    def reinforce(logits, reward_w):
        dist = D.Categorical(logits=logits)
        a = dist.sample()
        reward = (tj.one_hot(a, 4).float() * reward_w).sum(-1)
        return -(dist.log_prob(a) * reward).mean() - 0.01 * dist.entropy().mean(), a

    def vae(mu, log_sigma, x):
        q = D.Normal(mu, log_sigma.exp())
        z = q.rsample()
        recon = D.Normal(z, tj.ones_like(z)).log_prob(x).sum(-1)
        return (D.kl_divergence(q, D.Normal(tj.zeros_like(mu), tj.ones_like(mu))).sum(-1)
                - recon).mean()

    w = tj.tensor([1.0, -1.0, 0.5, 2.0])
    for fn, args in [(reinforce, lambda: [tj.tensor(logits0.astype(np.float32),
                                                    requires_grad=True), w]),
                     (vae, lambda: [tj.tensor(obs.astype(np.float32), requires_grad=True),
                                    tj.tensor(obs.astype(np.float32) * 0.1,
                                              requires_grad=True),
                                    tj.tensor(obs[::-1].astype(np.float32).copy())])]:
        cf = tj.compile(fn)
        res = []
        for f in (fn, cf):
            tj.manual_seed(11)        # the same draws eagerly and compiled
            a = args()
            out = f(*a)
            loss = out[0] if isinstance(out, tuple) else out
            loss.backward()
            res.append((loss.item(), a[0].grad.numpy(), out))
        np.testing.assert_allclose(res[0][0], res[1][0], rtol=1e-5)
        np.testing.assert_allclose(res[0][1], res[1][1], rtol=1e-4, atol=1e-6)
        if fn is reinforce:        # and torch's loss/gradient on the actions drawn
            acts = torch.tensor(res[0][2][1].numpy())
            tl = T(logits0, True)
            td = TD.Categorical(logits=tl)
            rw = (torch.nn.functional.one_hot(acts, 4).double() * T(w.numpy())).sum(-1)
            tloss = -(td.log_prob(acts) * rw).mean() - 0.01 * td.entropy().mean()
            tloss.backward()
            np.testing.assert_allclose(res[0][0], tloss.item(), rtol=1e-5)
            np.testing.assert_allclose(res[0][1], tl.grad.numpy(), rtol=1e-4, atol=1e-6)
