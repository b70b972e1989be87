"""The composed ops on an eager device tensor (the strict fake CuPy): results and gradients
stay on the device, constructors (`eye`, `new_*`) follow the device, and the values match the
CPU's."""
from __future__ import annotations

import numpy as np
import pytest

import fakecupy
import tracejit as tj


def _on_device(t: tj.Tensor) -> np.ndarray:
    assert isinstance(t._data, fakecupy.ndarray), type(t._data)
    return t._data.get()


OPS = [
    ("masked_fill", lambda x: x.masked_fill(x > 0, -1.0)),
    ("tril", lambda x: tj.tril(x, 1)),
    ("flip", lambda x: x.flip(0, 1)),
    ("roll", lambda x: x.roll((1, 2), (0, 1))),
    ("repeat", lambda x: x.repeat(2, 1)),
    ("split", lambda x: x.split([1, 3], 1)[1]),
    ("einsum", lambda x: tj.einsum("ij,kj->ik", x, x)),
    ("norm", lambda x: x.norm(dim=1)),
    ("std", lambda x: x.std(0)),
    ("diag", lambda x: tj.diag(x[0])),
    ("gather", lambda x: x.gather(1, x.new_tensor([[0, 3], [1, 1], [2, 0]], dtype=tj.int64))),
]


@pytest.mark.parametrize("name,fn", OPS, ids=[n for n, _ in OPS])
def test_composed_ops_stay_on_the_device(fake_gpu, name, fn):
    a = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    xc = tj.tensor(a, requires_grad=True)
    xg = tj.tensor(a, device="cuda", requires_grad=True)
    want, got = fn(xc), fn(xg)
    np.testing.assert_allclose(_on_device(got), want.detach().numpy(), rtol=1e-6, atol=1e-6)
    got.sum().backward()
    want.sum().backward()
    np.testing.assert_allclose(_on_device(xg.grad), xc.grad.numpy(), rtol=1e-6, atol=1e-6)


def test_constructors_and_indices_follow_the_device(fake_gpu):
    x = tj.ones(2, 3, device="cuda")
    assert _on_device(x.new_zeros(2)).tolist() == [0.0, 0.0]
    assert _on_device(x.new_full((1,), 5.0)).tolist() == [5.0]
    np.testing.assert_array_equal(_on_device(tj.eye(2, device="cuda")), np.eye(2))
    idx = tj.tensor(np.array([2, 0]), device="cuda")
    np.testing.assert_array_equal(_on_device(tj.one_hot(idx, 3)), [[0, 0, 1], [1, 0, 0]])
    rows, cols = tj.where(tj.tensor(np.array([[0, 1], [1, 0]]), device="cuda"))
    assert _on_device(rows).tolist() == [0, 1] and _on_device(cols).tolist() == [1, 0]
