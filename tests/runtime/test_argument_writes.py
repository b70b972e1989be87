"""In-place updates of a compiled function's arguments are written back into the caller's
tensors and NumPy arrays after every call, as eagerly (and as torch.compile does); they were
silently dropped."""
from __future__ import annotations

import numpy as np
import pytest

import tracejit as tj


def step(x, y, buf):
    x.mul_(2)
    y[0] = 5.0
    buf[1:] += x[:2]
    return x.sum() + y.sum()


def _args():
    return tj.tensor(np.arange(3.0)), np.zeros(3), tj.tensor(np.ones(3))


def test_arguments_updated_in_place_match_eager_every_call():
    f = tj.compile(step)
    eager, comp = _args(), _args()
    for _ in range(3):                         # the first call traces, the next take the fast path
        want = step(*eager)
        got = f(*comp)
        np.testing.assert_allclose(got.item(), want.item())
        for e, c in zip(eager, comp):
            np.testing.assert_array_equal(np.asarray(c.numpy() if isinstance(c, tj.Tensor) else c),
                                          np.asarray(e.numpy() if isinstance(e, tj.Tensor) else e))
    assert f.cache_info().misses == 1


def test_a_view_argument_writes_through_to_its_base():
    base = tj.tensor(np.arange(6.0).reshape(2, 3))
    tj.compile(lambda r: r.add_(10))(base[1])
    np.testing.assert_array_equal(base.numpy(), [[0, 1, 2], [13, 14, 15]])


def test_version_counter_moves_and_grad_transform_writes_back():
    x = tj.tensor(np.ones(2))
    v0 = x._version[0]
    g = tj.compile(tj.grad(lambda w, x: (x.mul_(3), (w * x).sum())[1]))
    np.testing.assert_array_equal(g(tj.tensor(np.ones(2)), x).numpy(), [3.0, 3.0])
    np.testing.assert_array_equal(x.numpy(), [3.0, 3.0])
    assert x._version[0] > v0


def test_unwritable_targets_are_clear_errors():
    f = tj.compile(lambda x: x.add_(1).sum())
    ro = np.zeros(2)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="read-only NumPy"):
        f(ro)
    w = tj.tensor(np.ones(2), requires_grad=True)
    h = tj.compile(lambda x: x.mul_(2).sum())
    with pytest.raises(RuntimeError, match="requires grad"):
        h(w * 1)                                # a non-leaf that requires grad


def test_jvp_of_a_compiled_function_updating_its_argument_is_refused():
    f = tj.compile(lambda x: x.mul_(2).sum())
    with pytest.raises(RuntimeError, match="updates its arguments"):
        tj.jvp(f, (tj.tensor(np.ones(3)),), (tj.tensor(np.ones(3)),))
