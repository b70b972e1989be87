"""CPU loop kernels whose innermost extent is wider than LLVM's shuffle-vectorized strides, and
whose reads move by 0 or 1 element along it, keep their outer loops scalar (vector(1) in the
loop IR) and a short innermost loop vectorized without unrolling, so LLVM never widens an
outer loop into scatter stores (a per-example outer product, [batch, hidden, classes]).
Narrow innermost extents and transposed reads are left to LLVM. Values are checked against
NumPy for the shapes either side of the rule, sizes 0 and 1 and non-contiguous inputs."""
import numpy as np
import pytest

import tracejit as tj


def _outer(b, i, j):
    return tj.compile(lambda a, g: tj.reshape(a, (b, i, 1)) * tj.reshape(g, (b, 1, j)))


def _loop_lines(text):
    return [ln.strip() for ln in text.splitlines() if ln.strip().startswith("for ")]


def test_outer_product_outer_loops_scalar_inner_left_to_llvm():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((256, 128)).astype(np.float32)
    g = rng.standard_normal((256, 10)).astype(np.float32)
    f = _outer(256, 128, 10)
    lines = _loop_lines(f.lower(a, g).loops)
    assert len(lines) == 3
    assert all(ln.endswith("vector(1) no-unroll:") for ln in lines[:2])
    assert lines[2].endswith("vector(16) no-unroll:")
    np.testing.assert_array_equal(f(a, g).numpy(), a[:, :, None] * g[:, None, :])


def test_transposed_read_keeps_llvm_choice():
    a = np.arange(10 * 4096, dtype=np.float32).reshape(10, 4096)
    f = tj.compile(lambda x: tj.transpose(x, (1, 0)) * 2.0)
    assert "vector(" not in f.lower(a).loops
    np.testing.assert_array_equal(f(a).numpy(), a.T * 2.0)


def test_long_innermost_axis_unrolls_as_before():
    rng = np.random.default_rng(4)
    a = rng.standard_normal((256, 64)).astype(np.float32)
    g = rng.standard_normal((256, 40)).astype(np.float32)
    f = _outer(256, 64, 40)
    lines = _loop_lines(f.lower(a, g).loops)
    assert all(ln.endswith("vector(1) no-unroll:") for ln in lines[:2])
    assert "vector" not in lines[2] and "no-unroll" not in lines[2]
    np.testing.assert_array_equal(f(a, g).numpy(), a[:, :, None] * g[:, None, :])


@pytest.mark.parametrize("j", [2, 3, 8])
def test_narrow_innermost_extent_keeps_llvm_choice(j):
    rng = np.random.default_rng(1)
    a = rng.standard_normal((8192, j)).astype(np.float32)
    b = rng.standard_normal((8192, j)).astype(np.float32)
    f = tj.compile(lambda x, y: tj.tanh(x) * y)
    assert "vector(1)" not in f.lower(a, b).loops
    np.testing.assert_allclose(f(a, b).numpy(), np.tanh(a) * b, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("b,i,j", [(0, 128, 10), (1, 1, 9), (300, 7, 33), (64, 64, 12)])
def test_outer_product_values(b, i, j):
    rng = np.random.default_rng(2)
    a = rng.standard_normal((b, i)).astype(np.float32)
    g = rng.standard_normal((b, j)).astype(np.float32)
    np.testing.assert_array_equal(_outer(b, i, j)(a, g).numpy(), a[:, :, None] * g[:, None, :])


def test_non_contiguous_input_and_per_example_gradient_match_loop():
    rng = np.random.default_rng(3)
    # a transposed (non-contiguous) input feeding a 3-d loop with a wide innermost axis
    x = rng.standard_normal((12, 40, 96)).astype(np.float32)
    xt = np.transpose(x, (0, 2, 1))
    f = tj.compile(lambda v: tj.exp(v) * 2.0)
    np.testing.assert_allclose(f(xt).numpy(), np.exp(xt) * 2.0, rtol=1e-6)

    def loss(params, xi, yi):
        w1, w2 = params
        return ((tj.tanh(xi @ w1) @ w2 - yi) ** 2).mean()
    params = (rng.standard_normal((16, 32)).astype(np.float32) * 0.1,
              rng.standard_normal((32, 10)).astype(np.float32) * 0.1)
    xs = rng.standard_normal((64, 16)).astype(np.float32)
    ys = rng.standard_normal((64, 10)).astype(np.float32)
    per = tj.compile(tj.vmap(tj.grad(loss), in_axes=(None, 0, 0)))(params, xs, ys)
    one = tj.compile(tj.grad(loss))
    for n in (0, 17, 63):
        for got, want in zip(per, one(params, xs[n], ys[n])):
            np.testing.assert_allclose(got.numpy()[n], want.numpy(), rtol=1e-5, atol=1e-6)
