"""Indices a compiled function only sees when it runs are checked then: an out-of-range index
raises IndexError naming the op and the user's line, as the eager op does, instead of the
generated code's clamped (wrong) read. In-range indices give the eager results."""
from __future__ import annotations

import os

import numpy as np
import pytest

import tracejit as tj
import tracejit.nn.functional as F

HERE = os.path.basename(__file__)


def _x():
    return tj.tensor(np.random.default_rng(0).standard_normal((4, 5)))


CASES = [
    # name, function, good index, bad index, message
    ("indexing", lambda x, t: x[t], [0, 3, -4, -1], [0, -5], "out of bounds for an axis of size 4"),
    ("indexing", lambda x, t: x[t], [2], [4], "out of bounds for an axis of size 4"),
    ("index_select", lambda x, t: x.index_select(1, t), [0, 4], [5], "size 5"),
    ("gather", lambda x, t: tj.gather(x, 1, t), [[0], [4], [2], [1]], [[0], [5], [2], [1]],
     "out of bounds for dim 1 of size 5"),
    ("cross_entropy", lambda x, t: F.cross_entropy(x, t, ignore_index=-1), [0, 4, -1, 2],
     [0, 5, -1, 2], "out of bounds for 5 classes"),
    ("cross_entropy", lambda x, t: F.cross_entropy(x, t), [0, 4, 3, 2], [0, -1, 1, 2],
     "out of bounds for 5 classes"),
    ("nll_loss", lambda x, t: F.nll_loss(x, t), [0, 4, 3, 2], [7, 1, 1, 2], "5 classes"),
    ("one_hot", lambda x, t: F.one_hot(t, 5).sum() + x.sum(), [0, 4], [0, 5], r"\[0, 5\)"),
    ("embedding", lambda x, t: F.embedding(t, x), [[0, 3], [1, 2]], [[0, 4], [1, 2]], "size 4"),
]


@pytest.mark.parametrize("name,fn,good,bad,msg", CASES, ids=[c[0] for c in CASES])
def test_compiled_index_is_checked_when_the_call_runs(name, fn, good, bad, msg):
    x = _x()
    f = tj.compile(fn)
    got = f(x, tj.tensor(np.array(good)))
    np.testing.assert_allclose(got.numpy(), fn(x, tj.tensor(np.array(good))).numpy(),
                               rtol=1e-12, atol=1e-12)
    with pytest.raises((IndexError, RuntimeError), match=msg) as info:
        f(x, tj.tensor(np.array(bad)))
    assert HERE in str(info.value)              # the user's own file:line
    with pytest.raises(info.type):              # eagerly the same class of error (torch's)
        fn(x, tj.tensor(np.array(bad)))
    # the same executable still serves good calls afterwards (same signature: no retrace)
    np.testing.assert_allclose(f(x, tj.tensor(np.array(good))).numpy(), got.numpy())


def test_captured_index_tensor_is_checked_every_call():
    x = _x()
    idx = tj.tensor(np.array([1, 2]))
    f = tj.compile(lambda: x[idx].sum())
    np.testing.assert_allclose(f().item(), x.numpy()[[1, 2]].sum())
    idx.copy_(tj.tensor(np.array([1, 9])))        # the capture changes in place
    with pytest.raises(IndexError, match="size 4"):
        f()


def test_gradient_and_whole_step_are_checked_and_store_nothing_on_failure():
    w = tj.tensor(np.random.default_rng(1).standard_normal((6, 3)), requires_grad=True)
    before = w.detach().numpy().copy()

    @tj.compile
    def step(t):
        loss = (F.embedding(t, w) ** 2).sum()
        loss.backward()
        with tj.no_grad():
            w.sub_(0.1 * w.grad)
        w.grad = None
        return loss

    step(tj.tensor(np.array([0, 5])))
    after_good = w.detach().numpy().copy()
    assert not np.allclose(after_good, before)
    with pytest.raises(IndexError, match="size 6"):
        step(tj.tensor(np.array([0, 6])))
    np.testing.assert_array_equal(w.detach().numpy(), after_good)   # the failed call wrote nothing

    g = tj.compile(tj.grad(lambda x, t: (x[t] ** 2).sum()))
    x = tj.tensor(np.arange(12.0).reshape(4, 3))
    np.testing.assert_allclose(g(x, tj.tensor(np.array([3, 3]))).numpy()[3], 4 * x.numpy()[3])
    with pytest.raises(IndexError, match="size 4"):
        g(x, tj.tensor(np.array([4])))


def test_compiled_call_with_grad_is_checked():
    x = tj.tensor(np.random.default_rng(2).standard_normal((4, 5)), requires_grad=True)
    f = tj.compile(lambda x, t: x[t].sum())
    f(x, tj.tensor(np.array([1]))).backward()
    np.testing.assert_allclose(x.grad.numpy()[1], np.ones(5))
    with pytest.raises(IndexError, match="size 4"):
        f(x, tj.tensor(np.array([8])))


def test_checks_do_not_change_the_users_outputs():
    x = _x()
    f = tj.compile(lambda x, t: (x[t], x[t].sum()))
    a, b = f(x, tj.tensor(np.array([0, 1])))
    assert a.shape == (2, 5) and b.shape == ()
    low = f.lower(x, tj.tensor(np.array([0, 1])))
    assert "i32[]" in low.as_text()          # the one check code is the graph's last output
