"""take_along on the CUDA side: its read (the index map) and its gradient (a select against
the index) as generated CUDA, run on the host (g++ emulation) like the reference interpreter;
on a real GPU, cross_entropy's gradient against torch."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import tracejit as tj
from test_cuda_host import HostBuild
from tracejit.ir import P, bind
from tracejit.ir.interpret import interpret
from tracejit.nn import functional as F


def _take(x, i):
    return bind(P.take_along, x, i, axis=1) * 2.0


def test_take_along_kernels_run_like_the_interpreter(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 7, 3)).astype(np.float32)
    idx = rng.integers(-7, 7, (5, 3))
    g = rng.standard_normal((5, 3)).astype(np.float32)
    # the indices are constants of the program (indices read at run time also get the
    # compiled bounds check, a block reduction, which the host emulation leaves to the GPU)
    build = HostBuild()
    assert build.add(lambda x: _take(x, tj.tensor(idx)), [x])
    assert build.add(tj.grad(lambda x, g: (_take(x, tj.tensor(idx)) * g).sum()), [x, g])
    ran = 0
    for graph, args, got in build.run(tmp_path):
        for a, b in zip(got, interpret(graph, args)):
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
        ran += 1
    assert ran == 2


@pytest.mark.gpu
@pytest.mark.skipif(not tj.cuda_available(), reason="needs an NVIDIA GPU and CuPy")
def test_cross_entropy_grad_on_the_gpu_matches_torch():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((64, 300))
    t = rng.integers(0, 300, 64)
    t[3] = -1
    xt = torch.tensor(x, requires_grad=True)
    TF.cross_entropy(xt, torch.tensor(t), ignore_index=-1).backward()
    fn = tj.compile(tj.grad(lambda x, t: F.cross_entropy(x, t, ignore_index=-1)))
    got = fn(tj.tensor(x, device="cuda"), tj.tensor(t, device="cuda"))
    np.testing.assert_allclose(got.cpu().numpy(), xt.grad.numpy(), rtol=1e-10, atol=1e-12)
