"""The accumulation rule: every float32 sum accumulates in float64 and rounds once, over the
leading, middle and trailing axes and over all of them, in eager mode, in the interpreter and in
generated LLVM code (CUDA: tests/codegen/test_numerics_backends.py). The test data is
ill-conditioned on purpose: 1e8 and many ones, whose float32 running sum stalls at 1e8."""
import numpy as np
import pytest

import tracejit as tj

MODES = ("eager", "interpreter", "llvm")
# 1e8 + 1002 rounds to 100001000 in float32, 1e8 + 1 to 1e8; 1003 rows, not a multiple of the
# LLVM column sum's row unrolling
ONES = 1002


def ill(n: int = ONES + 1, at: int = 0) -> np.ndarray:
    v = np.ones(n, np.float32)
    v[at] = 1e8
    return v


def run(mode, fn, *args):
    if mode == "eager":
        out = fn(*[tj.tensor(a) for a in args])
    else:
        out = tj.compile(fn, backend=mode)(*args)
    return np.asarray(out.numpy())


def rule(x, axis):
    """The documented result: the float64 sum rounded once to float32."""
    return np.asarray(np.sum(x, axis=axis, dtype=np.float64)).astype(np.float32)


def along(axis: int, shape, at: int) -> np.ndarray:
    """An array of `shape` with the ill-conditioned vector along `axis` at every position of the
    other axes (1e8 at index `at`), plus a little per-position variation."""
    n = shape[axis]
    v = ill(n, at).reshape([n if d == axis else 1 for d in range(len(shape))])
    bump = np.arange(np.prod(shape), dtype=np.float32).reshape(shape) % 3 == 0
    return np.broadcast_to(v, shape) + bump.astype(np.float32) * 8


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("axis", [0, 1, 2], ids=["leading", "middle", "trailing"])
@pytest.mark.parametrize("at", [0, ONES // 2, ONES], ids=["first", "middle", "last"])
def test_ill_conditioned_sum_along_each_axis(mode, axis, at):
    shape = [3, 5, 7]
    shape[axis] = ONES + 1
    x = np.ascontiguousarray(along(axis, shape, at))
    got = run(mode, lambda a: a.sum(axis), x)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, rule(x, axis))
    # the naive float32 running sum would be visibly different
    assert not np.array_equal(np.add.accumulate(x, axis=axis, dtype=np.float32).take(-1, axis),
                              rule(x, axis)) or at == ONES


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("axes", [(0, 1), (1, 2), (0, 2), (0, 1, 2)])
def test_ill_conditioned_sum_over_several_axes(mode, axes):
    x = np.ones((10, 10, 10), np.float32)
    x[0, 0, 0] = 1e8
    got = run(mode, lambda a: a.sum(axes), x)
    np.testing.assert_array_equal(got, rule(x, axes))


@pytest.mark.parametrize("mode", MODES)
def test_mean_and_fused_producers_follow_the_rule(mode):
    x = np.ascontiguousarray(along(0, (ONES + 1, 33), 0))
    got = run(mode, lambda a: (a * 2).sum(0) + tj.mean(a, 0), x)
    x2 = x * np.float32(2)
    want = rule(x2, 0) + rule(x, 0) / np.float32(ONES + 1)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("mode", MODES)
def test_row_kernel_sums_follow_the_rule(mode):
    # a max and a sum over the same trailing axis: one row kernel in generated code
    x = np.ascontiguousarray(along(1, (6, ONES + 1), 0))
    got = run(mode, lambda a: tj.amax(a, 1) + a.sum(1), x)
    np.testing.assert_array_equal(got, np.max(x, 1) + rule(x, 1))


@pytest.mark.parametrize("mode", MODES)
def test_column_sums_of_views_and_odd_widths(mode):
    """Leading-axis sums read through a transpose, with several kept axes, and over column
    counts that are not a multiple of the accumulator tile."""
    x = np.ascontiguousarray(along(1, (5, ONES + 1), 3))
    np.testing.assert_array_equal(run(mode, lambda a: a.T.sum(0), x), rule(x, 1))
    np.testing.assert_array_equal(run(mode, lambda a: a.sum(0), x.T), rule(x.T, 0))
    y = np.ascontiguousarray(along(0, (ONES + 1, 3, 700), 1))
    np.testing.assert_array_equal(run(mode, lambda a: a.sum(0), y), rule(y, 0))
    np.testing.assert_array_equal(run(mode, lambda a: a.sum((0, 1)), y), rule(y, (0, 1)))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("shape", [(0, 5), (5, 0), (1, 5), (5, 1), (1, 1), (0, 0)])
def test_column_sums_of_empty_and_unit_shapes(mode, shape):
    x = np.arange(np.prod(shape), dtype=np.float32).reshape(shape) + 0.25
    for axis in (0, 1):
        got = run(mode, lambda a: a.sum(axis), x)
        np.testing.assert_array_equal(got, rule(x, axis))


def test_large_column_sum_is_threaded_and_exact():
    """Big enough for the LLVM kernel to split its columns across threads."""
    x = np.ones((40, 60_001), np.float32)
    x[0] = 1e8
    got = tj.compile(lambda a: a.sum(0))(x).numpy()
    np.testing.assert_array_equal(got, np.full(60_001, np.float32(1e8 + 39)))


@pytest.mark.parametrize("half", [tj.float16, tj.bfloat16])
def test_16_bit_sums_round_once_from_the_same_accumulator(half):
    x = np.ones((300, 8), np.float32)
    x[0] = 2048
    h = x.astype(half.np)
    want = rule(h.astype(np.float32), 0).astype(half.np)
    for mode in MODES:
        got = run(mode, lambda a: a.sum(0), h)
        np.testing.assert_array_equal(got.astype(np.float32), want.astype(np.float32))


def test_column_sum_loop_is_vectorized_in_double():
    asm = tj.compile(lambda a: a.sum(0)).lower(np.ones((64, 4096), np.float32)).asm
    assert "vaddpd" in asm and ("ymm" in asm or "zmm" in asm)
