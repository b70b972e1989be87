"""The CUDA program's memory plan (codegen/cuda_program.plan_buffers): the same planner as the
CPU's, over the launches in stream order. Generated kernels are run on the host (g++, every
thread of every launch in turn, as tests/codegen/test_cuda_host.py does) with every
intermediate bound to the planned offsets of ONE arena, and must match the interpreter; the
CUDA executable binds its intermediates as views of one allocation per call (fake CuPy)."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

import tracejit as tj
from tracejit.codegen.cuda_program import lower_program
from tracejit.codegen.fusion import plan as make_plan
from tracejit.ir.interpret import interpret
from tracejit.runtime.cuda_backend import prepare

from test_cuda_host import run_in_one_arena

HOST_FNS = {
    # several launches of column sums and elementwise loops; each intermediate is read by the
    # next launches only, so the plan reuses memory
    "colsums": lambda x, y: ((tj.exp(x * 0.1).sum(axis=0, keepdims=True) * x).sum(axis=0)
                             * y.sum(axis=0)),
    "chain": lambda x, y: (((x * 2).sum(axis=0, keepdims=True) + y).sum(axis=0, keepdims=True)
                           * tj.sin(x)).sum(axis=0),
    "bcast": lambda x, y: tj.tanh(x.sum(axis=0, keepdims=True) + y).sum(axis=0) + tj.sin(x[0]),
}


def _lower(fn, args):
    graph = prepare(tj.compile(fn, device="cuda").lower(*args).graph)
    plan = make_plan(graph)
    return graph, plan, lower_program(plan, prelude=False)


@pytest.mark.skipif(shutil.which("g++") is None, reason="g++ is not installed")
@pytest.mark.parametrize("name", sorted(HOST_FNS))
def test_host_run_in_one_planned_arena(name, tmp_path):
    rng = np.random.default_rng(4)
    args = [rng.standard_normal((300, 70)) for _ in range(2)]
    graph, plan, prog = _lower(HOST_FNS[name], [tj.tensor(a) for a in args])
    assert all(ln.kind == "kernel" for ln in prog.launches)
    assert not any(t in prog.source for t in ("tj_block_reduce", "__syncthreads", "__shfl"))
    mem = prog.memory
    assert len(prog.launches) >= 3 and len(prog.temps) >= 2
    assert mem.overlapping_pairs() == []
    assert mem.arena_bytes < mem.separate_bytes        # something is shared
    got = run_in_one_arena(graph, plan, prog, args, tmp_path)
    for g, w in zip(got, interpret(graph, args)):
        np.testing.assert_allclose(g, w, rtol=1e-10, atol=1e-10)


def test_cuda_executable_binds_views_of_one_arena(fake_gpu, monkeypatch):
    from tracejit.runtime import cuda_backend
    x = tj.tensor(np.random.default_rng(5).standard_normal((40, 30)), device="cuda")
    f = tj.compile(HOST_FNS["chain"])
    exe = f.lower(x, x)._entry.exe
    assert isinstance(exe, cuda_backend.CudaExecutable)
    allocs = []
    real_empty = fake_gpu.empty

    def empty(shape, dtype=float):
        allocs.append((shape, np.dtype(dtype)))
        return real_empty(shape, dtype)
    monkeypatch.setattr(fake_gpu, "empty", empty)
    class _Stop(Exception):
        pass

    def launch_stub(*a):
        raise _Stop                 # the fake has no kernels to launch: stop at the first
    monkeypatch.setattr(cuda_backend, "_Bound", lambda exe, cp: type(
        "B", (), {"constants": {}, "steps": [(launch_stub, None, None, ())]})())
    monkeypatch.setattr(exe, "_bound", {})
    with pytest.raises(_Stop):
        exe.run([x._data, x._data])         # the device arrays the compiled call would pass
    # one allocation per output and ONE for every intermediate, of the plan's size
    n_out = len(exe.fresh)
    assert len(allocs) == n_out + 1
    assert allocs[-1] == (exe.scratch_bytes, np.dtype(np.uint8))
    assert exe.scratch_bytes == exe.program.memory.arena_bytes
    text = exe.stage_text("memory")
    assert text.startswith("memory plan: peak ") and "shared by lifetime" in text


@pytest.mark.gpu
@pytest.mark.skipif(not tj.cuda_available(), reason="needs an NVIDIA GPU and CuPy")
def test_gpu_planned_intermediates_match_numpy():
    """On the device: a chain of GEMMs and row softmaxes whose intermediates share one arena,
    and its compiled gradient, against NumPy float64."""
    rng = np.random.default_rng(6)
    x, w = rng.standard_normal((64, 96)), rng.standard_normal((96, 96)) * 0.1

    def f(a, b):
        for _ in range(4):
            a = tj.softmax(a @ b, axis=1) * 3.0 + a
        return (a * a).sum()

    def f_np(a, b):
        for _ in range(4):
            z = a @ b
            e = np.exp(z - z.max(axis=1, keepdims=True))
            a = e / e.sum(axis=1, keepdims=True) * 3.0 + a
        return (a * a).sum()
    xs = [tj.tensor(x.astype(np.float32), device="cuda"),
          tj.tensor(w.astype(np.float32), device="cuda", requires_grad=True)]
    lo = tj.compile(f).lower(*xs)
    mem = lo._entry.exe.program.memory
    assert mem.overlapping_pairs() == [] and mem.arena_bytes < mem.separate_bytes
    out = tj.compile(f)(*xs)
    np.testing.assert_allclose(float(out.item()), f_np(x, w), rtol=1e-4)
    out.backward()
    eps, g = 1e-6, np.zeros_like(w)
    for i, j in [(0, 0), (5, 7), (95, 3)]:
        d = np.zeros_like(w)
        d[i, j] = eps
        g[i, j] = (f_np(x, w + d) - f_np(x, w - d)) / (2 * eps)
        np.testing.assert_allclose(xs[1].grad.numpy()[i, j], g[i, j], rtol=2e-3, atol=1e-3)
