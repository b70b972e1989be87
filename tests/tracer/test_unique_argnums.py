"""Repeated argnums are an error for every transform that takes them, as in torch.func
(before, tj.grad(f, argnums=(0, 0)) returned two blocks and jacobian one per repeat)."""
import numpy as np
import pytest

import tracejit as tj


def _f(x, y):
    return (x * y).sum()


X = np.arange(1.0, 4.0)
Y = np.arange(2.0, 5.0)


@pytest.mark.parametrize("make", [
    lambda: tj.grad(_f, argnums=(0, 0)),
    lambda: tj.value_and_grad(_f, argnums=(1, -1)),
    lambda: tj.jacobian(_f, argnums=(0, 0)),
    lambda: tj.grad(tj.compile(_f), argnums=(0, 0)),
])
def test_repeated_argnums_raise(make):
    with pytest.raises(ValueError, match=r"argnums elements must be unique.*test_unique_argnums"):
        make()(tj.tensor(X), tj.tensor(Y))


def test_distinct_argnums_keep_their_order():
    gy, gx = tj.grad(_f, argnums=(1, 0))(tj.tensor(X), tj.tensor(Y))
    np.testing.assert_allclose(gy.numpy(), X)
    np.testing.assert_allclose(gx.numpy(), Y)
    gy, gx = tj.grad(tj.compile(_f), argnums=(1, 0))(tj.tensor(X), tj.tensor(Y))
    np.testing.assert_allclose(gy.numpy(), X)
    np.testing.assert_allclose(gx.numpy(), Y)
