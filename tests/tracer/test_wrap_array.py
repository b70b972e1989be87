"""tensor_base.wrap_array: the one fast constructor of a Tensor from an array, used by the eager
fast path (dispatch) and by a cached compiled call's outputs (runtime/compile.py)."""
from __future__ import annotations

import numpy as np

import tracejit as tj
from tracejit.tracer.tensor_base import wrap_array


def _plain(t, data=None) -> None:
    assert type(t) is tj.Tensor
    assert t.is_leaf and not t.requires_grad and t.grad is None and t.grad_fn is None
    if data is not None:
        assert t._data is data                      # wraps, does not copy


def test_wrap_array_is_a_plain_tensor_of_the_registered_class():
    a = np.arange(6.0).reshape(2, 3)
    t = wrap_array(a)
    _plain(t, a)
    np.testing.assert_array_equal((t * 2).numpy(), a * 2)
    t.requires_grad_(True)
    (t * t).sum().backward()
    np.testing.assert_array_equal(t.grad.numpy(), 2 * a)


def test_eager_and_cached_compiled_results_are_plain_tensors():
    x = tj.tensor(np.arange(4.0))
    _plain(x + x)
    f = tj.compile(lambda v: (v * 2 + 1, v.sum()))
    for _ in range(3):                              # the first call traces; later ones are cached
        y, s = f(x)
        _plain(y)
        _plain(s)
        np.testing.assert_array_equal(y.numpy(), np.arange(4.0) * 2 + 1)
        assert float(s) == 6.0
    g = tj.compile(lambda v: v * 3)
    for _ in range(3):
        _plain(g(x))
