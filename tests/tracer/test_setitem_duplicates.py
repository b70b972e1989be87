"""x[idx] = v and x[idx] += v with a position named twice: the last value wins, eagerly and
compiled, as torch's index_put_ without accumulate (was: the values were summed)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import tracejit as tj

IDX = ([0, 0, 1, 0], [1, 1, 2, 1])


def _torch(v):
    t = torch.zeros(2, 3, dtype=torch.float64)
    t[IDX] = torch.tensor(v)
    u = torch.arange(6, dtype=torch.float64).reshape(2, 3)
    u[IDX] += 1.0
    return t.numpy(), u.numpy()


def _ours(v):
    y = tj.zeros(2, 3, dtype=tj.float64)
    y[IDX] = v if isinstance(v, tj.Tensor) else tj.tensor(v)
    u = tj.arange(6, dtype=tj.float64).reshape(2, 3)
    u[IDX] += 1.0
    return y, u


@pytest.mark.parametrize("compiled", [False, True])
def test_duplicate_positions_take_the_last_value(compiled):
    v = np.array([1.0, 2.0, 3.0, 4.0])
    fn = tj.compile(_ours) if compiled else _ours
    y, u = fn(v)
    want_y, want_u = _torch(v)
    np.testing.assert_array_equal(y.numpy(), want_y)
    np.testing.assert_array_equal(u.numpy(), want_u)


def test_gradient_of_an_overwritten_value_is_zero():
    """Only the value that lands receives a gradient (torch gives every duplicate one, which
    its docs call undefined); checked against central differences."""
    def loss(v):
        y = tj.zeros(2, 3, dtype=tj.float64)
        y[IDX] = v * v
        return (y * tj.tensor(np.arange(1.0, 7.0).reshape(2, 3))).sum()
    v = np.array([1.0, 2.0, 3.0, 4.0])
    g = tj.grad(loss)(tj.tensor(v)).numpy()
    eps, num = 1e-6, np.zeros(4)
    for i in range(4):
        d = np.zeros(4)
        d[i] = eps
        num[i] = (loss(tj.tensor(v + d)).item() - loss(tj.tensor(v - d)).item()) / (2 * eps)
    np.testing.assert_allclose(g, num, atol=1e-6)
    assert g[0] == 0 and g[1] == 0          # positions (0,1) named thrice: only the last lands
