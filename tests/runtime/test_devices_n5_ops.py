"""The new ops (erf, scans, sorting, sampling) on GPU tensors, eagerly, against the strict fake
CuPy (tests/fakecupy.py: any implicit host copy raises): results stay on the device and equal
the CPU's."""
from __future__ import annotations

import numpy as np

import fakecupy
import tracejit as tj


def test_scans_sorting_and_erf_on_device_tensors(fake_gpu):
    x = np.random.default_rng(0).standard_normal((3, 6)).astype(np.float32)
    x[1, 2] = 0.0
    ops = [lambda a: tj.cumsum(a, 1), lambda a: tj.cumprod(a, 0), lambda a: tj.prod(a, 1),
           lambda a: tj.sort(a, 1, descending=True).values, lambda a: tj.argsort(a, 0),
           lambda a: tj.topk(a, 2).values, lambda a: tj.erf(a), lambda a: tj.any(a > 1, 1),
           lambda a: tj.gelu(a)]
    for fn in ops:
        g = tj.tensor(x, device="cuda", requires_grad=x.dtype.kind == "f")
        out = fn(g)
        assert out.device == tj.device("cuda")
        np.testing.assert_allclose(out.detach().cpu().numpy(),
                                   fn(tj.tensor(x)).numpy(), rtol=1e-6, atol=1e-7)
        if out.dtype.is_float:
            out.sum().backward()
            assert g.grad.device == tj.device("cuda")
            c = tj.tensor(x, requires_grad=True)
            fn(c).sum().backward()
            np.testing.assert_allclose(g.grad.cpu().numpy(), c.grad.numpy(), rtol=1e-6,
                                       atol=1e-7)


def test_sampling_on_the_device(fake_gpu):
    p = tj.randperm(10, device="cuda")
    assert p.device == tj.device("cuda")
    assert sorted(p.cpu().numpy()) == list(range(10))
    w = tj.tensor([0.2, 0.0, 0.8], device="cuda")
    s = tj.multinomial(w, 50, replacement=True)
    assert s.device == tj.device("cuda") and 1 not in s.cpu().numpy()
    s = tj.multinomial(w, 2)
    assert sorted(s.cpu().numpy()) == [0, 2]
