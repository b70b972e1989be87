"""col2im in gather form (window_taps + a leading-axis sum) on the CUDA side: the generated
kernels of a convolution's input gradient and an overlapping pool's backward compile with nvcc,
run on the host (g++ emulation) like the reference interpreter, and, on a real GPU, match
NumPy/torch."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import tracejit as tj
from test_cuda_host import HostBuild
from test_cuda_source import _nvcc, _source, needs_nvcc
from tracejit.ir.interpret import interpret
from tracejit.ir.prims_windows import col2im
from tracejit.nn import functional as F

KW = dict(stride=(2, 1), padding=(1, 2), dilation=(1, 2), groups=2)


def _conv_input_grad(x, w, g):
    return tj.grad(lambda x: (F.conv2d(x, w, **KW) * g).sum())(x)


def _data(dtype=np.float32):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 4, 9, 7)).astype(dtype)
    w = rng.standard_normal((6, 2, 3, 3)).astype(dtype)
    out = TF.conv2d(torch.tensor(x), torch.tensor(w), None, **KW).shape
    return x, w, rng.standard_normal(tuple(out)).astype(dtype)


def test_gather_col2im_kernels_run_like_the_interpreter(tmp_path):
    # (a convolution's input gradient also runs a cuBLAS GEMM, which needs the GPU: its
    # col2im is the same window_taps + sum as these)
    x, _, _ = _data()
    rng = np.random.default_rng(6)
    a = rng.standard_normal((2, 3, 3, 2, 4, 5)).astype(np.float32)
    b = rng.standard_normal((1, 2, 3, 3, 5, 4)).astype(np.float64)
    build = HostBuild()
    assert build.add(lambda c: col2im(c, (9, 7), (2, 1), (1, 2), lo=(1, 0)), [a])
    assert build.add(lambda c: col2im(c, (9, 7), (2, 2), (1, 1), lo=(1, 1)), [b])
    assert build.add(tj.grad(lambda v: (F.avg_pool2d(v, 3, 2, 1) ** 2).sum()), [x])
    ran = 0
    for graph, args, got in build.run(tmp_path):
        for u, v in zip(got, interpret(graph, args)):
            np.testing.assert_allclose(u, v, rtol=1e-5, atol=1e-5)
        ran += 1
    assert ran == 3


@needs_nvcc
def test_gather_col2im_compiles_with_nvcc(tmp_path):
    graphs = []
    for dtype in (np.float32, np.float64, np.float16):
        x, w, g = _data(dtype)
        graphs.append((f"conv_input_grad_{np.dtype(dtype).name}",
                       tj.compile(_conv_input_grad, device="cuda").lower(x, w, g).graph))
    ptx = _nvcc(_source(graphs), tmp_path)
    assert ptx.count(".entry") >= 3


@pytest.mark.gpu
@pytest.mark.skipif(not tj.cuda_available(), reason="needs an NVIDIA GPU and CuPy")
def test_conv_input_grad_on_the_gpu_matches_torch():
    x, w, g = _data(np.float64)
    xt = torch.tensor(x, requires_grad=True)
    TF.conv2d(xt, torch.tensor(w), None, **KW).backward(torch.tensor(g))
    got = tj.compile(_conv_input_grad)(*(tj.tensor(a, device="cuda") for a in (x, w, g)))
    np.testing.assert_allclose(got.cpu().numpy(), xt.grad.numpy(), rtol=1e-10, atol=1e-10)
