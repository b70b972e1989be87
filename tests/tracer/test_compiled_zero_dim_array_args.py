"""A 0-d NumPy array passed to a compiled function promotes as it does eagerly: strong, as a
tensor with dimensions (torch hands a Tensor-with-ndarray op to NumPy, whose 0-d arrays are
strong), not as a 0-d tensor; and calls with a 0-d array and a 0-d tensor of one dtype do not
share a compiled entry."""
from __future__ import annotations

import itertools
import operator

import numpy as np
import pytest
import torch

import tracejit as tj

DT = {"f16": (tj.float16, np.float16, torch.float16), "f32": (tj.float32, np.float32, torch.float32),
      "f64": (tj.float64, np.float64, torch.float64), "i32": (tj.int32, np.int32, torch.int32),
      "i64": (tj.int64, np.int64, torch.int64)}
OPS = [operator.add, operator.mul, operator.sub, lambda a, b: tj.maximum(a, b)]


@pytest.mark.parametrize("xd,yd", list(itertools.product(DT, DT)))
def test_zero_dim_array_argument_promotes_as_eagerly(xd, yd):
    x = tj.tensor(np.array([1.0, 2.0, 3.0]).astype(DT[xd][1]))
    y = np.array(2, dtype=DT[yd][1])
    z = tj.tensor(np.array(3, dtype=DT[yd][1]))          # a 0-d tensor alongside
    for op in OPS:
        want = op(x, y)
        got = tj.compile(op)(x, y)
        assert got.dtype is want.dtype, (xd, yd, op)
        np.testing.assert_array_equal(got.numpy(), want.numpy())
        # with a 0-d tensor in the same op: the array makes it strong too, as eagerly
        f3 = tj.compile(lambda a, b, c: tj.where(a > 1, b, c))
        w3 = tj.where(x > 1, y, z)
        g3 = f3(x, y, z)
        assert g3.dtype is w3.dtype, (xd, yd, "where")
        np.testing.assert_array_equal(g3.numpy(), w3.numpy())


@pytest.mark.parametrize("xd,yd", [(a, b) for a in ("f16", "f32", "f64") for b in ("f16", "f32", "f64")])
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_zero_dim_float_array_argument_as_torch(xd, yd):
    """torch's t + 0-d float ndarray (computed by NumPy) against the compiled call."""
    xv = np.array([1.5, 2.0, 3.25]).astype(DT[xd][1])
    yv = np.array(2.5, dtype=DT[yd][1])
    want = torch.tensor(xv) + yv
    got = tj.compile(lambda a, b: a + b)(tj.tensor(xv), yv)
    assert got.dtype.name == {torch.float16: "f16", torch.float32: "f32",
                              torch.float64: "f64"}[want.dtype]
    np.testing.assert_array_equal(got.numpy(), want.numpy())


def test_array_and_tensor_zero_dim_arguments_do_not_share_an_entry():
    f = tj.compile(lambda a, b: a * b)
    x = tj.ones((2,), dtype=tj.float16)
    assert f(x, np.array(2.0)).dtype is tj.float64
    assert f(x, tj.tensor(2.0, dtype=tj.float64)).dtype is tj.float16
    assert f(x, np.array(2.0)).dtype is tj.float64
    assert f(x.numpy(), np.array(2.0)).dtype is tj.float64       # all arrays (fast key)
    assert f(x.numpy(), tj.tensor(2.0, dtype=tj.float64)).dtype is tj.float16
