"""A compiled call's result built from an input that requires grad only through ops the passes
fold for size 0 (scatter_add / index_add of an empty source) requires grad, as torch's, and
backward gives that input its empty zero gradient (it came back with requires_grad=False and
backward raised)."""
import numpy as np
import pytest
import torch

import tracejit as tj

CASES = {
    "scatter_add_into_empty": lambda lib, s, w: lib.zeros(0, 3).scatter_add(
        0, lib.zeros(0, 3, dtype=lib.int64), s),
    "index_add_into_empty": lambda lib, s, w: lib.zeros(0, 3).index_add(
        0, lib.zeros(0, dtype=lib.int64), s),
    "scatter_add_into_full": lambda lib, s, w: lib.ones(2, 3).scatter_add(
        0, lib.zeros(0, 3, dtype=lib.int64), s) * w,
}


@pytest.mark.parametrize("name", list(CASES))
def test_folded_empty_path_requires_grad_like_torch(name):
    fn = CASES[name]
    w0 = np.arange(6.0).reshape(2, 3)
    res = []
    for lib in (torch, tj):
        s = lib.zeros(0, 3, requires_grad=True)
        w = lib.tensor(w0, requires_grad=True)
        call = tj.compile(lambda s, w: fn(tj, s, w)) if lib is tj else \
            (lambda s, w: fn(torch, s, w))
        for _ in range(2):                      # the trace, then the cached call
            s.grad = w.grad = None
            y = call(s, w)
            assert y.requires_grad and y.grad_fn is not None, name
            (y * y).sum().backward()
        res.append((tuple(y.shape), y.detach().numpy().copy(), s.grad.numpy().copy(),
                    None if w.grad is None else w.grad.numpy().copy()))
        with lib.no_grad():
            assert not call(s, w).requires_grad
    (ts, tv, tsg, twg), (js, jv, jsg, jwg) = res
    assert ts == js and tsg.shape == jsg.shape == (0, 3)
    np.testing.assert_array_equal(jv, tv)
    if twg is None:
        assert jwg is None or not jwg.any()
    else:
        np.testing.assert_allclose(jwg, twg, rtol=1e-6)
