"""Review fixes of the CUDA-graph replays (runtime/cuda_graphs.py), on the strict fake CuPy:
an output that hands back a capture's old value while the graph stores its new value, and the
cuBLAS workspace that cublasSetStream resets."""
import numpy as np
import pytest

import fakecupy
import fake_cuda_program
import tracejit as tj
from conftest import assert_close
from tracejit.runtime import cuda_graphs
from tracejit.runtime.cuda_graphs import CudaGraphExecutable


@pytest.fixture
def gpu(fake_gpu, monkeypatch):
    fake_cuda_program.install(monkeypatch)
    return fake_gpu


def _exe(fn, *args):
    exe = fn.lower(*args)._entry.exe
    assert isinstance(exe, CudaGraphExecutable)
    return exe


@pytest.mark.parametrize("mode", ["default", "reduce-overhead"])
def test_an_output_of_a_captures_old_value_is_not_its_new_value(gpu, mode):
    """`old = p.clone(); p.add_(x); return old`: the graph's output is the capture itself,
    which the graph also stores the new value into; the output is the value before the step
    (the in-graph store made it the new one)."""
    start = np.arange(4, dtype=np.float32)
    p = tj.tensor(start, device="cuda")

    def step(x):
        old = p.clone()
        with tj.no_grad():
            p.add_(x)
        return old, p.sum()
    f = tj.compile(step, mode=mode)
    x = tj.tensor(np.ones(4, np.float32), device="cuda")
    for k in range(4):
        old, total = f(x)
        assert_close(old.cpu(), start + k)
        assert_close(total.cpu(), (start + k + 1).sum())
        assert_close(p.cpu(), start + k + 1)
    if mode == "reduce-overhead":
        assert _exe(f, x).stats["replays"] >= 2


def test_an_argument_updated_in_place_and_returned_before(gpu):
    """The same through an argument read in place: `x.clone()` returned, `x.mul_(2)`."""
    def step(x):
        old = x.clone()
        x.mul_(2)
        return old
    f = tj.compile(step, mode="reduce-overhead")
    x = tj.tensor(np.arange(1, 5, dtype=np.float32), device="cuda")
    for k in range(4):
        assert_close(f(x).cpu(), np.arange(1, 5, dtype=np.float32) * 2 ** k)
    assert_close(x.cpu(), np.arange(1, 5, dtype=np.float32) * 16)


def test_recorded_gemms_use_the_recordings_workspace(gpu):
    """cublasSetStream resets a handle's workspace to cuBLAS's own pool (cuBLAS documents it;
    the fake does it too): every GEMM recorded into a graph ran with our workspace, set again
    after each setStream."""
    rng = np.random.default_rng(2)
    w = tj.tensor(rng.standard_normal((8, 4)).astype(np.float32), device="cuda")
    f = tj.compile(lambda x, w: tj.tanh(x @ w) @ w.T, mode="reduce-overhead")
    fakecupy.CUBLAS.captured_workspaces.clear()
    for _ in range(3):
        x = rng.standard_normal((5, 8)).astype(np.float32)
        want = np.tanh(x @ w.cpu().numpy()) @ w.cpu().numpy().T
        assert_close(f(tj.tensor(x, device="cuda"), w).cpu(), want, rtol=1e-5)
    (rec,) = _exe(f, tj.tensor(x, device="cuda"), w)._recordings.values()
    mine = (rec.workspace.buffer.data.ptr, cuda_graphs.WORKSPACE_BYTES)
    got = fakecupy.CUBLAS.captured_workspaces
    assert len(got) >= 2 and set(got) == {mine}
