"""Autocast, GradScaler and save/load with "cuda" tensors, through the strict CuPy stand-in
(tests/fakecupy.py): the device plumbing (no implicit host copies, devices kept or mapped)."""
import io

import numpy as np

import fakecupy
import tracejit as tj
from tracejit import devices


def test_autocast_cuda_casts_cuda_tensors_only(fake_gpu):
    a = tj.randn(3, 4).to("cuda")
    b = tj.randn(4, 2).to("cuda").requires_grad_()
    with tj.autocast("cuda"):
        y = a @ b
        assert y.dtype is tj.float16 and y.device == "cuda:0"
        s = tj.softmax(y, -1)
        assert s.dtype is tj.float32
        assert (tj.randn(2, 2) @ tj.randn(2, 2)).dtype is tj.float32     # a CPU tensor
    with tj.autocast("cpu"):
        assert (a @ b).dtype is tj.float32                               # a CUDA tensor
    s.sum().backward()
    assert b.grad.dtype is tj.float32 and b.grad.device == "cuda:0"


class _PlainSGD:
    def __init__(self, params, lr):
        self.param_groups = [{"params": list(params), "lr": lr}]

    def step(self):
        with tj.no_grad():
            for p in self.param_groups[0]["params"]:
                p.sub_(p.grad * self.param_groups[0]["lr"])


def test_grad_scaler_on_cuda(fake_gpu):
    p = tj.nn.Parameter(tj.ones(3).to("cuda"))
    opt = _PlainSGD([p], lr=0.5)             # (tj.optim compiles CUDA kernels: not faked)
    s = tj.amp.GradScaler()                  # device="cuda": enabled, a GPU is "there"
    assert s.is_enabled()
    loss = s.scale((p * p).sum())
    assert loss.device == "cuda:0" and loss.item() == 3 * 2.0 ** 16
    loss.backward()
    s.step(opt)
    s.update()
    np.testing.assert_allclose(p.detach().cpu().numpy(), np.zeros(3))   # 1 - 0.5 * 2
    p.grad = tj.tensor(np.array([np.inf, 0, 0], np.float32)).to("cuda")
    s.step(opt)
    s.update()
    assert s.get_scale() == 2.0 ** 15
    np.testing.assert_allclose(p.detach().cpu().numpy(), np.zeros(3))   # skipped


def test_save_load_cuda_tensors(fake_gpu):
    w = tj.nn.Parameter(tj.randn(2, 3).to("cuda"))
    obj = {"w": w, "tied": w, "b": tj.arange(4).to("cuda"), "c": tj.ones(2)}
    buf = io.BytesIO()
    tj.save(obj, buf)
    buf.seek(0)
    r = tj.load(buf)
    assert r["w"] is r["tied"] and isinstance(r["w"], tj.nn.Parameter)
    assert r["w"].device == "cuda:0" and r["b"].device == "cuda:0" and r["c"].device == "cpu"
    np.testing.assert_array_equal(r["w"].detach().cpu().numpy(), w.detach().cpu().numpy())
    buf.seek(0)
    r = tj.load(buf, map_location="cpu")
    assert all(r[k].device == "cpu" for k in ("w", "b", "c"))
    buf.seek(0)
    r = tj.load(buf, map_location="cuda")
    assert all(r[k].device == "cuda:0" for k in ("w", "b", "c"))
