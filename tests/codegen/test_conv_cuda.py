"""The CUDA lowering of convolution and pooling: the im2col + GEMM expansion of conv2d and its
gradients, and the pooling kernels (windows read inside the reduction, col2im for their
gradients), compile with `nvcc -ptx`; the kernels that need no real GPU (pooling forward and
backward, the im2col and col2im loops) are built with g++ and match the reference interpreter."""
from __future__ import annotations

import numpy as np

import tracejit as tj
from test_cuda_host import HostBuild
from test_cuda_source import _nvcc, _source, needs_nvcc
from tracejit.ir.interpret import interpret
from tracejit.ir.prims_conv import col2im, windows
from tracejit.nn import functional as F

KW = dict(stride=(2, 1), padding=1, dilation=(1, 2), groups=2)


def _pool_loss(x):
    return (F.max_pool2d(x, 3, 2, 1) ** 2).sum() + F.avg_pool2d(x, 2, ceil_mode=True).sum() + \
        F.avg_pool2d(x, 3, 2, 1, count_include_pad=False).sum()


@needs_nvcc
def test_conv_and_pool_graphs_compile_with_nvcc(tmp_path):
    rng = np.random.default_rng(0)
    graphs = []
    for dtype in (np.float32, np.float64, np.float16, tj.bfloat16.np):
        x = rng.standard_normal((2, 4, 7, 6)).astype(dtype)
        w = rng.standard_normal((6, 2, 3, 2)).astype(dtype)
        b = rng.standard_normal(6).astype(dtype)

        def conv(x, w, b):
            return (F.conv2d(x, w, b, **KW) ** 2).sum()

        name = np.dtype(dtype).name
        graphs += [
            (f"conv_{name}", tj.compile(conv, device="cuda").lower(x, w, b).graph),
            (f"conv_grad_{name}", tj.grad(tj.compile(conv, device="cuda"), argnums=(0, 1, 2))
             .lower(x, w, b).graph),
            (f"pool_grad_{name}", tj.grad(tj.compile(_pool_loss, device="cuda")).lower(x).graph),
            (f"adaptive_{name}", tj.compile(lambda v: F.adaptive_avg_pool2d(v, (3, 4)),
                                            device="cuda").lower(x).graph),
        ]
    ptx = _nvcc(_source(graphs), tmp_path)
    assert ptx.count(".entry") > 20


def test_pooling_and_im2col_kernels_run_like_the_interpreter(tmp_path):
    x = np.random.default_rng(1).standard_normal((2, 3, 7, 6)).astype(np.float32)
    x[0, 0, 1, 1] = x[0, 0, 1, 2] = 5.0            # a tie: the first position wins
    build = HostBuild()
    assert build.add(lambda v: (F.max_pool2d(v, 3, 2, 1), F.avg_pool2d(v, 2, ceil_mode=True)),
                     [x])
    assert build.add(tj.grad(_pool_loss), [x])
    assert build.add(lambda v: col2im(windows(v, (2, 3), (2, 1), (1, 2)) * 2.0, (7, 6), (2, 1),
                                      (1, 2)), [x])
    for graph, args, got in build.run(tmp_path):
        for g, w in zip(got, interpret(graph, args)):
            np.testing.assert_allclose(g, w, rtol=1e-6, atol=1e-5, err_msg=graph.as_text())


def _pool3d_loss(x):
    return (F.max_pool3d(x, 3, 2, 1) ** 2).sum() + \
        F.avg_pool3d(x, (2, 3, 2), (1, 2, 1), count_include_pad=False, padding=1).sum()


@needs_nvcc
def test_conv3d_and_pool3d_graphs_compile_with_nvcc(tmp_path):
    """The 3-D family (conv3d and its gradients expanded to 3-D windows + GEMM + 3-D
    window_taps, the 3-D pools) renders to CUDA that nvcc accepts."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 4, 5, 4, 3)).astype(np.float32)
    w = rng.standard_normal((6, 2, 2, 3, 2)).astype(np.float32)

    def conv(x, w):
        return (F.conv3d(x, w, stride=(2, 1, 1), padding=1, groups=2) ** 2).sum()

    graphs = [("conv3d_grad", tj.grad(tj.compile(conv, device="cuda"), argnums=(0, 1))
               .lower(x, w).graph),
              ("pool3d_grad", tj.grad(tj.compile(_pool3d_loss, device="cuda")).lower(x).graph)]
    ptx = _nvcc(_source(graphs), tmp_path)
    assert ptx.count(".entry") > 5


def test_pool3d_and_col2im_3d_kernels_run_like_the_interpreter(tmp_path):
    x = np.random.default_rng(2).standard_normal((2, 2, 5, 4, 6)).astype(np.float32)
    build = HostBuild()
    assert build.add(tj.grad(_pool3d_loss), [x])
    assert build.add(lambda v: col2im(windows(v, (2, 1, 3), (1, 2, 2), (2, 1, 1)) * 2.0,
                                      (5, 4, 6), (1, 2, 2), (2, 1, 1), lo=(1, 0, 1)), [x])
    for graph, args, got in build.run(tmp_path):
        for g, w in zip(got, interpret(graph, args)):
            np.testing.assert_allclose(g, w, rtol=1e-6, atol=1e-5, err_msg=graph.as_text())
