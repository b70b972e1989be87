"""Every primitive and composite, forward: eager and compiled against NumPy."""
import numpy as np
import pytest

import tracejit as tj
from cases import CASES, make_inputs
from conftest import assert_close


def _tensors(arrays):
    return [tj.tensor(a) for a in arrays]


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_eager_matches_numpy(name, dtype):
    fn, ref, specs = CASES[name]
    xs = make_inputs(specs, dtype)
    out = fn(*_tensors(xs))
    want = ref(*xs)
    tol = 2e-5 if dtype == np.float32 else 1e-12
    assert_close(out, np.asarray(want), rtol=tol, atol=tol)
    assert out.dtype.np == (np.float32 if name == "cast" else dtype)   # no silent promotion


@pytest.mark.parametrize("name", sorted(CASES))
def test_compiled_matches_numpy(name):
    fn, ref, specs = CASES[name]
    xs = make_inputs(specs, np.float32, seed=1)
    out = tj.compile(fn)(*xs)
    assert_close(out, np.asarray(ref(*xs)), rtol=2e-5, atol=2e-5)


ELEMENTWISE = ["neg", "exp", "log", "sin", "cos", "tanh", "sqrt", "abs", "sign", "add", "mul",
               "div", "maximum", "where", "sigmoid", "relu"]
SHAPES = [(0,), (1,), (1, 1), (0, 3), (5, 1), (2, 3, 4)]


@pytest.mark.parametrize("name", ELEMENTWISE)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_edge_shapes(name, shape):
    fn, ref, specs = CASES[name]
    xs = make_inputs([(shape, dom) for _, dom in specs], np.float32)
    assert_close(fn(*_tensors(xs)), ref(*xs), rtol=2e-5, atol=2e-5)
    assert_close(tj.compile(fn)(*xs), ref(*xs), rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("name", ["add", "mul", "exp", "tanh", "maximum", "sum", "matmul"])
def test_non_contiguous_inputs(name):
    fn, ref, specs = CASES[name]
    base = make_inputs([((s[-1], s[0]) if len(s) == 2 else s, d) for s, d in specs], np.float32)
    xs = [b.T if b.ndim == 2 else b[::-1] for b in base]      # transposed / reversed views
    assert all(not x.flags.c_contiguous for x in xs if x.ndim == 2)
    assert_close(fn(*_tensors(xs)), ref(*xs), rtol=2e-5, atol=2e-5)
    assert_close(tj.compile(fn)(*xs), ref(*xs), rtol=2e-5, atol=2e-5)


def test_size_zero_reductions():
    x = np.zeros((0, 3), np.float32)
    assert_close(tj.tensor(x).sum(0), x.sum(0))
    assert_close(tj.compile(lambda a: a.sum(0))(x), x.sum(0))
    with pytest.raises(ValueError, match="max: reduction over an empty axis"):
        tj.tensor(x).amax(0)


def test_broadcasting_follows_numpy():
    a = np.arange(6, dtype=np.float32).reshape(2, 1, 3)
    b = np.arange(4, dtype=np.float32).reshape(4, 1)
    assert_close(tj.tensor(a) * tj.tensor(b), a * b)
    assert_close(tj.compile(lambda x, y: x - y)(a, b), a - b)


def test_type_promotion():
    f32 = tj.tensor(np.ones(3, np.float32))
    f64 = tj.tensor(np.ones(3, np.float64))
    i32 = tj.tensor(np.ones(3, np.int32))
    i64 = tj.tensor(np.ones(3, np.int64))
    assert (f32 * 2.0).dtype is tj.float32          # Python scalars are weak
    assert (f32 + f64).dtype is tj.float64
    assert (i32 + i64).dtype is tj.int64
    assert (i64 * 2.5).dtype is tj.float32          # int tensor * float scalar -> default float
    assert (i32 + f32).dtype is tj.float32
    assert (i64 / i64).dtype is tj.float32          # true division
    assert (i64 + 1).dtype is tj.int64
    assert tj.tensor(3.0).dtype is tj.float32
    assert tj.tensor(np.float64(3.0)).dtype is tj.float64
    assert tj.tensor(np.ones(2)).dtype is tj.float64


def test_indexing_forms():
    x = np.arange(60, dtype=np.float32).reshape(3, 4, 5)
    t = tj.tensor(x)
    for key in [1, -1, (slice(None), 2), (Ellipsis, 1), (None, 1, slice(1, 3)),
                (slice(None), np.array([0, 3, 3])), (np.array([0, 2]), slice(None), np.array([1, 4])),
                (np.array([[0], [2]]), np.array([1, 3])), x[..., 0] > 20, (1, slice(None, None, 2))]:
        assert_close(t[key], x[key])
        if not (isinstance(key, np.ndarray) and key.dtype == bool):
            assert_close(tj.compile(lambda a: a[key])(x), x[key])


def test_setitem_matches_numpy():
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    t = tj.tensor(x)
    t[1] = 7.0
    t[:, 2] = tj.tensor(np.array([1, 2, 3], np.float32))
    want = x.copy()
    want[1] = 7.0
    want[:, 2] = [1, 2, 3]
    assert_close(t, want)


def test_constructors():
    assert_close(tj.zeros(2, 3), np.zeros((2, 3), np.float32))
    assert_close(tj.ones((2,)), np.ones(2, np.float32))
    assert_close(tj.full((2, 2), 3.5), np.full((2, 2), 3.5, np.float32))
    assert_close(tj.arange(5), np.arange(5))
    assert tj.arange(5).dtype is tj.int64
    assert_close(tj.zeros_like(tj.ones(3)), np.zeros(3, np.float32))
    assert_close(tj.ones_like(tj.zeros(2, dtype=tj.float64)), np.ones(2))
    assert_close(tj.linspace(0, 1, 5), np.linspace(0, 1, 5).astype(np.float32))
