"""The CUDA C of uint8, int8 and int16 kernels, run on the host (test_cuda_host.py's g++ build
of the generated source): wrapping arithmetic in `unsigned char` / `signed char` / `short`
locals, uint8's unsigned compare and divide, float -> small int casts, the shifts with
counts outside [0, bits) and scatter-adds (widened to int32 by the backend), against the reference interpreter and torch, on the 16-byte vector
path and the scalar one."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

import tracejit as tj
from test_cuda_host import HostBuild
from tracejit.ir.interpret import interpret

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.skipif(shutil.which("g++") is None, reason="g++ is not installed")


def _f(x, n, m):
    return (x * 3 + 200, x // (x | 1), x % 7, x < n, -x, abs(x), x << n, x >> n, x >> 2,
            (x.float() * 2.7 - 50).to(x.dtype), m.maximum(x, n), x.long() - 1,
            x.index_add(0, m.tensor([1, 3, 1]), x[:3] * 50))      # (scatter-add in int32)


def _counts(dtype, shape, rng):
    w = np.iinfo(dtype).bits
    lo = -3 if np.iinfo(dtype).min < 0 else 0
    return rng.integers(lo, w + 3, shape).astype(dtype)


@pytest.mark.parametrize("shape", [(64, 64), (37, 11)], ids=["vector", "scalar"])
def test_small_int_kernels_run_on_the_host(shape, tmp_path):
    rng = np.random.default_rng(0)
    build = HostBuild()
    for d in (np.uint8, np.int8, np.int16):
        info = np.iinfo(d)
        x = rng.integers(info.min, int(info.max) + 1, shape, dtype=d)
        assert build.add(lambda a, b: _f(a, b, tj), [x, _counts(d, shape, rng)])
    for graph, args, got in build.run(tmp_path):
        want_t = _f(*(torch.tensor(a) for a in args), torch)
        for i, (g, w, wt) in enumerate(zip(got, interpret(graph, args), want_t)):
            assert g.dtype == w.dtype == wt.numpy().dtype, i
            np.testing.assert_array_equal(g, w, err_msg=f"op {i}")
            np.testing.assert_array_equal(g, wt.numpy(), err_msg=f"op {i} vs torch")
