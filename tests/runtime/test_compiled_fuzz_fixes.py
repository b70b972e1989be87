"""Regression tests for the silent wrongs the compiled-vs-torch fuzzer (tests/compiled_fuzz_run.py)
found, each as small as the bug: compiled values, dtypes and gradients against torch."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import tracejit as tj


@pytest.mark.parametrize("body", [lambda L, x, s: x + s * 2, lambda L, x, s: x - 3 * s,
                                  lambda L, x, s: x * (s + 1) + s * s])
def test_python_scalar_argument_with_a_number_stays_weak(body):
    # a traced Python float times a number promoted a float32 tensor to float64
    x = np.array([1.0, 2.0, 3.0], np.float32)
    got = tj.compile(lambda x, s: body(tj, x, s))(x, 0.5)
    want = body(torch, torch.tensor(x), 0.5)
    assert got.dtype == tj.float32
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-6)
