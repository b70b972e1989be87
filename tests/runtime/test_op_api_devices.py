"""The new ops on an eager device tensor (the strict fake CuPy): argmax/argmin, max(dim) and
its gradient, cross_entropy, // and % compute on the device and never mix in a host array."""
from __future__ import annotations

import numpy as np

import fakecupy
import tracejit as tj


def _on_device(t: tj.Tensor) -> np.ndarray:
    assert isinstance(t._data, fakecupy.ndarray), type(t._data)
    return t._data.get()


def test_selection_division_and_cross_entropy_stay_on_the_device(fake_gpu):
    rng = np.random.default_rng(0)
    a = rng.standard_normal((4, 6)).astype(np.float32)
    x = tj.tensor(a, device="cuda", requires_grad=True)
    assert (_on_device(x.argmax(1)) == a.argmax(1)).all()
    assert (_on_device(tj.argmin(x)) == a.argmin()).all()
    vals, idx = x.max(0)
    np.testing.assert_array_equal(_on_device(vals), a.max(0))
    assert (_on_device(idx) == a.argmax(0)).all()
    vals.sum().backward()
    want = np.zeros_like(a)
    want[a.argmax(0), np.arange(6)] = 1
    np.testing.assert_array_equal(_on_device(x.grad), want)
    n = tj.tensor(np.array([7, -7, 5]), device="cuda")
    assert _on_device(n // 2).tolist() == [3, -4, 2] and _on_device(n % -3).tolist() == [-2, -1, -1]
    target = tj.tensor(np.array([0, 5, -1, 2]), device="cuda")
    loss = tj.cross_entropy(x, target, ignore_index=-1, label_smoothing=0.1)
    logp = a - np.log(np.exp(a).sum(1, keepdims=True))
    keep = np.array([0, 1, 3])
    nll = -logp[keep, [0, 5, 2]].mean()
    smooth = -logp[keep].sum(1).mean() / 6
    np.testing.assert_allclose(_on_device(loss), 0.9 * nll + 0.1 * smooth, rtol=1e-5)
