"""The disk cache of whole CUDA executables (runtime/cuda_exe_cache.py) on a real GPU: a new
process finds the executable, builds no plan or source, and computes bit for bit the cold
process's numbers, which match NumPy. Marked `gpu`; skipped cleanly without CuPy and a GPU."""

import numpy as np
import pytest

import tracejit as tj
from child_process import run_child

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not tj.cuda_available(), reason="needs an NVIDIA GPU and CuPy")]


_CHILD = """
import json
import numpy as np
import tracejit as tj
from tracejit.runtime import cuda_backend

plans = []
real = cuda_backend.make_plan
cuda_backend.make_plan = lambda g: (plans.append(1), real(g))[1]

def step(x, w, b, idx, scale):
    h = tj.tanh(x @ w + b) * scale
    p = tj.softmax(h, axis=-1)
    return (p * 2.0).sum(axis=0), h[idx].max(), x.T @ h

rng = np.random.default_rng(0)
x = rng.standard_normal((64, 32)).astype(np.float32)
w = rng.standard_normal((32, 16)).astype(np.float32)
b = rng.standard_normal(16).astype(np.float32)
outs = {}
for mode in ("default", "reduce-overhead"):
    f = tj.compile(step, mode=mode)
    r = f(tj.tensor(x, device="cuda"), tj.tensor(w, device="cuda"), b, np.array([3, 1]), 0.5)
    outs[mode] = [o.cpu().numpy().tolist() for o in r]
    exe = f.lower(tj.tensor(x, device="cuda"), tj.tensor(w, device="cuda"), b,
                  np.array([3, 1]), 0.5)._entry.exe
    outs[mode + " cached"] = exe.cached
print(json.dumps({"outs": outs, "plans": len(plans)}))
"""


def _child(cache_dir):
    return run_child(_CHILD, cache_dir)


def test_a_new_process_loads_the_whole_executable(tmp_path):
    cold = _child(tmp_path)
    assert cold["plans"] >= 1 and not cold["outs"]["default cached"]
    hit = _child(tmp_path)
    assert hit["plans"] == 0                      # no fusion plan, schedule or source
    assert hit["outs"]["default cached"] and hit["outs"]["reduce-overhead cached"]
    for mode in ("default", "reduce-overhead"):
        assert hit["outs"][mode] == cold["outs"][mode], mode      # bit for bit
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 32))
    w = rng.standard_normal((32, 16))
    b = rng.standard_normal(16).astype(np.float32).astype(np.float64)
    x, w = x.astype(np.float32).astype(np.float64), w.astype(np.float32).astype(np.float64)
    h = np.tanh(x @ w + b) * 0.5
    p = np.exp(h - h.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    s, m, xh = (np.array(a) for a in hit["outs"]["default"])
    np.testing.assert_allclose(s, (p * 2.0).sum(0), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(m, h[[3, 1]].max(), rtol=1e-5)
    np.testing.assert_allclose(xh, x.T @ h, rtol=1e-4, atol=1e-4)
