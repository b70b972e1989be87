"""Kernels of one structural key launch one CUDA function (codegen/cuda_program.py), each with
its own buffers: compiled programs with repeated layers on the strict fake CuPy, whose host
stand-in for a shared function computes the instructions of the FIRST kernel that launches it
on whatever buffers a launch passes (fake_cuda_program.py), so a later layer is right only if
its launches hand the shared code its own buffers in the right places. The `gpu` tests run the
same programs through NVRTC on a real GPU against NumPy and the CPU."""
import re
import warnings

import numpy as np
import pytest

import fake_cuda_program
import tracejit as tj
from conftest import assert_close
from nanogpt_helpers import load_nanogpt, value_and_grad_step
from tracejit.runtime.cuda_backend import CudaExecutable

needs_gpu = pytest.mark.skipif(not tj.cuda_available(), reason="needs an NVIDIA GPU and CuPy")


@pytest.fixture
def fake(fake_gpu, monkeypatch):
    fake_cuda_program.install(monkeypatch)
    return fake_gpu


def layers(x, *ws):
    outs = []
    for w in ws:
        x = tj.tanh(x * w).mean(axis=0, keepdims=True) * x
        outs.append(x)
    return outs


def _numpy_layers(x, *ws):
    outs = []
    with warnings.catch_warnings(), np.errstate(invalid="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)   # the mean of no rows: NaN, as compiled
        for w in ws:
            x = np.tanh(x * w).mean(axis=0, keepdims=True) * x
            outs.append(x)
    return outs


def _shares(exe: CudaExecutable) -> None:
    """Fewer functions than kernel launches, each defined once."""
    names = re.findall(r'__global__ void __launch_bounds__\(\d+\) (\w+)\(', exe.source)
    kernels = [ln for ln in exe.launches if ln[0] == "kernel"]
    assert len(names) == len(set(names)) < len(kernels)
    assert {ln[1] for ln in kernels} == set(names)


def _check_layers(rows: int, depth: int) -> None:
    """Five layers of x [rows, 70] against NumPy; from 300 rows on, fusion materializes each
    layer's output and the layers' kernels share their code (with fewer, it recomputes them,
    and every kernel differs)."""
    rng = np.random.default_rng(rows)
    x = rng.standard_normal((rows, 70)).astype(np.float32)
    ws = [rng.standard_normal(70).astype(np.float32) for _ in range(depth)]
    f = tj.compile(layers)
    dev = [tj.tensor(a, device="cuda") for a in [x] + ws]
    got = f(*dev)
    if rows >= 300:
        _shares(f.lower(*dev)._entry.exe)
    for g, w in zip(got, _numpy_layers(x.astype(np.float64), *ws)):
        assert_close(g.cpu(), w, rtol=1e-4, atol=1e-5)


def _check_gpt(n_layer: int) -> None:
    """A nanoGPT's loss and every parameter's gradient on "cuda", against the CPU compiled."""
    mod = load_nanogpt("tracejit", "nanogpt_shared_kernels")
    cfg = mod.GPTConfig(block_size=8, vocab_size=16, n_layer=n_layer, n_head=2, n_embd=16,
                        dropout=0.0, bias=True)
    tj.manual_seed(0)
    cpu = mod.GPT(cfg)
    gpu = mod.GPT(cfg)
    gpu.load_state_dict(cpu.state_dict())
    gpu.to("cuda")
    rng = np.random.default_rng(3)
    idx, tgt = rng.integers(0, 16, (2, 8)), rng.integers(0, 16, (2, 8))
    loss_c, grads_c = tj.compile(value_and_grad_step(cpu))(tj.tensor(idx), tj.tensor(tgt))
    step = tj.compile(value_and_grad_step(gpu))
    args = (tj.tensor(idx, device="cuda"), tj.tensor(tgt, device="cuda"))
    loss_g, grads_g = step(*args)
    _shares(step.lower(*args)._entry.exe)
    assert_close(loss_g.cpu(), loss_c.detach(), rtol=1e-5)
    for g, c in zip(grads_g, grads_c):
        assert_close(g.cpu(), c.detach(), rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("rows", [0, 1, 300, 3000])
def test_repeated_layers_on_the_fake(fake, rows):
    _check_layers(rows, 5)


def test_nanogpt_gradients_on_the_fake(fake):
    _check_gpt(3)


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("rows", [0, 1, 300, 3000, 70000])
def test_repeated_layers_on_a_gpu(rows):
    _check_layers(rows, 5)


@pytest.mark.gpu
@needs_gpu
def test_nanogpt_gradients_on_a_gpu():
    _check_gpt(4)
