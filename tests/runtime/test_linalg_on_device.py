"""tj.linalg on GPU tensors under the strict fake CuPy (tests/fakecupy.py: a host array mixed
with device arrays raises): the extern primitives run their implementation on the device
arrays, eagerly and in compiled programs (fake_cuda_program.py), values and gradients equal to
the CPU's. Not run on a real GPU in this change (cupy.linalg is what np.linalg dispatches to
there)."""
from __future__ import annotations

import numpy as np
import pytest

import fake_cuda_program
import tracejit as tj

RNG = np.random.default_rng(3)
M = RNG.standard_normal((2, 3, 3))
A = M @ np.swapaxes(M, -1, -2) + 3 * np.eye(3)

FNS = [tj.linalg.inv, tj.linalg.det, tj.linalg.cholesky, lambda x: tj.linalg.slogdet(x)[1],
       lambda x: tj.linalg.solve(x, x[..., :1]),
       lambda x: tj.linalg.solve_triangular(x, x, upper=True), tj.linalg.eigvalsh,
       tj.linalg.svdvals, tj.linalg.pinv, lambda x: tj.linalg.qr(x)[0]]


def test_linalg_eagerly_on_device_tensors(fake_gpu):
    for fn in FNS:
        g = tj.tensor(A, device="cuda", requires_grad=True)
        out = fn(g)
        assert out.device == tj.device("cuda")
        np.testing.assert_allclose(out.detach().cpu().numpy(), fn(tj.tensor(A)).numpy(),
                                   atol=1e-10)
        out.sum().backward()
        c = tj.tensor(A, requires_grad=True)
        fn(c).sum().backward()
        np.testing.assert_allclose(g.grad.cpu().numpy(), c.grad.numpy(), atol=1e-9)


def test_linalg_compiled_on_the_device(fake_gpu, monkeypatch):
    fake_cuda_program.install(monkeypatch)

    def loss(x):
        return (tj.linalg.inv(x).sum() + tj.linalg.det(x).sum()
                + (tj.linalg.cholesky(x) ** 2).sum() + tj.linalg.svdvals(x).sum())
    v, g = tj.value_and_grad(loss)(tj.tensor(A, device="cuda"))
    v0, g0 = tj.value_and_grad(loss)(tj.tensor(A))
    assert g.device == tj.device("cuda")
    np.testing.assert_allclose(v.cpu().numpy(), v0.numpy(), rtol=1e-12)
    np.testing.assert_allclose(g.cpu().numpy(), g0.numpy(), atol=1e-10)
    with pytest.raises(tj.linalg.LinAlgError, match=r"linalg\.inv"):
        tj.compile(tj.linalg.inv)(tj.tensor(np.zeros((2, 2)), device="cuda"))
