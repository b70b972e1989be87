"""Comparisons of booleans in generated LLVM code (found by the op_db conformance run:
compiled maximum(False, True) gave False). LLVM's i1 read as signed makes true -1, so an
ordered comparison of bools must be unsigned."""
import numpy as np
import pytest

import tracejit as tj

A = np.array([False, True, False, True])
B = np.array([False, False, True, True])


@pytest.mark.parametrize("op, want", [(tj.maximum, A | B), (tj.minimum, A & B)])
def test_compiled_bool_maximum_minimum(op, want):
    fn = tj.compile(lambda x, y: op(x, y))
    got = fn(A, B).numpy()
    assert got.dtype == np.bool_
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(op(tj.tensor(A), tj.tensor(B)).numpy(), want)   # eager
    for a, b in zip(A, B):                       # the scalar (0-d) kernels too
        np.testing.assert_array_equal(fn(np.array(a), np.array(b)).numpy(), op(a, b).numpy())


def test_compiled_bool_maximum_in_a_fused_chain():
    """maximum of two comparisons, fused with its producers, matches NumPy."""
    x = np.linspace(-2, 2, 37, dtype=np.float32)
    fn = tj.compile(lambda v: tj.where(tj.maximum(v > 1, v < -1), v, 0.0))
    np.testing.assert_array_equal(fn(x).numpy(), np.where((x > 1) | (x < -1), x, 0))
