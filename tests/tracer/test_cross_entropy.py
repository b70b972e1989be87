"""cross_entropy against torch.nn.functional.cross_entropy: class-index and probability
targets, inputs [C], [N, C] and [N, C, d...] (the class dimension is 1), weight, ignore_index,
reduction and label_smoothing; values and input gradients, eager and compiled."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

import tracejit as tj

torch = pytest.importorskip("torch")
F = torch.nn.functional

SHAPES = [(5,), (4, 5), (2, 5, 3), (2, 5, 3, 2)]


def _check(x, target, compiled=True, **kw):
    kwt = {k: torch.tensor(v) if isinstance(v, np.ndarray) else v for k, v in kw.items()}
    xt = torch.tensor(x, requires_grad=True)
    want = F.cross_entropy(xt, torch.tensor(target), **kwt)
    want.sum().backward()
    xj = tj.tensor(x, requires_grad=True)
    got = tj.cross_entropy(xj, target, **kw)
    got.sum().backward()
    values, grads = [got.detach()], [xj.grad]
    if compiled:
        values.append(tj.compile(lambda a, t: tj.cross_entropy(a, t, **kw))(x, target))
        grads.append(tj.grad(tj.compile(lambda a, t: tj.cross_entropy(a, t, **kw).sum()))(
            x, target))
    for g in values:
        np.testing.assert_allclose(g.numpy(), want.detach().numpy(), rtol=2e-5, atol=1e-6,
                                   equal_nan=True, err_msg=str(kw))
    for g in grads:
        np.testing.assert_allclose(g.numpy(), xt.grad.numpy(), rtol=1e-4, atol=1e-6,
                                   equal_nan=True, err_msg=str(kw))


def _data(shape, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(np.float32)
    c = shape[0] if len(shape) == 1 else shape[1]
    idx = rng.integers(0, c, shape[:1] + shape[2:] if len(shape) > 1 else ())
    probs = rng.random(shape).astype(np.float32)
    return x, idx.astype(np.int64), probs, rng.random(c).astype(np.float32) + 0.1


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_class_index_targets(shape):
    x, idx, _, w = _data(shape)
    if idx.size > 1:
        idx.reshape(-1)[1] = -1              # ignored, as nanoGPT pads with -1
    for red, eps, weight in itertools.product(("mean", "sum", "none"), (0.0, 0.2), (None, w)):
        # compiled too where the most is going on (the traced program is the same code)
        _check(x, idx, compiled=bool(eps) and weight is not None, reduction=red,
               label_smoothing=eps, weight=weight, ignore_index=-1)
    _check(x, idx.clip(0))                                      # the defaults


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_probability_targets(shape):
    x, _, probs, w = _data(shape, 1)
    for red, eps, weight in itertools.product(("mean", "sum", "none"), (0.0, 0.3), (None, w)):
        _check(x, probs, compiled=bool(eps) and weight is not None, reduction=red,
               label_smoothing=eps, weight=weight)


def test_probability_targets_use_dimension_one_as_classes():
    """Was a silent wrong answer: the last dimension was taken as the class dimension."""
    x = np.arange(6, dtype=np.float32).reshape(2, 3, 1)
    p = np.zeros((2, 3, 1), np.float32)
    p[:, 0] = 1.0
    want = F.cross_entropy(torch.tensor(x), torch.tensor(p)).item()
    assert abs(want - 2.4076) < 1e-3
    assert abs(tj.cross_entropy(tj.tensor(x), p).item() - want) < 1e-5


def test_ignored_targets_and_the_class_zero():
    x, idx, _, w = _data((6, 4), 2)
    _check(x, np.full(6, -100, np.int64))                       # every target ignored: nan
    assert np.isnan(tj.cross_entropy(tj.tensor(x), np.full(6, -100)).item())
    idx[:3] = 0
    _check(x, idx, ignore_index=0, weight=w)                    # ignoring a real class
    _check(x, idx, ignore_index=0, weight=w, label_smoothing=0.1)


def test_negative_infinite_logits_do_not_leak_nan():
    x = np.array([[0.0, -np.inf, 1.0], [2.0, 0.0, -np.inf]], np.float32)
    _check(x, np.array([0, 1]))


def test_int32_targets_and_node_names():
    x, idx, probs, _ = _data((4, 5), 3)
    _check(x, idx.astype(np.int32).astype(np.int64))
    got = tj.cross_entropy(tj.tensor(x), tj.tensor(idx.astype(np.int32)))
    assert abs(got.item() - F.cross_entropy(torch.tensor(x), torch.tensor(idx)).item()) < 1e-5
    xj = tj.tensor(x, requires_grad=True)
    assert tj.cross_entropy(xj, idx).grad_fn.name() == "NllLossBackward0"
    assert tj.cross_entropy(xj, idx, label_smoothing=0.1).grad_fn.name() == "AddBackward0"
    assert tj.cross_entropy(xj, probs).grad_fn.name() == "DivBackward1"


def test_bad_targets_are_clear_errors():
    x = tj.tensor(np.zeros((3, 4), np.float32))
    with pytest.raises(IndexError, match=r"cross_entropy: target 4 is out of bounds.*"
                                         r"test_cross_entropy.py"):
        tj.cross_entropy(x, np.array([0, 4, 1]))
    with pytest.raises(ValueError, match=r"cross_entropy: class indices i64\[4\] do not match"):
        tj.cross_entropy(x, np.array([0, 1, 2, 3]))
    with pytest.raises(TypeError, match="class-index targets must be integers"):
        tj.cross_entropy(x, np.zeros(3, np.float32))
    with pytest.raises(ValueError, match="ignore_index is not supported for probability"):
        tj.cross_entropy(x, np.zeros((3, 4), np.float32), ignore_index=1)
    with pytest.raises(ValueError, match="weight f32\\[3\\] must have one entry per class"):
        tj.cross_entropy(x, np.array([0, 1, 2]), weight=np.ones(3, np.float32))
    with pytest.raises(ValueError, match="reduction must be"):
        tj.cross_entropy(x, np.array([0, 1, 2]), reduction="avg")


def test_new_targets_do_not_retrace_a_compiled_loss():
    """Targets are runtime inputs: the eager range check must not read them while tracing
    (that would make their values part of the trace)."""
    x, idx, _, _ = _data((4, 5), 4)
    f = tj.compile(lambda a, t: tj.cross_entropy(a, t, ignore_index=-1))
    for k in range(3):
        t = np.roll(idx, k)
        want = F.cross_entropy(torch.tensor(x), torch.tensor(t), ignore_index=-1).item()
        assert abs(f(x, t).item() - want) < 1e-5
    assert f.cache_info().misses == 1
