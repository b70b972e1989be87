"""On a real GPU: CUDA graphs that write parameters' new values in place from their kernels
(runtime/cuda_graphs.py, _Recording._in_place), and stage host values in pinned memory copied
asynchronously (_Recording.load), give the plain launches' numbers step after step, with no
synchronization between steps (a missing event wait or an unsafe in-place write would show as
wrong numbers). Marked `gpu`; skipped cleanly without CuPy and a GPU."""
import numpy as np
import pytest

import tracejit as tj
from conftest import assert_close
from tracejit.runtime.cuda_graphs import CudaGraphExecutable

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not tj.cuda_available(), reason="needs an NVIDIA GPU and CuPy"),
              pytest.mark.filterwarnings("error::RuntimeWarning")]


@pytest.mark.parametrize("case", ["elementwise", "transposed read", "reduction reads it",
                                  "two updates", "adamw-like"])
def test_in_place_updates_match_plain_launches(case):
    rng = np.random.default_rng(0)
    n = 512
    w0 = rng.standard_normal((n, n)).astype(np.float32) * 0.05
    xs = [rng.standard_normal((64, n)).astype(np.float32) for _ in range(30)]

    def step(w, m, v, x, lr, t):
        if case == "elementwise":
            w.sub_(lr * tj.tanh(x.T @ x) * 1e-3)
        elif case == "transposed read":
            w.sub_(w.T * lr)
        elif case == "reduction reads it":
            w.sub_(lr * (w * w).sum() * 1e-4)
        elif case == "two updates":
            w.add_(lr * 1e-3)
            m.mul_(w)
        else:
            g = (x.T @ x) * 1e-3
            m.mul_(0.9).add_(g * 0.1)
            v.mul_(0.99).add_(g * g * 0.01)
            w.sub_(lr * (m / (1 - 0.9 ** t)) / (tj.sqrt(v / (1 - 0.99 ** t)) + 1e-8))
        return (w * m).sum() + v.sum()
    state = {mode: [tj.tensor(a.copy(), device="cuda") for a in (w0, w0 + 1, np.abs(w0))]
             for mode in ("default", "reduce-overhead")}
    fns = {mode: tj.compile(lambda x, lr, t, mode=mode: step(*state[mode], x, lr, t),
                            mode=mode) for mode in state}
    outs = {mode: [] for mode in state}
    for mode, f in fns.items():                # no synchronization between steps
        for k, x in enumerate(xs):
            outs[mode].append(f(tj.tensor(x, device="cuda"), 0.01 * (1 + k % 3), k + 1.0))
    for a, b in zip(outs["default"], outs["reduce-overhead"]):
        assert_close(b.cpu(), a.cpu(), rtol=1e-5)
    for p, q in zip(*state.values()):
        assert_close(q.cpu(), p.cpu(), rtol=1e-5, atol=1e-6)
    exe = fns["reduce-overhead"].lower(tj.tensor(xs[0], device="cuda"), 0.01, 1.0)._entry.exe
    assert isinstance(exe, CudaGraphExecutable) and exe.plain_reason is None
    (rec,) = exe._recordings.values()
    assert rec._pinned is not None
    if case in ("elementwise", "adamw-like"):
        assert rec.in_place
