"""CUDA graphs (`tj.compile(fn, mode="reduce-overhead")`, runtime/cuda_graphs.py) on a real
GPU: replays against NumPy and the CPU, training steps (in-place updates stored by the graph),
dropout masks per step, nanoGPT. Marked `gpu`; skipped cleanly without CuPy and a GPU. Every
test fails on a fallback warning: a step that silently ran plain launches proves nothing."""
import copy

import numpy as np
import pytest

import tracejit as tj
from conftest import assert_close
from nanogpt_helpers import compiled_training_steps, load_nanogpt
from tracejit.runtime.cuda_graphs import CudaGraphExecutable

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not tj.cuda_available(), reason="needs an NVIDIA GPU and CuPy"),
              pytest.mark.filterwarnings("error::RuntimeWarning")]


def _stats(fn, *args):
    exe = fn.lower(*args)._entry.exe
    assert isinstance(exe, CudaGraphExecutable) and exe.plain_reason is None
    return exe.stats


def test_replays_match_numpy_and_keep_every_step_s_outputs():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((64, 32)).astype(np.float32) / 8
    b = rng.standard_normal(32).astype(np.float32)
    wc, bc = tj.tensor(w, device="cuda"), tj.tensor(b, device="cuda")

    @tj.compile(mode="reduce-overhead")
    def f(x, w, b, s):
        h = tj.tanh(x @ w + b)
        return h * s, (h * h).sum(axis=0)
    xs = [rng.standard_normal((48, 64)).astype(np.float32) for _ in range(6)]
    outs = [f(tj.tensor(x, device="cuda"), wc, bc, 0.5 * k) for k, x in enumerate(xs)]
    for k, (x, (y, s)) in enumerate(zip(xs, outs)):
        h = np.tanh(x.astype(np.float64) @ w + b)
        assert_close(y.cpu(), h * 0.5 * k, rtol=1e-4, atol=1e-5)
        assert_close(s.cpu(), (h * h).sum(axis=0), rtol=1e-4, atol=1e-4)
    st = _stats(f, tj.tensor(xs[0], device="cuda"), wc, bc, 1.0)
    assert st["replays"] >= 4


def test_adamw_training_step_matches_eager_on_the_cpu():
    tj.manual_seed(1)
    model = tj.nn.Sequential(tj.nn.Linear(16, 32), tj.nn.GELU(), tj.nn.Linear(32, 4))
    ref = copy.deepcopy(model)
    model.to("cuda")
    opt = tj.optim.AdamW(model.parameters(), lr=1e-2)
    ref_opt = tj.optim.AdamW(ref.parameters(), lr=1e-2)

    def step(m, o, x, y):
        loss = ((m(x) - y) ** 2).mean()
        loss.backward()
        o.step()
        o.zero_grad()
        return loss
    compiled = tj.compile(lambda x, y: step(model, opt, x, y), mode="reduce-overhead")
    rng = np.random.default_rng(2)
    for _ in range(6):
        x = rng.standard_normal((8, 16)).astype(np.float32)
        y = rng.standard_normal((8, 4)).astype(np.float32)
        lc = compiled(tj.tensor(x, device="cuda"), tj.tensor(y, device="cuda"))
        le = step(ref, ref_opt, tj.tensor(x), tj.tensor(y))
        assert_close(lc.cpu(), le, rtol=1e-4, atol=1e-6)
    for p, q in zip(model.parameters(), ref.parameters()):
        assert_close(p.cpu(), q, rtol=1e-4, atol=1e-5)
    st = _stats(compiled, tj.tensor(x, device="cuda"), tj.tensor(y, device="cuda"))
    assert st["replays"] >= 3


def test_dropout_masks_are_new_every_replay_and_the_plain_launches_masks():
    def f(x):
        return tj.dropout(x, 0.5, True)
    x = tj.tensor(np.ones(4096, np.float32), device="cuda")
    runs = {}
    for mode in ("default", "reduce-overhead"):
        tj.manual_seed(3)
        g = tj.compile(f, mode=mode)
        runs[mode] = [g(x).cpu().numpy() for _ in range(4)]
    for a, b in zip(*runs.values()):
        np.testing.assert_array_equal(a, b)
    assert len({m.tobytes() for m in runs["reduce-overhead"]}) == 4


def test_nanogpt_training_step_replays_as_the_plain_launches():
    mod = load_nanogpt("tracejit", "nanogpt_graphs")
    cfg = mod.GPTConfig(block_size=32, vocab_size=64, n_layer=2, n_head=4, n_embd=64,
                        dropout=0.0)
    tj.manual_seed(4)
    models, steps = compiled_training_steps(mod, cfg, 1e-3, ("default", "reduce-overhead"))
    rng = np.random.default_rng(5)
    for _ in range(4):
        idx = rng.integers(0, 64, (4, 32))
        tgt = rng.integers(0, 64, (4, 32))
        la, lb = (s(tj.tensor(idx, device="cuda"), tj.tensor(tgt, device="cuda"))
                  for s in steps)
        assert_close(lb.cpu(), la.cpu(), rtol=1e-5, atol=1e-6)
    for p, q in zip(models[0].parameters(), models[1].parameters()):
        assert_close(q.cpu(), p.cpu(), rtol=1e-4, atol=1e-6)
    st = _stats(steps[1], tj.tensor(idx, device="cuda"), tj.tensor(tgt, device="cuda"))
    assert st["replays"] >= 2
