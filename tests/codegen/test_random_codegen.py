"""The random primitive in generated code: the LLVM kernels and the CUDA kernels (built for the
host with g++, see test_cuda_host.py) compute the interpreter's Philox numbers, bit for bit
for uniforms (integer-only), to an ulp or two for normals (each backend's log and cos), in the
16-byte vector path and the scalar path; the CUDA source compiles with nvcc."""
from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest

import tracejit as tj
from test_cuda_host import HostBuild
from tracejit.codegen.cuda_lower import PRELUDE
from tracejit.codegen.cuda_program import lower_program
from tracejit.codegen.fusion import plan as make_plan
from tracejit.ir.interpret import interpret
from tracejit.runtime.cuda_backend import prepare

# seeds and offsets that exercise both 32-bit halves and the sign bit of the int64 inputs
STATES = [(0, 0), (-5, 12345678901), (2 ** 63 - 1, 2 ** 62 + 7)]


def program(x):
    """Uniforms and normals in both widths, through broadcasts, a transpose, a reduction and
    dropout, fused with ordinary elementwise work."""
    n, m = x.shape
    u = x + tj.rand(1, m)
    z = tj.randn(n, m, dtype=tj.float64)
    t = tj.rand(m, n).T * x
    s = (tj.randn(n, m) * x).sum(1)
    return u, z, t, s, tj.dropout(x, 0.3), tj.rand(n, m, dtype=tj.float64), tj.randn(3)


NORMAL = (1, 3, 6)          # outputs that went through log/cos


def _hidden(seed, offset):
    return [np.array(seed, np.int64), np.array(offset, np.int64)]


def _compare(got, want, graph):
    for k, (g, w) in enumerate(zip(got, want)):
        assert g.dtype == w.dtype and g.shape == w.shape
        if k in NORMAL:
            tol = 1e-13 if g.dtype == np.float64 else 4e-6
            np.testing.assert_allclose(g, w, rtol=tol, atol=tol, err_msg=graph.as_text())
        else:
            assert np.array_equal(g, w), (k, graph.as_text())


@pytest.mark.parametrize("shape", [(64, 64), (37, 11), (1, 1)], ids=["vector", "scalar", "one"])
def test_llvm_matches_the_interpreter(shape):
    x = np.linspace(-1, 1, int(np.prod(shape)), dtype=np.float32).reshape(shape)
    f = tj.compile(program)
    graph = f.lower(x).graph
    exe = f._cache[next(iter(f._cache))].exe
    for seed, off in STATES:
        args = [x] + _hidden(seed, off)
        _compare(exe.run(args), interpret(graph, args), graph)


@pytest.mark.skipif(shutil.which("g++") is None, reason="g++ is not installed")
def test_cuda_kernels_run_on_the_host_match_the_interpreter(tmp_path):
    build = HostBuild()
    for shape in ((64, 64), (37, 11)):
        x = np.linspace(-1, 1, int(np.prod(shape)), dtype=np.float32).reshape(shape)
        for seed, off in STATES:
            # the row sum needs a block reduction (GPU only): leave it out here
            fn = lambda v: tuple(o for k, o in enumerate(program(v)) if k != 3)  # noqa: E731
            assert build.add(fn, [x])
            graph, plan, slots, args = build.jobs[-1]
            build.jobs[-1] = (graph, plan, slots, args + _hidden(seed, off))
    assert any("uint4" in p for p in build.parts)           # the 16-byte path was taken
    for graph, args, got in build.run(tmp_path):
        want = interpret(graph, args)
        for k, (g, w) in enumerate(zip(got, want)):
            normal = k in (1, 5)
            if normal:
                tol = 1e-13 if g.dtype == np.float64 else 4e-6
                np.testing.assert_allclose(g, w, rtol=tol, atol=tol)
            else:
                assert np.array_equal(g, w), (k, graph.as_text())


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not installed")
def test_random_kernels_compile_with_nvcc(tmp_path):
    x = np.ones((64, 64), np.float32)
    graphs = [tj.compile(program, device="cuda").lower(x).graph,
              tj.compile(lambda v: tj.dropout(v, 0.5), device="cuda").lower(x[:3, :5]).graph]
    parts = [PRELUDE]
    for i, g in enumerate(graphs):
        parts.append(lower_program(make_plan(prepare(g)), prefix=f"g{i}_", prelude=False).source)
    cu = tmp_path / "random.cu"
    cu.write_text("\n".join(parts))
    r = subprocess.run([shutil.which("nvcc"), "-ptx", "-arch=sm_90", "-o",
                        str(tmp_path / "random.ptx"), str(cu)], capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-4000:]
    ptx = (tmp_path / "random.ptx").read_text()
    assert "mul.wide.u32" in ptx or "mul.hi.u32" in ptx      # Philox's 32x32->64 products
