"""Optimizers on a "cuda" device: state on the device, one compiled update per group (no
host chunking), through the strict CuPy stand-in; real GPU trajectories are marked `gpu`."""
import numpy as np
import pytest

import tracejit as tj
from tracejit.optim import fused
from tracejit.runtime.cuda_backend import CudaExecutable


def test_state_lives_on_the_device_and_the_group_is_one_call(fake_gpu, monkeypatch):
    ps = [tj.tensor(np.ones((300, 300)), requires_grad=True, device="cuda") for _ in range(3)]
    for p in ps:
        p.grad = tj.ones(300, 300, dtype=tj.float64, device="cuda")
    assert fused._chunks(ps) == [(0, 3)]          # the host would split these (see _chunks)
    host = [tj.tensor(np.ones((300, 300)), requires_grad=True) for _ in range(3)]
    assert len(fused._chunks(host)) == 3
    calls = []

    def fake_run(self, args):             # the stand-in cannot launch kernels: record the call
        calls.append((self, [a.shape for a in args]))
        return [a for a in args[:len(self.graph.outputs)]]

    monkeypatch.setattr(CudaExecutable, "run", fake_run)
    opt = tj.optim.Adam(ps, lr=0.1)
    opt.step()
    assert len(calls) == 1 and isinstance(calls[0][0], CudaExecutable)
    st = opt.state[ps[0]]
    assert st["exp_avg"].device == "cuda:0" and st["exp_avg_sq"].device == "cuda:0"
    assert st["step"].device == "cpu" and st["step"].item() == 1.0     # as torch



@pytest.mark.gpu
@pytest.mark.skipif(not tj.cuda_available(), reason="needs an NVIDIA GPU and CuPy")
@pytest.mark.parametrize("name,kw", [("SGD", dict(lr=0.1, momentum=0.9, nesterov=True)),
                                     ("AdamW", dict(lr=0.01, amsgrad=True))])
def test_gpu_trajectory_matches_the_cpu(name, kw):
    rng = np.random.default_rng(0)
    init = [rng.standard_normal(s) for s in [(64, 33), (33,), (1,)]]
    grads = [[rng.standard_normal(a.shape) for a in init] for _ in range(20)]
    runs = []
    for dev in ("cpu", "cuda"):
        # the compiled update functions are shared by every optimizer of a kind, and their
        # cache counts both devices' signatures: count this device's alone
        tj.optim.fused._CACHE.clear()
        ps = [tj.tensor(a, requires_grad=True, device=dev) for a in init]
        opt = getattr(tj.optim, name)(ps, **kw)
        for t, gs in enumerate(grads):
            opt.param_groups[0]["lr"] = kw["lr"] / (1 + t)
            for p, g in zip(ps, gs):
                p.grad = tj.tensor(g, device=dev)
            opt.step()
        runs.append([p.detach().cpu().numpy() for p in ps])
        assert opt.cache_info().misses <= 2
    for a, b in zip(*runs):
        np.testing.assert_allclose(b, a, rtol=1e-10, atol=1e-12)
