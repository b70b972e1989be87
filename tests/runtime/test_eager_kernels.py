"""Large eager ops through compiled kernels (runtime/eager_kernels.py): every dtype, non-contiguous,
broadcast, size-0 and size-1 operands agree with NumPy, and the path is really taken."""
import numpy as np
import pytest

import tracejit as tj
from tracejit.ir import dtypes as dt
from tracejit.runtime import eager_kernels as ek

DTYPES = [np.float16, "bfloat16", np.float32, np.float64, np.int32, np.int64, np.bool_]


@pytest.fixture
def kernels(monkeypatch):
    """Every eligible eager op goes to a kernel (the crossover set to 0 elements)."""
    least = ek.MIN_ELEMENTS
    monkeypatch.setattr(ek, "MIN_ELEMENTS", 0)
    ek.enable(True)
    yield ek.stats
    ek.MIN_ELEMENTS = least
    ek.enable(True)


def _arr(shape, dtype, rng, positive=False):
    dtype = dt.bf16.np if dtype == "bfloat16" else np.dtype(dtype)
    if dtype == np.bool_:
        return rng.random(shape) > 0.5
    if dtype.kind == "i":
        return rng.integers(1 if positive else -50, 50, shape).astype(dtype)
    v = rng.random(shape) + 0.5 if positive else rng.standard_normal(shape)
    return v.astype(dtype)


def _taken(stats, before):
    assert stats["calls"] > before, "the compiled-kernel path was not used"


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_binary_ops_every_dtype(kernels, dtype):
    rng = np.random.default_rng(0)
    a, b = _arr((37, 23), dtype, rng), _arr((37, 23), dtype, rng, positive=True)
    ta, tb = tj.tensor(a), tj.tensor(b)
    before = kernels["calls"]
    pairs = [(tj.maximum(ta, tb), np.maximum(a, b)), (ta == tb, a == b), (ta < tb, a < b)]
    if np.dtype(a.dtype) != np.bool_:
        pairs += [(ta + tb, a + b), (ta * tb, a * b)]
    for got, want in pairs:
        assert got.dtype.np == want.dtype
        np.testing.assert_array_equal(got.numpy(), want)
    _taken(kernels, before)


@pytest.mark.parametrize("dtype", [np.float16, "bfloat16", np.float32, np.float64], ids=str)
def test_float_unary_and_division(kernels, dtype):
    rng = np.random.default_rng(1)
    a, b = _arr((1000,), dtype, rng), _arr((1000,), dtype, rng, positive=True)
    ta, tb = tj.tensor(a), tj.tensor(b)
    before = kernels["calls"]
    f32 = np.float32 if a.dtype.itemsize < 4 else a.dtype
    tol = dict(rtol=1e-2) if a.dtype.itemsize < 4 else dict(rtol=1e-6)
    np.testing.assert_allclose(tj.exp(ta).numpy().astype(f32), np.exp(a.astype(f32)), **tol)
    np.testing.assert_allclose(tj.sqrt(tb).numpy().astype(f32), np.sqrt(b.astype(f32)), **tol)
    np.testing.assert_allclose((ta / tb).numpy().astype(f32), (a.astype(f32) / b.astype(f32)),
                               **tol)
    _taken(kernels, before)


def test_non_contiguous_and_broadcast_operands(kernels):
    rng = np.random.default_rng(2)
    a = rng.standard_normal((64, 48)).astype(np.float32)
    b = rng.standard_normal((48, 64)).astype(np.float32)
    row = rng.standard_normal(64).astype(np.float32)
    ta, tb, trow = tj.tensor(a), tj.tensor(b), tj.tensor(row)
    before = kernels["calls"]
    np.testing.assert_array_equal((ta.T * tb).numpy(), a.T * b)             # transposed
    np.testing.assert_array_equal((ta[::2, ::3] + 1.5).numpy(), a[::2, ::3] + np.float32(1.5))
    np.testing.assert_array_equal((tb + trow).numpy(), b + row)             # broadcast row
    np.testing.assert_array_equal((ta * 0.25).numpy(), a * np.float32(0.25))  # splat scalar
    np.testing.assert_array_equal(tj.where(ta > 0, ta, 0.0).numpy(), np.where(a > 0, a, 0))
    _taken(kernels, before)


@pytest.mark.parametrize("shape", [(0,), (0, 5), (1,), (1, 1), ()])
def test_size_zero_and_one(kernels, shape):
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal(shape).astype(np.float32), rng.standard_normal(shape)
    b = b.astype(np.float32)
    got = tj.tensor(a) * tj.tensor(b) + tj.exp(tj.tensor(a))
    np.testing.assert_allclose(got.numpy(), a * b + np.exp(a), rtol=1e-6)
    assert got.shape == shape


def test_reductions(kernels):
    rng = np.random.default_rng(4)
    a = rng.standard_normal((40, 30)).astype(np.float32)
    i = rng.integers(-9, 9, (40, 30))
    ta, ti = tj.tensor(a), tj.tensor(i)
    before = kernels["calls"]
    np.testing.assert_array_equal(ta.amax(0).numpy(), a.max(0))
    np.testing.assert_array_equal(ta.T.amin(1).numpy(), a.T.min(1))
    np.testing.assert_array_equal(ti.sum(1).numpy(), i.sum(1))
    _taken(kernels, before)
    # a float32 sum stays with the NumPy implementation (no serial float32 accumulator)
    n = kernels["calls"]
    got = ta.sum(0).numpy()
    assert kernels["calls"] == n
    ek.enable(False)
    np.testing.assert_array_equal(got, ta.sum(0).numpy())


def test_autograd_through_kernels(kernels):
    rng = np.random.default_rng(5)
    xv, yv = rng.standard_normal(500), rng.standard_normal(500)
    x, y = tj.tensor(xv, requires_grad=True), tj.tensor(yv, requires_grad=True)
    before = kernels["calls"]
    (tj.exp(x) * y + x / (y * y + 1)).sum().backward()
    _taken(kernels, before)
    np.testing.assert_allclose(x.grad.numpy(), np.exp(xv) * yv + 1 / (yv * yv + 1), rtol=1e-12)
    np.testing.assert_allclose(y.grad.numpy(), np.exp(xv) - 2 * xv * yv / (yv * yv + 1) ** 2,
                               rtol=1e-12)


def test_small_ops_and_disabled_path_stay_numpy():
    before = ek.stats["calls"]
    a = np.linspace(0, 1, 100, dtype=np.float32)
    np.testing.assert_array_equal(tj.exp(tj.tensor(a)).numpy(), np.exp(a))
    n = ek.crossover("exp")            # the measured crossover (runtime/eager_kernels.CROSSOVER)
    assert ek.stats["calls"] == before and n is not None and n > 100
    big = np.linspace(0, 1, n, dtype=np.float32)
    ek.enable(False)
    try:
        np.testing.assert_array_equal(tj.exp(tj.tensor(big)).numpy(), np.exp(big))
        assert ek.stats["calls"] == before
    finally:
        ek.enable(True)
    np.testing.assert_allclose(tj.exp(tj.tensor(big)).numpy(), np.exp(big), rtol=1e-6)
    assert ek.stats["calls"] == before + 1


def test_kernel_shared_across_shapes_of_one_size(kernels):
    """Contiguous operands are passed flat: (6, 4) and (3, 8) share one compiled kernel."""
    a, b = np.ones((6, 4), np.float64), np.ones((3, 8), np.float64)
    tj.tensor(a) - tj.tensor(a)
    n = kernels["compiles"]
    out = tj.tensor(b) - tj.tensor(b)
    assert kernels["compiles"] == n and out.shape == (3, 8)
