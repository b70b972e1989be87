"""Gradients of gather, sort and topk (read through tracer/gathering.along) on "cuda" tensors:
eager and compiled, against the CPU's float64 numbers. Eagerly under the strict CuPy stand-in
here (`fake_gpu`); eager and compiled on a real GPU in the `gpu`-marked test."""
from __future__ import annotations

import numpy as np
import pytest

import tracejit as tj

IDX = np.array([[0, 0, 4], [1, 1, 1], [3, 2, 3], [4, 4, 0]])

CASES = {
    "gather repeats": lambda a, i: tj.gather(a, 1, i),
    "sort d0": lambda a, i: tj.sort(a, 0, descending=True)[0],
    "topk 2 d1": lambda a, i: tj.topk(a, 2, 1)[0],
    "topk 1 d0": lambda a, i: tj.topk(a, 1, 0, largest=False)[0],
}


def _grads(f, x, idx, device, compiled):
    def loss(a, i):
        y = f(a, i)
        return (y * tj.arange(y.numel(), dtype=y.dtype, device=y.device).reshape(y.shape)).sum()
    xs, ids = tj.tensor(x, device=device), tj.tensor(idx, device=device)
    if compiled:
        return tj.compile(tj.grad(loss))(xs, ids)
    xs.requires_grad_(True)
    loss(xs, ids).backward()
    return xs.grad


def _check(device, compiled):
    x = np.random.default_rng(0).standard_normal((5, 4)).T     # non-contiguous, 4 x 5
    for name, f in CASES.items():
        want = _grads(f, x, IDX, "cpu", compiled).numpy()
        got = _grads(f, x, IDX, device, compiled)
        assert got.device.type == "cuda", name
        np.testing.assert_allclose(got.cpu().numpy(), want, rtol=1e-12, atol=1e-12,
                                   err_msg=name)


def test_eager_on_the_fake_gpu(fake_gpu):
    _check("cuda", compiled=False)       # (the stand-in has no NVRTC to compile kernels)


@pytest.mark.gpu
@pytest.mark.skipif(not tj.cuda_available(), reason="needs an NVIDIA GPU and CuPy")
@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_on_a_real_gpu(compiled):
    _check("cuda", compiled)
