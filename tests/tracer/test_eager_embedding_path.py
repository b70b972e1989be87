"""The eager embedding lookup C[X] and its gradient (#14, makemore's step): an integer index
tensor outside any trace is checked and wrapped on the host, so the lookup is one gather (was
a cast/compare/add/select around it), and the gradient's scatter-add goes through NumPy's fast
one-dimensional `ufunc.at` path with the same sums in the same order."""
import numpy as np
import pytest

import tracejit as tj
from tracejit.ir.prims_gather import _impl_scatter_add


@pytest.mark.parametrize("negative", [False, True])
def test_lookup_is_one_gather_and_matches_numpy(applied_primitives, negative):
    rng = np.random.default_rng(0)
    table = rng.standard_normal((27, 10))
    X = rng.integers(-27 if negative else 0, 27, (53, 3))
    C = tj.tensor(table, requires_grad=True)
    idx = tj.tensor(X)
    calls = applied_primitives
    emb = C[idx]
    assert calls == ["gather"], calls
    np.testing.assert_array_equal(emb.detach().numpy(), table[X])
    g = rng.standard_normal((53, 3, 10))
    emb.backward(tj.tensor(g))
    want = np.zeros_like(table)
    np.add.at(want, X, g)
    np.testing.assert_allclose(C.grad.numpy(), want, rtol=1e-12, atol=1e-12)
    assert idx.numpy().tolist() == X.tolist()      # the user's index is not modified


def test_lookup_matches_torch_with_two_index_arrays():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    v = rng.standard_normal((5, 6, 4)).astype(np.float32)
    i = rng.integers(-5, 5, (7,))
    j = rng.integers(-6, 6, (7,))
    x = tj.tensor(v, requires_grad=True)
    y = x[tj.tensor(i), tj.tensor(j)]
    tx = torch.tensor(v, requires_grad=True)
    ty = tx[torch.tensor(i), torch.tensor(j)]
    np.testing.assert_array_equal(y.detach().numpy(), ty.detach().numpy())
    g = rng.standard_normal(ty.shape).astype(np.float32)
    y.backward(tj.tensor(g))
    ty.backward(torch.tensor(g))
    np.testing.assert_allclose(x.grad.numpy(), tx.grad.numpy(), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("bad", [27, -28])
def test_out_of_range_lookup_is_a_clear_error(bad):
    C = tj.tensor(np.ones((27, 10)), requires_grad=True)
    X = np.zeros((4, 3), np.int64)
    X[2, 1] = bad
    with pytest.raises(IndexError, match=f"index {bad} is out of bounds for an axis of size 27"):
        C[tj.tensor(X)]


def test_empty_and_size_one_lookups():
    C = tj.tensor(np.arange(6.0).reshape(3, 2), requires_grad=True)
    e = C[tj.tensor(np.zeros((0,), np.int64))]
    assert e.shape == (0, 2)
    e.sum().backward()
    np.testing.assert_array_equal(C.grad.numpy(), np.zeros((3, 2)))
    C.grad = None
    one = C[tj.tensor(np.array([-1]))]
    np.testing.assert_array_equal(one.detach().numpy(), [[4.0, 5.0]])
    one.sum().backward()
    np.testing.assert_array_equal(C.grad.numpy(), [[0, 0], [0, 0], [1, 1]])


def test_lookup_inside_compile_still_wraps_negative_indices():
    rng = np.random.default_rng(2)
    table = rng.standard_normal((9, 3))
    X = rng.integers(-9, 9, (4, 2))

    @tj.compile
    def f(c, x):
        return (c[x] * 2.0).sum()
    c = tj.tensor(table)
    np.testing.assert_allclose(f(c, tj.tensor(X)).numpy(), (table[X] * 2).sum(), rtol=1e-12)


CASES = [((27, 10), 0, (53, 3)), ((4, 5, 6), 1, (7,)), ((4, 5, 6), 2, (3, 2)), ((5,), 0, (9,)),
         ((0, 3), 0, (0,)), ((3, 0), 0, (4,)), ((3, 4), 1, (0,)), ((2, 3, 4), 0, (5,)),
         ((1, 1), 1, (1,))]


@pytest.mark.parametrize("shape,axis,ishape", CASES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64])
def test_scatter_add_matches_numpy_add_at_bit_for_bit(shape, axis, ishape, dtype):
    rng = np.random.default_rng(3)
    n = shape[axis]
    idx = rng.integers(-n, n, ishape) if n else np.zeros(ishape, np.int64)
    upd = (rng.standard_normal(shape[:axis] + ishape + shape[axis + 1:]) * 10).astype(dtype)
    want = np.zeros(shape, dtype)
    np.add.at(want, (slice(None),) * axis + (idx,), upd)
    # contiguous, Fortran-ordered and strided (non-contiguous) updates
    strided = np.repeat(upd, 2, axis=-1)[..., ::2] if upd.ndim else upd
    for u in (upd, np.asfortranarray(upd), strided):
        got = _impl_scatter_add(idx, u, axis, shape)
        assert got.dtype == dtype and got.shape == shape
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("bad", [5, -6])
def test_scatter_add_out_of_range_raises(bad):
    # a flat index past its row would land in the next row: it must be an error instead
    with pytest.raises(IndexError, match="scatter_add: index .* out of range for an axis of "
                                         "size 5"):
        _impl_scatter_add(np.array([0, bad]), np.ones((2, 3)), 0, (5, 3))
