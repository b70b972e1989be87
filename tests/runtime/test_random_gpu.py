"""Random numbers on a real GPU: a seeded compiled program gives the CPU's uniforms bit for bit
(and its normals to an ulp or two), the CUDA generator advances like the CPU one, and dropout's
compiled backward regenerates the forward's mask. Marked `gpu`; skipped cleanly without CuPy
and a GPU (the same kernels run on the host in tests/codegen/test_random_codegen.py)."""
from __future__ import annotations

import numpy as np
import pytest

import tracejit as tj

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not tj.cuda_available(), reason="needs an NVIDIA GPU and CuPy")]


def body(x):
    return x + tj.rand(*x.shape), tj.randn(*x.shape, dtype=tj.float64), tj.dropout(x, 0.3), \
        (tj.randn(*x.shape) * x).sum(1)


@pytest.mark.parametrize("shape", [(256, 1024), (37, 11), (1, 1)])
def test_cuda_draws_the_cpu_numbers(shape):
    x = np.linspace(1, 2, int(np.prod(shape)), dtype=np.float32).reshape(shape)
    tj.manual_seed(123)
    cpu = [t.numpy() for t in tj.compile(body)(x)]
    gpu_fn = tj.compile(body)
    got = [t.cpu().numpy() for t in gpu_fn(tj.tensor(x, device="cuda"))]
    # four random ops (rand, randn, dropout, randn): each call advances the offset by 4
    assert tj.get_rng_state("cuda") == tj.get_rng_state("cpu") == (123, 4)
    assert np.array_equal(got[0], cpu[0]) and np.array_equal(got[2], cpu[2])
    np.testing.assert_allclose(got[1], cpu[1], rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(got[3], cpu[3], rtol=1e-4, atol=1e-4)
    again = [t.cpu().numpy() for t in gpu_fn(tj.tensor(x, device="cuda"))]
    assert not np.array_equal(again[0], got[0])


def test_eager_cuda_random_and_compiled_dropout_gradient():
    tj.manual_seed(7)
    e = tj.rand(1000, device="cuda")
    assert e.device == "cuda:0"
    assert np.array_equal(e.cpu().numpy(), tj.rand(1000).numpy())
    f = tj.compile(lambda v: tj.dropout(v, 0.5))
    x = tj.tensor(np.linspace(1, 2, 4096, dtype=np.float32), device="cuda", requires_grad=True)
    y = f(x)
    (y * y).sum().backward()
    yv = y.detach().cpu().numpy()
    np.testing.assert_allclose(x.grad.cpu().numpy(), 2 * yv * (yv != 0) * 2, rtol=1e-6)
