"""Softshrink / Hardshrink (F. and modules), the in-place activations F.relu_, elu_,
leaky_relu_, hardtanh_, threshold_, selu_, celu_ (and inplace=True of F.selu / celu /
threshold, which the start tree ignored) against torch: values, gradients (through the
in-place update of a non-leaf and of a view), the returned object, eager and compiled, float64
and float32; torch's leaf error; and F.gumbel_softmax's distribution, shape and
straight-through gradient (tracejit draws its own random numbers)."""
import numpy as np
import pytest
import torch

import tracejit as tj
import tracejit.nn.functional as F

TOL = {"float64": (1e-12, 1e-14), "float32": (1e-6, 1e-7)}


def _x(shape=(4, 5)):
    x = np.random.default_rng(0).standard_normal(shape) * 2
    x.flat[:6] = [0.5, -0.5, 0.0, 1.0, -1.0, 2.0]       # the kinks (lambd, bounds, 0)
    return x


SHRINK = [("hardshrink", {}), ("hardshrink", {"lambd": 1.0}), ("softshrink", {}),
          ("softshrink", {"lambd": 2.0}), ("softshrink", {"lambd": 0.0})]


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("shape", [(4, 5), (1,), (0, 3), ()])
@pytest.mark.parametrize("name,kw", SHRINK, ids=[f"{n}-{i}" for i, (n, _) in enumerate(SHRINK)])
def test_shrink_matches_torch(name, kw, shape, dtype, compiled):
    x = _x((4, 5)).reshape(-1)[:int(np.prod(shape))].reshape(shape)
    res = []
    for lib, lf in ((torch, torch.nn.functional), (tj, F)):
        xt = lib.tensor(x, dtype=getattr(lib, dtype), requires_grad=True)
        fn = (lambda t: getattr(lf, name)(t, **kw))
        out = (tj.compile(fn) if compiled and lib is tj else fn)(xt)
        (out * lib.tensor(np.linspace(1, 2, out.numel()).reshape(tuple(out.shape)),
                          dtype=getattr(lib, dtype))).sum().backward()
        res.append([out.detach().numpy(), xt.grad.numpy()])
    for got, want in zip(*res[::-1]):
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, *TOL[dtype])


def test_shrink_modules_and_errors():
    for cls, kw in (("Hardshrink", {}), ("Softshrink", {"lambd": 1.5})):
        tm, m = getattr(torch.nn, cls)(**kw), getattr(tj.nn, cls)(**kw)
        assert repr(m) == repr(tm)
        x = _x()
        np.testing.assert_array_equal(m(tj.tensor(x)).numpy(), tm(torch.tensor(x)).numpy())
    with pytest.raises(RuntimeError, match=r"softshrink: lambda must be greater or equal to "
                       r"0, but found to be -1"):
        F.softshrink(tj.randn(3), -1.0)


INPLACE = [("relu_", {}), ("elu_", {"alpha": 0.7}), ("leaky_relu_", {"negative_slope": 0.2}),
           ("hardtanh_", {"min_val": -1.0, "max_val": 2.0}), ("threshold_", (0.5, -3.0)),
           ("selu_", {}), ("celu_", {"alpha": 1.5}),
           ("selu", {"inplace": True}), ("celu", {"inplace": True}),
           ("threshold", (0.5, -3.0, True))]


def _call(lf, name, kw, t):
    return getattr(lf, name)(t, *kw) if isinstance(kw, tuple) else getattr(lf, name)(t, **kw)


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("view", [False, True], ids=["whole", "view"])
@pytest.mark.parametrize("name,kw", INPLACE, ids=[n for n, _ in INPLACE])
def test_inplace_activations_match_torch(name, kw, view, dtype, compiled):
    x = _x()
    res = []
    for lib, lf in ((torch, torch.nn.functional), (tj, F)):
        xt = lib.tensor(x, dtype=getattr(lib, dtype), requires_grad=True)

        def fn(leaf):
            y = leaf * 1.0                              # a non-leaf: in place is allowed
            target = y[1:3] if view else y
            r = _call(lf, name, kw, target)
            assert r is target                           # the same tensor, updated
            return y * 1.5
        out = (tj.compile(fn) if compiled and lib is tj else fn)(xt)
        (out * lib.tensor(np.linspace(1, 2, out.numel()).reshape(tuple(out.shape)),
                          dtype=getattr(lib, dtype))).sum().backward()
        res.append([out.detach().numpy(), xt.grad.numpy()])
    for got, want in zip(*res[::-1]):
        np.testing.assert_allclose(got, want, *TOL[dtype])


@pytest.mark.parametrize("name,kw", INPLACE[:7], ids=[n for n, _ in INPLACE[:7]])
def test_inplace_bumps_version_and_refuses_leaf(name, kw):
    y = tj.tensor(_x()) * 1.0
    v = list(y._version)                          # (tracejit keeps the counter in a list)
    _call(F, name, kw, y)
    assert list(y._version) > v
    want = _call(torch.nn.functional, name, kw, torch.tensor(_x()))
    np.testing.assert_allclose(y.numpy(), want.numpy(), 1e-12)
    with pytest.raises(RuntimeError):
        _call(torch.nn.functional, name, kw, torch.ones(3, requires_grad=True))
    with pytest.raises(RuntimeError, match="leaf"):
        _call(F, name, kw, tj.ones(3, requires_grad=True))


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
@pytest.mark.parametrize("dim", [-1, 0])
def test_gumbel_softmax_distribution_and_straight_through(dim, compiled):
    tj.manual_seed(0)
    logits = np.log(np.array([0.1, 0.2, 0.3, 0.4]))
    n = 4000
    lg = np.broadcast_to(logits, (n, 4)) if dim == -1 else np.broadcast_to(logits, (n, 4)).T
    x = tj.tensor(np.ascontiguousarray(lg), requires_grad=True)

    def hard(t):
        return F.gumbel_softmax(t, tau=0.5, hard=True, dim=dim)
    y = (tj.compile(hard) if compiled else hard)(x)
    yn = y.detach().numpy()
    assert yn.shape == lg.shape
    assert set(np.unique(yn)) <= {0.0, 1.0}
    np.testing.assert_array_equal(yn.sum(axis=dim), np.ones(n))
    # each class wins with probability softmax(logits) (Gumbel-max), any tau
    freq = yn.mean(axis=0 if dim == -1 else 1)
    assert np.abs(freq - np.array([0.1, 0.2, 0.3, 0.4])).max() < 0.035, freq
    # straight-through: the gradient is the soft sample's (not zero as a one_hot's)
    w = np.random.default_rng(1).standard_normal(lg.shape)
    (y * tj.tensor(w)).sum().backward()
    g = x.grad.numpy()
    assert np.abs(g).max() > 0
    np.testing.assert_allclose(g.sum(axis=dim), 0.0, atol=1e-9)   # softmax's jacobian rows
    soft = F.gumbel_softmax(tj.tensor(lg), tau=1.0, dim=dim).numpy()
    assert (soft > 0).all() and np.allclose(soft.sum(axis=dim), 1.0)
    assert len(np.unique(soft.round(6))) > 100           # a fresh draw per row
    a, b = (F.gumbel_softmax(tj.tensor(lg[:3])).numpy() for _ in range(2))
    assert not np.allclose(a, b)                           # a fresh draw per call


def test_gumbel_softmax_straight_through_equals_soft_gradient():
    # same seed -> same noise: the hard sample's gradient is exactly the soft sample's
    lg = np.random.default_rng(2).standard_normal((5, 3))
    w = np.random.default_rng(3).standard_normal((5, 3))
    grads = []
    for hard in (False, True):
        tj.manual_seed(7)
        x = tj.tensor(lg, requires_grad=True)
        (F.gumbel_softmax(x, tau=0.7, hard=hard) * tj.tensor(w)).sum().backward()
        grads.append(x.grad.numpy())
    np.testing.assert_allclose(grads[1], grads[0], 1e-12, 1e-14)
    with pytest.raises(TypeError, match="gumbel_softmax: logits must be floating point"):
        F.gumbel_softmax(tj.tensor([1, 2]))
