"""The CUDA lowering of floor_divide, remainder and fmod, of argmax/argmin (and max(dim)'s
values and gradient), of cross_entropy on N-d inputs and of a concatenation of empty tensors:
the source compiles with `nvcc -ptx`, and the kernels that run without a GPU (one thread per
element or per column) are built with g++ and match the reference interpreter bit for bit."""
from __future__ import annotations

import numpy as np
import pytest

import tracejit as tj
from test_cuda_host import HostBuild
from test_cuda_source import _nvcc, _source, needs_nvcc
from tracejit.codegen.cuda_program import lower_program
from tracejit.codegen.fusion import plan as make_plan
from tracejit.ir.interpret import interpret
from tracejit.runtime.cuda_backend import prepare

DIVISION = ("floor_divide", "remainder", "fmod")


def _operands(dtype):
    """Dividends and divisors with the hard cases: zero divisors, int_min / -1, signed zeros,
    infinities, NaN."""
    rng = np.random.default_rng(0)
    if np.dtype(dtype).kind == "i":
        lo = np.iinfo(dtype).min
        a = np.concatenate([rng.integers(-60, 60, 90), [7, -7, 7, -7, 5, -5, lo, lo, 0, 9]])
        b = np.concatenate([rng.integers(1, 9, 90) * rng.choice([-1, 1], 90),
                            [2, 2, -2, -2, 0, 0, -1, 0, 3, -1]])
    else:
        a = np.concatenate([rng.standard_normal(90) * 10,
                            [0.0, -0.0, 5.0, -5.0, np.inf, 1.0, np.nan, 7.5, -7.5, 3.0]])
        b = np.concatenate([rng.standard_normal(90),
                            [3.0, -3.0, 0.0, -np.inf, 2.0, np.inf, 1.0, 2.5, 2.5, -0.5]])
    return a.astype(dtype), b.astype(dtype)


def test_division_kernels_run_like_the_interpreter(tmp_path):
    build = HostBuild()
    for dtype in (np.int32, np.int64, np.float32, np.float64):
        a, b = _operands(dtype)
        for name in DIVISION:
            assert build.add(lambda u, v, f=getattr(tj, name): f(u, v), [a, b])
    for graph, args, got in build.run(tmp_path):
        for g, w in zip(got, interpret(graph, args)):
            assert g.dtype == w.dtype
            np.testing.assert_array_equal(g.view(np.uint8), w.view(np.uint8),
                                          err_msg=graph.as_text())


def test_column_argmax_and_argmin_run_like_the_interpreter(tmp_path):
    """A reduction over the leading axis is one thread per column: it runs on the host."""
    x = np.random.default_rng(1).standard_normal((40, 7)).astype(np.float32)
    x[3, 2] = x[9, 2] = np.nan
    x[:, 4] = 1.0                                # all tied: the first index
    x[5, 5] = x[20, 5] = 9.0
    build = HostBuild()
    assert build.add(lambda v: (tj.argmax(v, 0), tj.argmin(v, 0)), [x])
    ((graph, args, got),) = build.run(tmp_path)
    want = interpret(graph, args)
    for g, w in zip(got, want):
        assert g.dtype == np.int64 and (g == w).all()
    assert got[0].tolist() == np.argmax(x, 0).tolist()
    assert got[1].tolist() == np.argmin(x, 0).tolist()


def test_cat_of_empty_tensors_lowers():
    e = np.zeros((0, 3), np.float32)
    graph = prepare(tj.compile(lambda a, b: tj.cat([a, b * 2]), device="cuda").lower(e, e).graph)
    prog = lower_program(make_plan(graph))        # was an AttributeError inside the lowering
    assert "__global__" in prog.source
    assert all(ln.grid > 0 for ln in prog.launches)       # nothing to launch for no elements


@needs_nvcc
def test_new_ops_compile_with_nvcc(tmp_path):
    def low(fn, *args):
        return tj.compile(fn, device="cuda").lower(*args).graph

    def grad(fn, *args):
        return tj.grad(tj.compile(fn, device="cuda")).lower(*args).graph

    graphs = []
    for dtype in (np.int32, np.int64, np.float32, np.float64, np.float16, tj.bfloat16.np):
        a, b = _operands(dtype if np.dtype(dtype).kind == "i" else np.float32)
        a, b = a.astype(dtype), b.astype(dtype)
        graphs.append((f"division_{np.dtype(dtype).name}",
                       low(lambda u, v: (u // v, u % v, tj.fmod(u, v)), a, b)))
    x = np.ones((64, 300), np.float32)
    graphs += [
        ("argmax_rows", low(lambda v: (tj.argmax(v, 1), tj.argmin(v, -1, keepdim=True)), x)),
        ("argmax_all", low(lambda v: tj.argmax(v), x)),
        ("max_dim_grad", grad(lambda v: v.max(1).values.sum() + v.min(0).values.sum(), x)),
        ("remainder_grad", grad(lambda v: tj.remainder(v, v * 0.5 + 2).sum(), x)),
        ("cross_entropy_nd", grad(lambda v: tj.cross_entropy(
            v.reshape(4, 16, 300), np.zeros((4, 300), np.int64), weight=np.ones(16, np.float32),
            label_smoothing=0.1, ignore_index=-1), x)),
        ("cat_empty", low(lambda u, v: tj.cat([u, v]), np.zeros((0, 3), np.float32),
                          np.zeros((0, 3), np.float32))),
    ]
    ptx = _nvcc(_source(graphs), tmp_path)
    assert "div.s64" in ptx and "div.s32" in ptx         # integer // and % (never by 0 or -1)
    assert "cvt.rmi.f32.f32" in ptx                     # floorf in the float floor division
