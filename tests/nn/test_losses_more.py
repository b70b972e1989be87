"""F.binary_cross_entropy, smooth_l1_loss, huber_loss, kl_div, cosine_similarity and their
modules (BCELoss, SmoothL1Loss, HuberLoss, KLDivLoss, CosineSimilarity) against torch: values
and gradients for every reduction, eagerly and under tj.compile, including the edge points
(probabilities 0 and 1, |d| = beta, zero targets of kl_div) and torch's errors."""
import numpy as np
import pytest

import tracejit as tj
import tracejit.nn.functional as F

torch = pytest.importorskip("torch")
TF = torch.nn.functional


def _inputs(name, rng):
    if name == "binary_cross_entropy":
        x = rng.uniform(0.01, 0.99, (4, 5))
        x[0, :2] = (0.0, 1.0)                     # the clamped logs
        y = rng.uniform(0, 1, (4, 5))
        y[1, :2] = (0.0, 1.0)
        return x, y
    if name == "kl_div":
        x = np.log(rng.dirichlet(np.ones(5), 4))
        y = rng.dirichlet(np.ones(5), 4)
        y[0, 1] = 0.0                             # 0 log 0 = 0
        return x, y
    x, y = rng.standard_normal((4, 5)), rng.standard_normal((4, 5))
    y[0, 0] = x[0, 0] + 0.5                       # |d| == beta / delta exactly
    return x, y


CASES = [("binary_cross_entropy", {}), ("binary_cross_entropy", dict(weight="w")),
         ("smooth_l1_loss", {}), ("smooth_l1_loss", dict(beta=0.5)),
         ("smooth_l1_loss", dict(beta=0.0)), ("huber_loss", dict(delta=0.5)),
         ("huber_loss", {}), ("kl_div", dict(reduction="batchmean")),
         ("kl_div", dict(reduction="batchmean", log_target=True)), ("kl_div", dict())]


@pytest.mark.filterwarnings("ignore:reduction. 'mean' divides")
@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("name,kw", CASES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(CASES)])
def test_loss_values_and_grads_match_torch(name, kw, reduction, compiled):
    rng = np.random.default_rng(0)
    x, y = _inputs(name, rng)
    if name == "kl_div" and kw.get("log_target"):
        y = np.log(np.maximum(y, 1e-3))
    kw = dict(kw)
    w = rng.uniform(0.5, 2, (5,))
    kw.setdefault("reduction", reduction)
    results = []
    for lib, lib_f in ((torch, TF), (tj, F)):
        xt, yt = lib.tensor(x, requires_grad=True), lib.tensor(y, requires_grad=True)
        args = dict(kw, weight=lib.tensor(w)) if "weight" in kw else kw

        def fn(a, b):
            return getattr(lib_f, name)(a, b, **args)
        out = (tj.compile(fn) if compiled and lib is tj else fn)(xt, yt)
        up = np.linspace(0.5, 1.5, out.numel()).reshape(tuple(out.shape))
        (out * lib.tensor(up)).sum().backward()
        results.append([out.detach().numpy(), xt.grad.numpy(), yt.grad.numpy()])
    if name == "binary_cross_entropy":
        # where x is exactly 0 or 1 torch's target gradient is log(1 - x) - log(x) = +-inf;
        # tracejit's uses the clamped logs of the loss itself (+-100): finite, and documented
        assert np.isinf(results[0][2][0, :2]).all() and np.isfinite(results[1][2]).all()
        results[0][2][0, :2] = results[1][2][0, :2]
    if name == "kl_div" and not kw.get("log_target"):
        # at a zero target torch's target gradient is NaN (d/dt of xlogy at 0); tracejit's is
        # finite (its term is 0 there), documented
        assert np.isnan(results[0][2][0, 1]) and np.isfinite(results[1][2]).all()
        results[0][2][0, 1] = results[1][2][0, 1]
    for got, want in zip(*results[::-1]):
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
@pytest.mark.parametrize("shapes,dim", [(((4, 5), (4, 5)), 1), (((3, 1, 6), (2, 6)), -1),
                                        (((4, 5), (4, 5)), 0)])
def test_cosine_similarity_matches_torch(shapes, dim, compiled):
    rng = np.random.default_rng(1)
    a, b = (rng.standard_normal(s) for s in shapes)
    a[0] = 0.0                                    # a zero vector: the eps clamp
    results = []
    for lib, lib_f in ((torch, TF), (tj, F)):
        at, bt = lib.tensor(a, requires_grad=True), lib.tensor(b, requires_grad=True)

        def fn(p, q):
            return lib_f.cosine_similarity(p, q, dim=dim)
        out = (tj.compile(fn) if compiled and lib is tj else fn)(at, bt)
        out.sum().backward()
        results.append([out.detach().numpy(), at.grad.numpy(), bt.grad.numpy()])
    for got, want in zip(*results[::-1]):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("make", [
    lambda nn: nn.BCELoss(), lambda nn: nn.SmoothL1Loss(beta=0.5),
    lambda nn: nn.HuberLoss(reduction="sum", delta=2.0),
    lambda nn: nn.KLDivLoss(reduction="batchmean"), lambda nn: nn.CosineSimilarity(dim=0)])
def test_modules_match_torch(make):
    rng = np.random.default_rng(2)
    x, y = rng.uniform(0.05, 0.95, (3, 4)), rng.uniform(0.05, 0.95, (3, 4))
    tmod, mod = make(torch.nn), make(tj.nn)
    assert repr(mod) == repr(tmod)
    want = tmod(torch.tensor(x), torch.tensor(y)).numpy()
    np.testing.assert_allclose(mod(tj.tensor(x), tj.tensor(y)).numpy(), want, rtol=1e-12)


def test_errors():
    with pytest.raises(ValueError, match=r"binary_cross_entropy: target size \[3\] must be the "
                       r"same as input size \[2\].*test_losses_more.py"):
        F.binary_cross_entropy(tj.tensor([0.5, 0.5]), tj.tensor([0.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match="huber_loss: reduction must be"):
        F.huber_loss(tj.zeros(2), tj.zeros(2), reduction="avg")
    with pytest.warns(UserWarning, match="'batchmean' divides only by the batch size"):
        F.kl_div(tj.zeros(2, 3), tj.ones(2, 3) / 3)
