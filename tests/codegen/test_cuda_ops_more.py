"""The composed ops (tril/triu, masked_fill, flip, roll, repeat, one_hot, einsum, diag,
diagonal, index_select, kron, gather, scatter_add, norm, std) through the CUDA lowering without a GPU: forward and
gradient programs compile with `nvcc -ptx`, and those whose kernels need no block cooperation
run on the host (g++, every thread in turn) and match the reference interpreter."""
from __future__ import annotations

import numpy as np
import pytest

import tracejit as tj
from test_cuda_host import HostBuild
from test_cuda_source import NVCC, _nvcc, _source
from tracejit.ir.interpret import interpret


def _cases(dtype):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((37, 45)).astype(dtype)
    sq = rng.standard_normal((6, 6)).astype(dtype)
    v = rng.standard_normal(9).astype(dtype)
    b3 = rng.standard_normal((2, 5, 7)).astype(dtype)
    m = rng.random((37, 45)) > 0.5
    idx = rng.integers(0, 10, (13,))
    return [
        ("tril", lambda a: tj.tril(a, 2), [x]),
        ("triu", lambda a: tj.triu(a, -3), [x]),
        ("masked_fill", lambda a, k: a.masked_fill(k, -2.0), [x, m]),
        ("flip", lambda a: tj.flip(a, (0, 1)), [x]),
        ("roll", lambda a: tj.roll(a, (3, -5), (0, 1)), [x]),
        ("repeat", lambda a: a.repeat(2, 1, 3), [b3]),
        ("one_hot", lambda i: tj.one_hot(i, 10), [idx]),
        ("einsum_trace", lambda a: tj.einsum("ii->i", a), [sq]),
        ("einsum_outer", lambda a, c: tj.einsum("i,j->ij", a, c), [v, v[::-1].copy()]),
        ("diag", lambda a: tj.diag(a, 1), [v]),
        ("diagonal", lambda a: tj.diagonal(a, -2, 1, 2), [b3]),
        ("index_select", lambda a: tj.index_select(a, 1, tj.tensor([4, 0, 4, 2])), [b3]),
        ("kron", tj.kron, [sq[:2, :3].copy(), sq[:3, :2].copy()]),
        ("gather", lambda a, i: tj.gather(a, 1, i), [x, rng.integers(0, 45, (37, 7))]),
        ("scatter_add", lambda a, i, s: tj.scatter_add(a, 0, i, s),
         [x, rng.integers(0, 37, (5, 45)), x[:5].copy()]),
        ("norm", lambda a: tj.norm(a, 3, dim=1), [x]),
        ("std", lambda a: tj.std(a, 0), [x]),
    ]


def _programs(dtype):
    """(label, fn, args) for the forward and the gradient of every case."""
    out = []
    for name, fn, args in _cases(dtype):
        out.append((name, fn, args))
        pos = tuple(i for i, a in enumerate(args) if a.dtype.kind == "f")
        if pos:
            g = tj.grad(lambda *a, fn=fn: (fn(*a) * 1.5).sum(), argnums=pos)
            out.append((name + "_grad", g, args))
    return out


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_composed_ops_run_on_the_host_like_the_interpreter(dtype, tmp_path):
    build = HostBuild()
    ran = [label for label, fn, args in _programs(dtype) if build.add(fn, args)]
    assert len(ran) >= 15, ran
    for graph, args, got in build.run(tmp_path):
        for g, w in zip(got, interpret(graph, args)):
            assert g.dtype == w.dtype and g.shape == w.shape
            np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6, err_msg=graph.as_text())


@pytest.mark.skipif(NVCC is None, reason="nvcc is not installed")
def test_composed_ops_compile_with_nvcc(tmp_path):
    graphs = [(f"{label}_{np.dtype(dtype).name}",
               tj.compile(fn, device="cuda").lower(*args).graph)
              for dtype in (np.float32, np.float64) for label, fn, args in _programs(dtype)]
    _nvcc(_source(graphs), tmp_path)          # asserts that nvcc accepts every kernel
