"""Eager GPU ops and the autograd engine through the strict fake CuPy (tests/fakecupy.py):
one kernel per eager op, and a backward pass that never makes the host wait for the device
(no device-to-host reads, no host-to-device copies: constants are fill kernels)."""
import numpy as np
import pytest

import tracejit as tj


def fake_module():
    import fakecupy
    return fakecupy


def test_one_kernel_per_eager_op(fake_gpu):
    f = fake_module()
    x = tj.tensor(np.linspace(-1, 1, 6), requires_grad=True).to("cuda")
    y = tj.tensor(np.linspace(1, 2, 6)).to("cuda")
    for op in (lambda: x * y, lambda: x + y, lambda: tj.exp(x), lambda: tj.tanh(y),
               lambda: x / y):
        before = dict(f.COUNTS)
        out = op()
        assert f.COUNTS["kernels"] - before["kernels"] == 1
        assert f.COUNTS["to_host"] == before["to_host"]
        assert f.COUNTS["to_device"] == before["to_device"]
        assert out.device == "cuda"


def test_backward_makes_no_host_sync(fake_gpu):
    f = fake_module()
    xv, yv = np.linspace(-1, 1, 6), np.linspace(1, 2, 6)
    x = tj.tensor(xv, requires_grad=True)
    y = tj.tensor(yv, requires_grad=True)
    xc, yc = x.to("cuda"), y.to("cuda")
    loss = (tj.tanh(xc * yc) * tj.exp(xc) / yc + xc * 2.0).sum()
    before = dict(f.COUNTS)
    gx, gy = tj.autograd.grad(loss, (xc, yc))
    assert f.COUNTS["to_host"] == before["to_host"]
    assert f.COUNTS["to_device"] == before["to_device"]
    t = np.tanh(xv * yv)
    want_x = (1 - t * t) * yv * np.exp(xv) / yv + t * np.exp(xv) / yv + 2
    want_y = (1 - t * t) * xv * np.exp(xv) / yv - t * np.exp(xv) / yv ** 2
    np.testing.assert_allclose(gx.cpu().numpy(), want_x, rtol=1e-12)
    np.testing.assert_allclose(gy.cpu().numpy(), want_y, rtol=1e-12)


@pytest.mark.gpu
@pytest.mark.skipif(not tj.cuda_available(), reason="needs an NVIDIA GPU and CuPy")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_real_gpu_eager_backward_matches_numpy(dtype):
    """The array backward on CuPy arrays, with its constants made by fill kernels."""
    xv = np.linspace(-1, 1, 1000).astype(dtype)
    yv = np.linspace(1, 2, 1000).astype(dtype)
    x = tj.tensor(xv, requires_grad=True, device="cuda")
    y = tj.tensor(yv, requires_grad=True, device="cuda")
    h = tj.tanh(x * y)
    h.retain_grad()
    loss = (h * tj.exp(x) / y + x * 2.0 - tj.sigmoid(y)).sum()
    loss.backward()
    t = np.tanh(xv.astype(np.float64) * yv)
    e, s = np.exp(xv.astype(np.float64)), 1 / (1 + np.exp(-yv.astype(np.float64)))
    want_x = (1 - t * t) * yv * e / yv + t * e / yv + 2
    want_y = (1 - t * t) * xv * e / yv - t * e / yv ** 2 - s * (1 - s)
    tol = dict(rtol=2e-5, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-12)
    assert x.grad.device == "cuda:0" and h.grad.device == "cuda:0"
    np.testing.assert_allclose(x.grad.cpu().numpy(), want_x, **tol)
    np.testing.assert_allclose(y.grad.cpu().numpy(), want_y, **tol)
    np.testing.assert_allclose(h.grad.cpu().numpy(), e / yv, **tol)
