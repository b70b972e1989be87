"""CPU float max/min reductions along a contiguous last axis run with one accumulator per
vector lane, then a balanced tree across the lanes (a masked softmax row's max ran as a scalar
dependency chain: LLVM turned max(acc, where(m, x, -inf)) into a select of the accumulator and
did not vectorize it). max/min are order-free (NaN wins, -0 < +0), so the lane schedule gives
the same bits as the serial one that small kernels keep: checked bit for bit, with NaN, signed
zeros, infinities, row lengths around the lane width, and against NumPy."""
import numpy as np
import pytest

import tracejit as tj

F = tj.nn.functional


def _special_rows(n: int, rows: int, dtype, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, n)).astype(dtype)
    x[0, n // 2] = np.nan                          # NaN in the middle of a row
    x[1, n - 1] = np.nan                           # ... in the tail past the last full group
    x[2] = -0.0
    x[2, n // 3] = 0.0                             # -0 and +0 only
    x[3] = 0.0
    x[3, -1] = -0.0
    x[4] = -np.inf
    x[5] = np.inf
    x[5, 0] = -np.inf
    x[6, :] = -np.inf
    x[6, n - 1] = 3.0
    return x


@pytest.mark.parametrize("op", ["max", "min"])
@pytest.mark.parametrize("n", [16, 17, 31, 33, 64, 100])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_lane_reduction_matches_serial_bits_and_numpy(op, n, dtype):
    small = _special_rows(n, 8, dtype, n)              # 8 rows: a small kernel, serial loop
    big = np.tile(small, (-(-40000 // small.size), 1))  # above the small-kernel size: lanes
    f = tj.compile(lambda x: tj.amax(x, dim=-1) if op == "max" else tj.amin(x, dim=-1))
    assert "lanes" not in f.lower(small).loops
    assert "lanes" in f.lower(big).loops
    want = f(small).numpy()
    got = f(big).numpy()
    bits = np.uint32 if dtype == np.float32 else np.uint64
    for r in range(0, got.shape[0], small.shape[0]):
        np.testing.assert_array_equal(got[r:r + 8].view(bits), want.view(bits))
    ref = np.max(big, axis=-1) if op == "max" else np.min(big, axis=-1)
    np.testing.assert_array_equal(got, ref)                # NaN where NumPy has NaN


def test_masked_softmax_row_max_is_vectorized_and_correct():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 4, 67, 67)).astype(np.float32)
    mask = np.tril(np.ones((67, 67), bool))

    def sm(x, m):
        return F.softmax(tj.where(m, x * 0.17, float("-inf")), dim=-1)
    f = tj.compile(sm)
    loops = f.lower(x, mask).loops
    assert "acc lanes" in loops and "vector(16) no-unroll" in loops
    got = f(x, mask).numpy()
    a = np.where(mask, x.astype(np.float64) * np.float32(0.17), -np.inf)
    e = np.exp(a - a.max(-1, keepdims=True))
    np.testing.assert_allclose(got, e / e.sum(-1, keepdims=True), rtol=2e-6, atol=1e-7)


def test_reduction_over_two_trailing_axes_and_keepdims():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((300, 5, 40)).astype(np.float32)
    x[7, 2, 39] = np.nan
    f = tj.compile(lambda a: (tj.amax(a, dim=(1, 2), keepdim=True), tj.amin(a, dim=(1, 2))))
    assert "lanes" in f.lower(x).loops
    mx, mn = f(x)
    np.testing.assert_array_equal(mx.numpy(), np.max(x, axis=(1, 2), keepdims=True))
    np.testing.assert_array_equal(mn.numpy(), np.min(x, axis=(1, 2)))


def test_non_contiguous_input_and_max_gradient():
    rng = np.random.default_rng(5)
    base = rng.standard_normal((64, 700)).astype(np.float32)
    x = base[:, ::2]                                       # a strided view, 350 per row
    f = tj.compile(lambda a: tj.amax(a, dim=-1))
    np.testing.assert_array_equal(f(x).numpy(), x.max(-1))
    t = tj.tensor(np.ascontiguousarray(x), requires_grad=True)
    g = tj.compile(tj.grad(lambda a: tj.amax(a, dim=-1).sum()))(t).detach().numpy()
    want = (x == x.max(-1, keepdims=True)).astype(np.float32)
    np.testing.assert_array_equal(g, want / want.sum(-1, keepdims=True))
