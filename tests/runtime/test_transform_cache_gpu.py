"""The plain transforms' kept traces (#15) with tensors on a device: the device is part of the
key (a CPU trace is never replayed on CUDA tensors and back), and chunked vmap writes mapped
in-place updates back on the device. The strict fake CuPy runs everywhere; the `gpu` test
runs the same on a real GPU against NumPy."""
from __future__ import annotations

import numpy as np
import pytest

import tracejit as tj

X = np.array([0.3, -1.2, 2.0, 0.7])
T = np.array([1.0, 0.5, -0.25, 2.0])


def _run(dev: str):
    calls = []

    def f(x):
        calls.append(1)
        return tj.sin(x) * x

    def upd(x):
        x.mul_(2.0)
        return x.sum()
    out = []
    for d in (dev, "cpu", dev):
        x = tj.tensor(X, device=d)
        o, t = tj.jvp(f, (x,), (tj.tensor(T, device=d),))
        assert o.device.type == d and t.device.type == d
        out.append(t.cpu().numpy())
        jac = tj.jacfwd(f)(x)
        assert jac.device.type == d
        out.append(np.diag(jac.cpu().numpy()))
        rev = tj.jacrev(f)(x)
        assert rev.device.type == d
        np.testing.assert_allclose(rev.cpu().numpy(), jac.cpu().numpy(), rtol=1e-12)
        hes = tj.hessian(lambda y: f(y).sum())(x)
        np.testing.assert_allclose(np.diag(hes.cpu().numpy()),
                                   2 * np.cos(X) - X * np.sin(X), rtol=1e-12)
        xs = tj.tensor(np.arange(6.0).reshape(3, 2), device=d)
        s = tj.vmap(upd, chunk_size=2)(xs)
        np.testing.assert_array_equal(xs.cpu().numpy(), 2 * np.arange(6.0).reshape(3, 2))
        np.testing.assert_array_equal(s.cpu().numpy(), 2 * np.arange(6.0).reshape(3, 2).sum(1))
    want = (np.cos(X) * X + np.sin(X)) * T
    for k in range(0, len(out), 2):
        np.testing.assert_allclose(out[k], want, rtol=1e-12)
        np.testing.assert_allclose(out[k + 1], np.cos(X) * X + np.sin(X), rtol=1e-12)
    # jvp, jacfwd and jacrev trace f once per device (2 x 3); hessian's lambda is a new
    # function each time, so its inner jacrev traces f each time (3)
    assert len(calls) == 9


def test_kept_traces_follow_the_device_fake_gpu(fake_gpu):
    _run("cuda")


@pytest.mark.gpu
@pytest.mark.skipif(not tj.cuda_available(), reason="needs an NVIDIA GPU and CuPy")
def test_kept_traces_follow_the_device_on_the_gpu():
    _run("cuda")
