"""The scan kernel (cumsum/cumprod): LLVM code bit for bit equal to the interpreter (the same
sequential order and accumulator), with fused producers, reversed scans, every axis, sizes 0
and 1, 16-bit and integer dtypes, rows split across threads; and the CUDA source run on the
host (g++, every thread of every launch, tests/codegen/test_cuda_host.py's harness) against
the interpreter."""
from __future__ import annotations

import importlib.util
import os

import numpy as np
import pytest

import tracejit as tj
from tracejit.ir.interpret import interpret
from tracejit.ir.prims_scan import cumprod, cumsum


def _host_build():
    path = os.path.join(os.path.dirname(__file__), "test_cuda_host.py")
    spec = importlib.util.spec_from_file_location("_cuda_host_harness", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.HostBuild()


def _fns():
    """(label, function) pairs: forward scans with producers, reversed scans (the gradient
    of cumsum) and a cumprod gradient (scans of scans)."""
    return [
        ("cumsum_fused", lambda a: tj.cumsum(a * 2 + 1, -1)),
        ("cumprod_axis0", lambda a: tj.cumprod(a, 0)),
        ("cumsum_reverse", lambda a: cumsum(a, a.ndim - 1, True)),
        ("cumprod_reverse", lambda a: cumprod(a, 0, True)),
        ("cumprod_grad", tj.grad(lambda a: (tj.cumprod(a, 1) * a).sum())),
    ]


DTYPES = [np.float32, np.float64, np.float16, tj.bfloat16.np]


@pytest.mark.parametrize("shape", [(5, 7), (1, 1), (0, 3), (4, 0), (9,), (2, 3, 4)])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64", "f16", "bf16"])
def test_llvm_scans_equal_the_interpreter(shape, dtype):
    x = np.random.default_rng(0).standard_normal(shape)
    x.reshape(-1)[::5] = 0.0
    x = x.astype(dtype)
    for label, fn in _fns():
        if label == "cumprod_grad" and (len(shape) < 2 or dtype not in (np.float32, np.float64)):
            continue
        got = tj.compile(fn)(x).numpy()
        want = tj.compile(fn, backend="interpreter")(x).numpy()
        assert got.dtype == want.dtype
        if label == "cumprod_grad":        # generated code contracts a * b + c into an FMA
            np.testing.assert_allclose(got, want, rtol=1e-6 if dtype == np.float32 else 1e-14,
                                       atol=1e-7 if dtype == np.float32 else 1e-15,
                                       err_msg=label)
        elif label == "cumsum_fused" and dtype in (np.float16, tj.bfloat16.np):
            # a fused 16-bit producer is rounded once, at the store (README), where the
            # interpreter rounds a * 2 and + 1 each
            np.testing.assert_allclose(got.astype(np.float64), want.astype(np.float64),
                                       rtol=2e-2, atol=3e-2, err_msg=label)
        else:
            np.testing.assert_array_equal(got, want, err_msg=label)


def test_llvm_scans_of_integers_and_parallel_rows():
    x = np.random.default_rng(1).integers(-3, 4, (40000, 5))
    for fn in (lambda a: tj.cumsum(a, 1), lambda a: tj.cumprod(a, 1), lambda a: tj.cumsum(a, 0)):
        np.testing.assert_array_equal(tj.compile(fn)(x).numpy(),
                                      tj.compile(fn, backend="interpreter")(x).numpy())
    # big enough to be split across threads: rows in parallel, each still sequential
    y = np.random.default_rng(2).standard_normal((300000, 3)).astype(np.float32)
    np.testing.assert_array_equal(tj.compile(lambda a: tj.cumsum(a, 1))(y).numpy(),
                                  np.cumsum(y.astype(np.float64), 1).astype(np.float32))


def test_cuda_scan_kernels_run_on_the_host(tmp_path):
    build, added = _host_build(), 0
    rng = np.random.default_rng(3)
    for d in (np.float32, np.float64, tj.bfloat16.np):
        for shape in ((6, 9), (1, 1), (3, 4, 5)):
            x = rng.standard_normal(shape)
            x.reshape(-1)[::4] = 0.0
            for label, fn in _fns():
                if label == "cumprod_grad" and d is not np.float32:
                    continue
                added += build.add(fn, [x.astype(d)])
    added += build.add(lambda a: tj.cumsum(a, 0), [rng.integers(-9, 9, (30, 7))])
    assert added >= 30
    for graph, args, got in build.run(tmp_path):
        for g, w in zip(got, interpret(graph, args)):
            assert g.dtype == w.dtype
            # bfloat16: fused producers round once at the store, the interpreter at each op
            tol = 2.0 ** -4 if g.dtype == tj.bfloat16.np else 1e-6
            np.testing.assert_allclose(g.astype(np.float64), w.astype(np.float64), rtol=tol,
                                       atol=tol, err_msg=graph.as_text())
