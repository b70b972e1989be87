"""bench/models.py's workloads (bench/model_defs.py) agree with PyTorch: the whole training step
compiled by tracejit (forward, backward, AdamW) gives torch eager's losses over three steps from
the same weights, at tiny sizes. The cuda path of the benchmark traces, fuses and generates CUDA
source for every workload (fake CuPy: no GPU needed), the bfloat16 nanoGPT included."""
import importlib.util
import os
import shutil
import subprocess

import numpy as np
import pytest

import tracejit as tj

torch = pytest.importorskip("torch")
BENCH = os.path.join(os.path.dirname(__file__), os.pardir, os.pardir, "bench")
# bench/models.py by path, under its own name: with bench/ on sys.path, "models" would name it
# instead of this test directory's package
_spec = importlib.util.spec_from_file_location("bench_models", os.path.join(BENCH, "models.py"))
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)
model_defs = bench.model_defs

CPU = {w.name: w for w in model_defs.workloads("cpu", big=True, tiny=True)}
CUDA = {w.name: w for w in model_defs.workloads("cuda", big=False, tiny=True)}


@pytest.mark.parametrize("name", sorted(CPU))
def test_compiled_step_matches_torch(name):
    w = CPU[name]
    state = bench.reference_state(w)
    batch = w.data(np.random.default_rng(0))
    step = bench.build_tj(w, state, "cpu")
    tstep = bench.build_torch(w, state, "cpu", compiled=False)
    got = [bench.loss_value(step(*bench.to_lib(tj, batch, "cpu"))) for _ in range(3)]
    want = [bench.loss_value(tstep(*bench.to_lib(torch, batch, "cpu"))) for _ in range(3)]
    assert want[2] != want[0]                         # the optimizer steps change the loss
    np.testing.assert_allclose(got, want, rtol=2e-4, atol=1e-6)
    assert step.cache_info().misses == 1


def test_cuda_workloads_cover_the_issue():
    assert set(CUDA) == {"nanogpt_small", "nanogpt_12.8M", "makemore_mlp", "lstm_20_steps",
                         "cnn", "nanogpt_12.8M_bf16"}
    assert CUDA["nanogpt_12.8M_bf16"].autocast
    full = {w.name: w.cfg for w in model_defs.workloads("cuda", big=False)}
    assert full["nanogpt_12.8M"] == dict(n_layer=4, n_head=8, n_embd=512, block_size=256,
                                         vocab_size=65, dropout=0.0, bias=True, batch=16)
    assert full["nanogpt_small"]["n_embd"] == 128 and full["nanogpt_small"]["batch"] == 8


@pytest.mark.parametrize("name", sorted(CUDA))
def test_cuda_step_lowers_to_cuda_source(name, fake_gpu, tmp_path):
    w = CUDA[name]
    state = bench.reference_state(w)
    batch = w.data(np.random.default_rng(0))
    step = bench.build_tj(w, state, "cuda")
    low = step.lower(*bench.to_lib(tj, batch, "cuda"))
    src = low.cuda_source
    assert "__global__" in src
    kernels = low.kernels
    assert ": matmul [" in kernels or name == "lstm_20_steps" or "matmul" in kernels
    if w.autocast:                                  # 16-bit GEMMs stay 16-bit (tensor cores)
        assert "bf16" in low.as_text()
    nvcc = shutil.which("nvcc")
    if nvcc:            # what the GPU's NVRTC will be given compiles (sm_90: the H200)
        cu = tmp_path / f"{name}.cu"
        cu.write_text(src)
        r = subprocess.run([nvcc, "-ptx", "-arch=sm_90", "--fmad=false", "-o",
                            str(tmp_path / f"{name}.ptx"), str(cu)],
                           capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr[-4000:]
        ptx = (tmp_path / f"{name}.ptx").read_text()
        assert ptx.count(".entry ") == src.count('extern "C" __global__') > 0
