"""CUDA graphs write a capture's new value over the old one from the kernel that computes it
(runtime/cuda_graphs.py, _Recording._in_place; cuda_backend.same_index_inputs), instead of a
store copy after every launch: checked on the strict fake CuPy, which runs the launches in
order against live memory, so a launch that read the argument after it was overwritten would
give wrong numbers here. A kernel that reads the argument at other elements, or a launch after
it that reads the argument, keeps the store copy. Real CUDA: test_cuda_graphs_gpu_in_place.py."""
import numpy as np
import pytest

import fake_cuda_program
import tracejit as tj
from conftest import assert_close
from tracejit.runtime import cuda_backend
from tracejit.runtime.cuda_graphs import CudaGraphExecutable


@pytest.fixture
def gpu(fake_gpu, monkeypatch):
    fake_cuda_program.install(monkeypatch)
    return fake_gpu


def _recording(fn, *args):
    exe = fn.lower(*args)._entry.exe
    assert isinstance(exe, CudaGraphExecutable) and exe.plain_reason is None
    (rec,) = exe._recordings.values()
    return exe, rec


def _copies(rec) -> int:
    return [op[0] for op in rec.graph.ops].count("copy")


def test_nanogpt_adamw_step_has_no_store_copies(gpu):
    """Every parameter and both AdamW moments are written where they are: no copy in the graph
    (84 of 225 graph operations at nanoGPT-small before), and each step's loss and parameters
    are the plain launches'."""
    from nanogpt_helpers import compiled_training_steps, load_nanogpt
    mod = load_nanogpt("tracejit", "nanogpt_in_place_fake")
    cfg = mod.GPTConfig(block_size=8, vocab_size=16, n_layer=1, n_head=2, n_embd=16)
    models, steps = compiled_training_steps(mod, cfg, 1e-2, ("default", "reduce-overhead"))
    rng = np.random.default_rng(3)
    idx, tgt = (tj.tensor(rng.integers(0, 16, (2, 8)), device="cuda") for _ in range(2))
    for _ in range(4):
        la, lb = (s(idx, tgt) for s in steps)
        assert_close(lb.cpu(), la.cpu(), rtol=1e-6)
    for p, q in zip(models[0].parameters(), models[1].parameters()):
        assert_close(q.detach().cpu(), p.detach().cpu(), rtol=1e-6)
    exe, rec = _recording(steps[1], idx, tgt)
    n_params = len(list(models[1].parameters()))
    assert _copies(rec) == 0 and len(rec.in_place) >= 3 * n_params
    assert exe.stats["replays"] >= 2


@pytest.mark.parametrize("case", ["gemm reads it after", "reduction reads it",
                                  "transposed read", "two updates", "read by a later kernel"])
def test_updates_stay_right_whichever_way_they_are_stored(gpu, case):
    """Updates next to other readers of the parameter: the graph's results and parameters are
    the plain launches', step after step, stored in place where that is safe."""
    rng = np.random.default_rng(5)
    w0 = rng.standard_normal((6, 6)).astype(np.float32) * 0.3
    xs = [rng.standard_normal((4, 6)).astype(np.float32) for _ in range(4)]

    def step(w, u, x):
        if case == "gemm reads it after":
            w.mul_(0.5)
            return (x @ w).sum()
        if case == "reduction reads it":
            s = (w * x[0]).sum()
            w.sub_(0.1 * s)
            return s
        if case == "transposed read":
            w.sub_(w.T * 0.25)
            return w.sum()
        if case == "two updates":
            w.add_(x[0])
            u.mul_(w)
            return u.sum()
        old = w * 1.0
        w.add_(1.0)
        return (tj.exp(old) @ x.T).sum()
    ws = {m: (tj.tensor(w0.copy(), device="cuda"), tj.tensor(w0.copy() + 1, device="cuda"))
          for m in ("default", "reduce-overhead")}
    fns = {m: tj.compile(lambda x, m=m: step(*ws[m], x), mode=m) for m in ws}
    for x in xs:
        xc = tj.tensor(x, device="cuda")
        a, b = fns["default"](xc), fns["reduce-overhead"](xc)
        assert_close(b.cpu(), a.cpu(), rtol=1e-6)
        for p, q in zip(*ws.values()):
            assert_close(q.cpu(), p.cpu(), rtol=1e-6)
    exe, rec = _recording(fns["reduce-overhead"], tj.tensor(xs[0], device="cuda"))
    assert exe.stats["replays"] >= 2
    if case == "transposed read":         # the kernel reads w at other elements: a copy
        assert not rec.in_place and _copies(rec) == 1


def _kernel_pairs(fn, *args):
    exe = fn.lower(*args)._entry.exe
    names = {v: i for i, v in enumerate(exe.graph.inputs)}
    return {(names[x], j) for v, xs in exe.same_index.items() for x in xs
            for j, (o, _) in enumerate(exe.out_plan) if o is v}


def test_same_index_inputs_are_read_only_at_the_elements_written(gpu):
    x = tj.tensor(np.ones((4, 4), np.float32), device="cuda")
    y = tj.tensor(np.ones((4, 4), np.float32), device="cuda")
    # elementwise: each element of x is read by the thread that writes it
    assert (0, 0) in _kernel_pairs(tj.compile(lambda x, y: x * 2.0 + y), x, y)
    # a transposed or a broadcast read reaches other elements
    assert (0, 0) not in _kernel_pairs(tj.compile(lambda x, y: x * 2.0 + x.T), x, y)
    assert (0, 0) not in _kernel_pairs(tj.compile(lambda x, y: x + x[1]), x, y)
    # a reduction of x is a kernel of its own, before (the runtime checks launches' order)
    assert (0, 0) in _kernel_pairs(tj.compile(lambda x, y: x + x.sum(axis=0)), x, y)
    # an output computed without one of the reads of x: that load may come after its store
    pairs = _kernel_pairs(tj.compile(lambda x, y: (y * 2.0, tj.exp(x) + y)), x, y)
    assert (0, 0) not in pairs and (0, 1) in pairs


def test_in_place_needs_the_kernel_alone(gpu, monkeypatch):
    """With no same-index pairs (the analysis off), every update is a store copy again, and
    the numbers are the same."""
    monkeypatch.setattr(cuda_backend, "same_index_inputs", lambda plan, program: {})
    rng = np.random.default_rng(7)
    w = tj.tensor(rng.standard_normal((6, 6)).astype(np.float32), device="cuda")
    want = w.cpu().numpy()
    f = tj.compile(lambda x: w.add_(x).sum(), mode="reduce-overhead")
    for _ in range(3):
        x = rng.standard_normal((6, 6)).astype(np.float32)
        want = want + x
        f(tj.tensor(x, device="cuda"))
        assert_close(w.cpu(), want, rtol=1e-6)
    _, rec = _recording(f, tj.tensor(x, device="cuda"))
    assert not rec.in_place and _copies(rec) == 1
