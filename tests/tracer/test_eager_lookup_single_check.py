"""The eager lookup C[X] (#14, makemore's step) checks its host index once: the gather's own
implementation checks the bounds (the eager error names the op and the user's file:line) and
wraps negative indices; the tracer adds no bounds check or wrap of its own. Indices a compiled
function sees are still checked when the call runs."""
import os

import numpy as np
import pytest

import tracejit as tj
from tracejit.tracer import indexing

HERE = os.path.basename(__file__)


def _count_host_checks(monkeypatch):
    calls = []
    real = indexing._check_bounds

    def counting(idx, n):
        calls.append(n)
        return real(idx, n)
    monkeypatch.setattr(indexing, "_check_bounds", counting)
    return calls


@pytest.mark.parametrize("dtype", [np.int64, np.int32])
def test_lookup_has_no_tracer_side_bounds_check(monkeypatch, dtype):
    rng = np.random.default_rng(0)
    table = rng.standard_normal((27, 10))
    X = rng.integers(-27, 27, (53, 3)).astype(dtype)
    C = tj.tensor(table, requires_grad=True)
    calls = _count_host_checks(monkeypatch)
    emb = C[tj.tensor(X)]
    assert calls == []
    np.testing.assert_array_equal(emb.detach().numpy(), table[X])
    g = rng.standard_normal((53, 3, 10))
    emb.backward(tj.tensor(g))
    want = np.zeros_like(table)
    np.add.at(want, X, g)
    np.testing.assert_allclose(C.grad.numpy(), want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("bad", [27, -28])
def test_the_one_check_names_the_op_index_and_line(bad):
    C = tj.tensor(np.ones((27, 10)), requires_grad=True)
    X = np.zeros((4, 3), np.int64)
    X[1, 2] = bad
    with pytest.raises(IndexError, match=f"gather: index {bad} is out of bounds for an axis of "
                                         f"size 27") as info:
        C[tj.tensor(X)]
    assert HERE in str(info.value)


def test_size_zero_and_one_and_non_contiguous_lookups():
    base = np.arange(12.0).reshape(6, 2)
    C = tj.tensor(base, requires_grad=True)
    assert C[tj.tensor(np.zeros((0, 3), np.int64))].shape == (0, 3, 2)
    np.testing.assert_array_equal(C[tj.tensor(np.array([-6]))].detach().numpy(), base[[0]])
    X = np.array([[5, 0, 3, 1], [2, 4, -1, 0]])[:, ::2]        # a strided index
    np.testing.assert_array_equal(C[tj.tensor(X)].detach().numpy(), base[X])
    col = tj.tensor(base.T.copy())[1]           # a view of a row: rows of a 1-D table
    np.testing.assert_array_equal(col[tj.tensor(X)].detach().numpy(), base[:, 1][X])
    with pytest.raises(IndexError, match="gather"):
        tj.tensor(np.zeros((0, 2)))[tj.tensor(np.array([0]))]


def test_compiled_lookup_is_still_checked_when_it_runs():
    C = tj.tensor(np.arange(8.0).reshape(4, 2))
    f = tj.compile(lambda c, x: c[x].sum())
    np.testing.assert_allclose(f(C, tj.tensor(np.array([0, -1]))).item(), 0 + 1 + 6 + 7)
    with pytest.raises(IndexError, match="out of bounds for an axis of size 4") as info:
        f(C, tj.tensor(np.array([0, 4])))
    assert HERE in str(info.value)


@pytest.mark.parametrize("axis", [0, 1])
@pytest.mark.parametrize("bad", [3, -4, 100])
def test_gather_impl_names_the_bad_index_on_any_axis(axis, bad):
    from tracejit.ir.prims_gather import _impl_gather
    x = np.arange(9.0).reshape(3, 3)
    good = np.array([[0, -3], [2, -1]], np.int32)
    np.testing.assert_array_equal(_impl_gather(x, good, axis), np.take(x, good, axis=axis))
    idx = np.array([[0, 1], [bad, 2]])[:, ::-1]              # non-contiguous
    with pytest.raises(IndexError, match=f"gather: index {bad} is out of bounds for an axis of "
                                         f"size 3"):
        _impl_gather(x, idx, axis)
