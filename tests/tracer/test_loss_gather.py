"""cross_entropy / nll_loss with class-index targets read each target's log-probability with a
gather (its gradient a scatter into the rows), not a one-hot compare over every class: the
graph, values and gradients against torch (ignore_index, weight, label_smoothing, reductions,
extra dims, -inf logits elsewhere and at ignored targets), eager and compiled, and the compiled
bounds check of the targets."""
import re

import numpy as np
import pytest
import torch

import tracejit as tj

F = tj.nn.functional
TF = torch.nn.functional


def _case(shape, rs):
    x = rs.randn(*shape).astype(np.float32)
    c = shape[1] if len(shape) > 1 else shape[0]
    tshape = shape[:1] + shape[2:] if len(shape) > 1 else ()
    t = rs.randint(0, c, size=tshape).astype(np.int64)
    flat_t = t.reshape(-1)
    if flat_t.size > 1:
        flat_t[1] = -1                        # ignored
    if len(shape) == 2 and shape[0] >= 2:
        x[0, (t.reshape(-1)[0] + 1) % c] = -np.inf     # -inf at a class that is not the target
        x[1, :] = -np.inf                     # an ignored row that would give nan
        x[1, 0] = 0.0
    return x, t


CASES = [(5, 7), (3, 4, 2), (2, 3, 2, 2), (6,), (0, 4)]
KWARGS = [dict(), dict(reduction="sum"), dict(reduction="none"), dict(weight=True),
          dict(weight=True, reduction="none"), dict(label_smoothing=0.2),
          dict(weight=True, label_smoothing=0.1, reduction="sum")]


def _kw(kw, c, rs, lib):
    kw = dict(kw)
    if kw.get("weight"):
        w = rs.rand(c).astype(np.float32) + 0.5
        kw["weight"] = torch.tensor(w) if lib is torch else tj.tensor(w)
    return kw


# (nll_loss has no label_smoothing)
LOSS_KW = [("cross_entropy", kw) for kw in KWARGS] + \
    [("nll_loss", kw) for kw in KWARGS if "label_smoothing" not in kw]


@pytest.mark.parametrize("shape", CASES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("loss,kw", LOSS_KW,
                         ids=[f"{n}-{'-'.join(k) or 'plain'}" for n, k in LOSS_KW])
def test_values_and_grads_vs_torch(shape, kw, loss):
    rs = np.random.RandomState(len(shape) * 7 + len(kw))
    x, t = _case(shape, rs)
    c = shape[1] if len(shape) > 1 else shape[0]
    kw_t, kw_j = _kw(kw, c, np.random.RandomState(1), torch), _kw(kw, c,
                                                                 np.random.RandomState(1), tj)
    if loss == "nll_loss":
        x = np.asarray(TF.log_softmax(torch.tensor(x), dim=1 if len(shape) > 1 else 0))
    tx = torch.tensor(x, requires_grad=True)
    want = getattr(TF, loss)(tx, torch.tensor(t), ignore_index=-1, **kw_t)
    want.sum().backward()
    for compiled in (False, True):
        jx = tj.tensor(x, requires_grad=True)

        def f(tt):
            out = getattr(F, loss)(jx, tt, ignore_index=-1, **kw_j)
            out.sum().backward()
            return out

        got = (tj.compile(f) if compiled else f)(tj.tensor(t))
        np.testing.assert_allclose(got.detach().numpy(), want.detach().numpy(), rtol=2e-5,
                                   atol=1e-6, equal_nan=True)
        np.testing.assert_allclose(jx.grad.numpy(), tx.grad.numpy(), rtol=2e-5, atol=1e-6,
                                   equal_nan=True)


def test_graph_gathers_the_targets():
    """No class-sized compare of the targets: the forward reads one value per target."""
    x = tj.tensor(np.random.RandomState(0).randn(4, 10).astype(np.float32),
                  requires_grad=True)

    @tj.compile
    def f(t, w):
        loss = F.cross_entropy(x, t, weight=w, ignore_index=-1)
        loss.backward()
        return loss

    text = f.lower(tj.tensor(np.array([1, 2, -1, 9])), tj.ones(10)).as_text()
    assert re.search(r"= take_along .*: f32\[4\]", text)
    # (the backward's select against the class index is fused into the log_softmax backward:
    # tests/ir/test_take_along.py)
    fwd = tj.compile(lambda t, w: F.cross_entropy(x.detach(), t, weight=w, ignore_index=-1))
    assert not re.search(r"= eq .*: bool\[4,10\]",
                         fwd.lower(tj.tensor(np.array([1, 2, -1, 9])), tj.ones(10)).as_text())
    # the targets are checked once (take_along and the weights' gather add no second check)
    assert len(re.findall(r"= ge %t, ", text)) == 1


def test_compiled_out_of_bounds_target_raises():
    x = tj.tensor(np.zeros((3, 4), np.float32))
    f = tj.compile(lambda t: F.cross_entropy(x, t, ignore_index=-1))
    assert np.isfinite(f(tj.tensor(np.array([0, -1, 3]))).item())
    with pytest.raises(IndexError, match="target is out of bounds for 4 classes"):
        f(tj.tensor(np.array([0, 4, 3])))
    with pytest.raises(IndexError, match="target is out of bounds for 4 classes"):
        f(tj.tensor(np.array([0, -2, 3])))
