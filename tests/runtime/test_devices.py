"""Devices: parsing, the errors without CuPy or a GPU, and the eager/autograd/compile plumbing
for "cuda" tensors, checked against a strict CuPy stand-in (tests/fakecupy.py) that refuses
every implicit host conversion. Real GPU runs are in test_gpu.py (marked `gpu`)."""
from __future__ import annotations

import sys

import numpy as np
import pytest

import fakecupy
import tracejit as tj
from conftest import assert_close
from tracejit import devices


@pytest.fixture
def no_cupy(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)      # `import cupy` raises ImportError
    monkeypatch.setattr(devices, "_cupy", None)


def test_device_parsing_and_equality():
    assert tj.device("cuda") == "cuda:0" == tj.device("cuda:0")
    assert tj.device("cpu") == "cpu" and tj.device("cpu") != "cuda"
    assert str(tj.device("cuda:1")) == "cuda:1"
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        tj.device("tpu")
    assert tj.tensor([1.0]).device == "cpu"


def test_cuda_without_cupy_says_so(no_cupy):
    assert not tj.cuda_available()
    with pytest.raises(RuntimeError, match="CuPy is not installed"):
        tj.tensor([1.0, 2.0], device="cuda")
    with pytest.raises(RuntimeError, match="CuPy is not installed"):
        tj.ones(3).to("cuda")
    f = tj.compile(lambda x: x * 2, device="cuda")
    assert "k0" in f.lower(np.ones(3, np.float32)).cuda_source     # lowering needs no GPU
    with pytest.raises(RuntimeError, match="device 'cuda' is not available"):
        f(np.ones(3, np.float32))


def test_cuda_without_a_gpu_says_so(monkeypatch):
    fake = fakecupy.module()
    fake.cuda.runtime.getDeviceCount = lambda: 0
    monkeypatch.setitem(sys.modules, "cupy", fake)
    monkeypatch.setattr(devices, "_cupy", None)
    with pytest.raises(RuntimeError, match="found no GPU"):
        tj.zeros(2, device="cuda")


def test_eager_ops_stay_on_the_device(fake_gpu):
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((3, 4)).astype(np.float32), rng.standard_normal(4).astype(np.float32)
    x, y = tj.tensor(a, device="cuda"), tj.tensor(b).to("cuda")
    assert x.device == "cuda:0" and x.is_cuda and isinstance(x._data, fakecupy.ndarray)
    outs = {
        "arith": (tj.exp(x * 2 + y) - 1.0 / (y * y + 1), np.exp(a * 2 + b) - 1 / (b * b + 1)),
        "reduce": (x.sum(-1) + x.amax(0).sum(), a.sum(-1) + a.max(0).sum()),
        "softmax": (tj.softmax(x, -1), np.exp(a) / np.exp(a).sum(-1, keepdims=True)),
        "matmul": (x @ x.T, a @ a.T),
        "index": (x[np.array([2, 0])][:, 1:3], a[[2, 0]][:, 1:3]),
        "pad_cat": (tj.concatenate([tj.pad(x, ((0, 1), (0, 0))), x], 0),
                    np.concatenate([np.pad(a, ((0, 1), (0, 0))), a], 0)),
        "where": (tj.where(x > 0, x, 0.5), np.where(a > 0, a, np.float32(0.5))),
        "cast": (tj.cast(x * 10, tj.int32), (a * 10).astype(np.int32)),
    }
    for name, (t, want) in outs.items():
        assert t.device == "cuda:0", name
        assert_close(t.cpu(), want, rtol=1e-5, atol=1e-5)
    assert x.sum().item() == pytest.approx(float(a.sum()), rel=1e-5)
    assert "device='cuda:0'" in repr(x)


def test_autograd_on_the_device_matches_cpu(fake_gpu):
    rng = np.random.default_rng(1)
    a, w = rng.standard_normal((5, 3)), rng.standard_normal((3, 2))

    def loss(x, w):
        h = tj.tanh(x @ w)
        return (tj.log_softmax(h, -1)[np.arange(5), np.array([0, 1, 1, 0, 1])]).mean() + \
            tj.layer_norm(h, (2,)).pow(2).sum()

    xs, ws = tj.tensor(a, requires_grad=True), tj.tensor(w, requires_grad=True)
    loss(xs, ws).backward()
    xg = tj.tensor(a, device="cuda", requires_grad=True)
    wg = tj.tensor(w, device="cuda", requires_grad=True)
    out = loss(xg, wg)
    out.backward()
    assert out.device == "cuda:0" and xg.grad.device == "cuda:0"
    assert_close(xg.grad.cpu(), xs.grad, rtol=1e-10, atol=1e-12)
    assert_close(wg.grad.cpu(), ws.grad, rtol=1e-10, atol=1e-12)


def test_bfloat16_on_the_device(fake_gpu, monkeypatch):
    """Eager bfloat16 autograd on the device agrees with the CPU bit for bit; a CuPy without
    bfloat16 is named in the error."""
    x = np.linspace(-2, 2, 12).reshape(3, 4).astype(tj.bfloat16.np)
    grads = []
    for dev in ("cpu", "cuda"):
        t = tj.tensor(x, device=dev, requires_grad=True)
        y = (tj.tanh(t) * t).sum(1).exp().sum()
        y.backward()
        assert y.dtype is tj.bfloat16 and t.grad.dtype is tj.bfloat16
        grads.append(t.grad.cpu().numpy())
    assert (grads[0].view(np.uint16) == grads[1].view(np.uint16)).all()

    def no_bf16(a, dtype=None):
        if np.asarray(a).dtype == tj.bfloat16.np:
            raise ValueError("Unsupported dtype bfloat16")
        return fakecupy.asarray(a, dtype)
    monkeypatch.setattr(fake_gpu, "asarray", no_bf16)
    with pytest.raises(TypeError, match=r"bfloat16 tensors on the GPU need a CuPy with "
                                        r"bfloat16 support .* says: Unsupported dtype"):
        tj.tensor(x, device="cuda")


def test_to_is_differentiable_and_second_order(fake_gpu):
    x = tj.tensor([0.5, -1.0, 2.0], dtype=tj.float64, requires_grad=True)
    y = x.to("cuda")
    assert y.grad_fn is not None and "ToCopy" in y.grad_fn.name()
    z = (y ** 3).sum()
    (g,) = tj.autograd.grad(z, x, create_graph=True)
    assert g.device == "cpu"
    assert_close(g, 3 * x.detach().numpy() ** 2)
    g.sum().backward()
    assert_close(x.grad, 6 * x.detach().numpy())
    assert x.to("cpu") is x and x.to(tj.float32).dtype is tj.float32


def test_mixing_devices_is_a_clear_error(fake_gpu):
    x, y = tj.ones(3, device="cuda"), tj.ones(3)
    with pytest.raises(RuntimeError, match=r"add: expected all tensors on the same device, got "
                       r"f32\[3\] on cuda:0, f32\[3\] on cpu \(at test_devices.py:\d+\)"):
        x + y
    with pytest.raises(TypeError, match=r"use \.cpu\(\)"):
        x.numpy()
    f = tj.compile(lambda a, b: a * b)
    with pytest.raises(RuntimeError, match=r"arguments are on different devices \(cpu, cuda:0\)"):
        f(x, y)


def test_compile_picks_the_backend_from_the_inputs(fake_gpu):
    from tracejit.runtime.cuda_backend import CudaExecutable
    from tracejit.runtime.llvm_backend import LLVMExecutable
    f = tj.compile(lambda a: tj.tanh(a) * 2)
    assert isinstance(f.lower(tj.ones(4, device="cuda"))._entry.exe, CudaExecutable)
    assert isinstance(f.lower(tj.ones(4))._entry.exe, LLVMExecutable)
    assert f.cache_info().entries == 2           # the device is part of the signature

    seen = []

    @tj.compile
    def g(a):
        seen.append(a.device)
        return a + 1
    g.lower(tj.ones(2, device="cuda"))
    assert seen == ["cuda:0"]                    # traced tensors report their trace's device


def test_default_device_from_the_environment(fake_gpu, monkeypatch):
    monkeypatch.setenv("TRACEJIT_DEVICE", "cuda")
    assert tj.zeros(2).device == "cuda:0" and tj.tensor([1.0]).device == "cuda:0"
    assert tj.tensor([1.0], device="cpu").device == "cpu"
    monkeypatch.setenv("TRACEJIT_DEVICE", "gpu")
    with pytest.raises(ValueError, match="unknown device 'gpu'"):
        tj.ones(1)
