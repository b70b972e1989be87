"""A compiled call's outputs that no gradient reaches contribute nothing to backward, as in
torch (compiled fuzzer seed 90062): fed zero cotangents instead, log(0) or a division by 0 in
an unused output gave 0 * inf = NaN in every gradient."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

import tracejit as tj  # noqa: E402


def _program(lib, x, w):
    y = x * w
    return (y * 2).sum(), x.log(), y / (x - x), (w * 3).sum()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_unused_outputs_with_infinite_derivatives_give_no_nan(dtype):
    xs = np.array([0.0, 1.0, 2.0], dtype)
    ws = np.array([0.5, -1.0, 3.0], dtype)
    f = tj.compile(lambda x, w: _program(tj, x, w))
    # which outputs the loss reads: one, another, two of them, all finite ones
    for picks in ([0], [1], [0, 3], [3], [0, 1, 3]):
        got = []
        for lib, fn in ((tj, f), (torch, lambda x, w: _program(torch, x, w))):
            x = lib.tensor(xs, requires_grad=True)
            w = lib.tensor(ws, requires_grad=True)
            outs = fn(x, w)
            sum(outs[k].sum() for k in picks).backward()
            got.append((x.grad, w.grad))
        for a, b in zip(*got):
            if b is None:               # (torch: no gradient reached it; tracejit: zeros)
                assert a is None or not np.any(a.numpy())
                continue
            np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6)


def test_unused_output_of_a_compiled_module():
    class M(tj.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = tj.nn.Parameter(tj.tensor([1.0, 0.0, -2.0]))

        def forward(self, x):
            return (self.w * x).sum(), self.w.log()     # log(0) and log(-2): inf and NaN
    m = M()
    cm = tj.compile(m)
    for _ in range(2):
        m.w.grad = None
        cm(tj.tensor([1.0, 2.0, 3.0]))[0].backward()
        np.testing.assert_array_equal(m.w.grad.numpy(), np.array([1.0, 2.0, 3.0], np.float32))
