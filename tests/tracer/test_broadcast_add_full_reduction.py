"""`x + y` with a 0-d (or all-broadcast) operand: its gradient is a sum over every axis, which
NumPy returns as a scalar, not an array. It became the leaf's `.grad` as such, and the next
backward's in-place accumulation into it crashed (np.copyto on a NumPy scalar)."""
import numpy as np
import pytest

import tracejit as tj

torch = pytest.importorskip("torch")


@pytest.mark.parametrize("op", ["add", "sub"])
@pytest.mark.parametrize("shape", [(), (1,), (1, 1)])
def test_gradient_of_a_fully_broadcast_operand_accumulates_over_two_backwards(shape, op):
    got = []
    for lib in (tj, torch):
        s = lib.tensor(np.full(shape, 0.5, np.float32), requires_grad=True)
        v = lib.tensor(np.array([0.3, -0.1], np.float32), requires_grad=True)
        a = v * 2.0 + s if op == "add" else v * 2.0 - s
        loss = (a * 3.0).sum() + (a * 5.0).sum()
        loss.backward(retain_graph=True)
        first = s.grad.numpy().copy()
        loss.backward()
        got.append((first, s.grad.numpy().copy(), v.grad.numpy().copy()))
        if lib is tj:
            assert type(s.grad._data) is np.ndarray
    for a, b in zip(*got):
        np.testing.assert_allclose(a, b)
