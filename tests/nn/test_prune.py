"""tj.nn.utils.prune against torch.nn.utils.prune from the same weights: l1_unstructured
(fraction and count, pruned twice: the second prunes among what is left), ln_structured (L2,
L1, inf; dims 0 and 1 of Linear and Conv2d weights), identity, global_unstructured, remove and
is_pruned give torch's weight_orig / weight_mask state_dicts and pruned weights; training the
pruned Linear (eager, and as one compiled step) follows torch, with weight_orig's gradient
masked; random pruning prunes the asked-for count; misuse raises torch's errors."""
import numpy as np
import pytest

import tracejit as tj
import tracejit.nn.utils.prune as JP

torch = pytest.importorskip("torch")
TP = pytest.importorskip("torch.nn.utils.prune")


def _load(t, j):
    j.load_state_dict({k: v.detach().numpy().copy() for k, v in t.state_dict().items()})
    return t, j


def _linear(i=4, o=3):
    return _load(torch.nn.Linear(i, o, dtype=torch.float64), tj.nn.Linear(i, o, dtype=tj.float64))


def _same(t, j, name="weight"):
    ts = {k: v.detach().numpy() for k, v in t.state_dict().items()}
    js = {k: v.detach().numpy() for k, v in j.state_dict().items()}
    assert list(js) == list(ts)
    for k in ts:
        np.testing.assert_allclose(js[k], ts[k], rtol=1e-10, atol=1e-12, err_msg=k)
    np.testing.assert_allclose(getattr(j, name).detach().numpy(),
                               getattr(t, name).detach().numpy(), rtol=1e-10, atol=1e-12)


def test_prune_train_and_remove_like_torch():
    rng = np.random.default_rng(0)
    t, j = _linear()
    for lib, P, m in ((torch, TP, t), (tj, JP, j)):
        P.l1_unstructured(m, "weight", amount=0.3)
        P.l1_unstructured(m, "weight", amount=2)          # among the entries left
        P.ln_structured(m, "weight", amount=1, n=2, dim=0)
        P.identity(m, "bias")
    _same(t, j)
    _same(t, j, "bias")
    assert JP.is_pruned(j) and isinstance(j.weight_orig, tj.nn.Parameter)
    assert int((j.weight_mask.numpy() == 0).sum()) == int((t.weight_mask.numpy() == 0).sum())
    x = rng.standard_normal((5, 4))
    ot, oj = torch.optim.SGD(t.parameters(), lr=0.1), tj.optim.SGD(j.parameters(), lr=0.1)

    @tj.compile
    def step(x):
        oj.zero_grad()
        loss = (j(x) ** 2).sum()
        loss.backward()
        oj.step()
        return loss

    for i in range(4):
        ot.zero_grad()
        loss = (t(torch.tensor(x)) ** 2).sum()
        loss.backward()
        ot.step()
        if i < 2:                                          # eager
            oj.zero_grad()
            (j(tj.tensor(x)) ** 2).sum().backward()
            oj.step()
            np.testing.assert_allclose(j.weight_orig.grad.numpy(),
                                       t.weight_orig.grad.numpy(), rtol=1e-10)
            assert np.all(j.weight_orig.grad.numpy()[j.weight_mask.numpy() == 0] == 0)
        else:                                              # compiled whole step
            np.testing.assert_allclose(step(tj.tensor(x)).numpy(), loss.detach().numpy(),
                                       rtol=1e-10)
        _same(t, j)
    for P, m in ((TP, t), (JP, j)):
        P.remove(m, "weight")
        P.remove(m, "bias")
    _same(t, j)
    assert not JP.is_pruned(j) and isinstance(j.weight, tj.nn.Parameter)
    assert not any(isinstance(h, JP.BasePruningMethod) for h in j._forward_pre_hooks.values())


def test_global_structured_and_random():
    pairs = [_linear(), _linear(3, 3)]
    for P, k in ((TP, 0), (JP, 1)):
        mods = [p[k] for p in pairs]
        P.global_unstructured([(m, "weight") for m in mods] + [(mods[0], "bias")],
                              P.L1Unstructured, amount=0.4)
        P.global_unstructured([(m, "weight") for m in mods], P.L1Unstructured, amount=3)
    for t, j in pairs:
        _same(t, j)
    t, j = _load(torch.nn.Conv2d(3, 4, 3, dtype=torch.float64),
                 tj.nn.Conv2d(3, 4, 3, dtype=tj.float64))
    for P, m in ((TP, t), (JP, j)):
        P.ln_structured(m, "weight", amount=0.5, n=1, dim=1)
        P.ln_structured(m, "weight", amount=1, n=float("inf"), dim=0)
    _same(t, j)
    t, j = _linear(5, 4)
    scores = np.arange(20.0).reshape(4, 5)[::-1].copy()
    TP.l1_unstructured(t, "weight", 0.25, importance_scores=torch.tensor(scores))
    JP.l1_unstructured(j, "weight", 0.25, importance_scores=tj.tensor(scores))
    _same(t, j)
    _, j = _linear(5, 4)
    JP.random_unstructured(j, "weight", amount=0.5)
    assert int((j.weight_mask.numpy() == 0).sum()) == 10
    JP.random_structured(j, "weight", amount=2, dim=0)
    kept_rows = (j.weight_mask.numpy() != 0).any(axis=1)
    assert kept_rows.sum() == 2 and int((j.weight_mask.numpy() == 0).sum()) >= 15
    out = JP.L1Unstructured(amount=1).prune(tj.tensor([3.0, -1.0, 2.0]))
    assert out.tolist() == [3.0, 0.0, 2.0]


def test_misuse_raises():
    _, j = _linear()
    with pytest.raises(ValueError, match="should either be a float"):
        JP.l1_unstructured(j, "weight", amount=1.5)
    with pytest.raises(TypeError, match="Invalid type for amount"):
        JP.l1_unstructured(j, "weight", amount="half")
    with pytest.raises(ValueError, match="smaller than the number"):
        JP.l1_unstructured(j, "weight", amount=13)
    assert isinstance(j.weight, tj.nn.Parameter) and not JP.is_pruned(j)   # put back
    with pytest.raises(ValueError, match="multidimensional"):
        JP.ln_structured(j, "bias", amount=1, n=2, dim=0)
    with pytest.raises(ValueError, match="has to be pruned"):
        JP.remove(j, "weight")
    with pytest.raises(TypeError, match="unstructured"):
        JP.global_unstructured([(j, "weight")], JP.LnStructured, amount=1, n=2, dim=0)
