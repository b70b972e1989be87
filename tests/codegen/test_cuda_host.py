"""Generated CUDA loop kernels, run without a GPU: the source of a one-kernel program is
compiled for the host with g++ (a few shims stand in for CUDA's built-ins), every thread of the
launch runs in turn, and the results must match the reference interpreter. This executes the
index arithmetic, the 16-byte vector path, bfloat16 conversions, casts and literals that the
nvcc corpus only compiles. Loop kernels only: reductions need warps; float16 is left to the
GPU tests (its conversions are PTX instructions)."""
from __future__ import annotations

import ctypes
import shutil
import subprocess

import numpy as np
import pytest

import tracejit as tj
from cases import CASES, make_inputs
from tracejit.codegen.cuda_expr import STORE
from tracejit.codegen.cuda_lower import BF16, lower_program
from tracejit.codegen.fusion import plan as make_plan
from tracejit.ir.interpret import interpret
from tracejit.runtime.cuda_backend import prepare

pytestmark = pytest.mark.skipif(shutil.which("g++") is None, reason="g++ is not installed")

SHIMS = r"""#include <cmath>
#include <cstring>
#include <cstdlib>
#include <algorithm>
#include <climits>
using std::min; using std::max;
struct uint4 { unsigned int x, y, z, w; };
struct tj_dim { unsigned int x; };
static tj_dim threadIdx, blockIdx, blockDim, gridDim;
#define __global__
#define __device__
#define __forceinline__ inline
#define __launch_bounds__(n)
#define __restrict__
template <class To, class From> static To tj_bits(From f) {
  To t; std::memcpy(&t, &f, sizeof t); return t;
}
static unsigned int __float_as_uint(float f) { return tj_bits<unsigned int>(f); }
static float __uint_as_float(unsigned int u) { return tj_bits<float>(u); }
static float __int_as_float(int u) { return tj_bits<float>(u); }
static double __longlong_as_double(long long u) { return tj_bits<double>(u); }
// CUDA's round-toward-zero conversions saturate and send NaN to 0
template <class I> static I tj_rz(double x) {
  if (x != x) return 0;
  if (x >= (double)std::numeric_limits<I>::max()) return std::numeric_limits<I>::max();
  if (x <= (double)std::numeric_limits<I>::min()) return std::numeric_limits<I>::min();
  return (I)x;
}
static int __float2int_rz(float x) { return tj_rz<int>(x); }
static long long __float2ll_rz(float x) { return tj_rz<long long>(x); }
static int __double2int_rz(double x) { return tj_rz<int>(x); }
static long long __double2ll_rz(double x) { return tj_rz<long long>(x); }
"""


class HostBuild:
    """One-kernel programs lowered for CUDA, compiled together into one host library."""

    def __init__(self) -> None:
        self.parts: list[str] = [SHIMS + BF16]
        self.jobs: list = []

    def add(self, fn, args) -> bool:
        """Lower fn(*args); False (and nothing added) unless it is a single loop kernel."""
        graph = prepare(tj.compile(fn, device="cuda").lower(*args).graph)
        plan = make_plan(graph)
        if [k.kind for k in plan.kernels] != ["loop"]:
            return False
        n = len(self.jobs)
        prog = lower_program(plan, prefix=f"c{n}_", prelude=False)
        (launch,) = prog.launches
        params = ", ".join(f"({STORE[v.dtype.name]}*)a[{i}]" for i, v in enumerate(launch.args))
        self.parts.append(
            f"{prog.source}\n"
            f'extern "C" void run{n}(void** a) {{\n'
            f"  gridDim.x = {launch.grid}; blockDim.x = {launch.block};\n"
            f"  for (unsigned b = 0; b < {launch.grid}; b++)\n"
            f"    for (unsigned t = 0; t < {launch.block}; t++) {{\n"
            f"      blockIdx.x = b; threadIdx.x = t; {launch.name}({params});\n"
            f"    }}\n}}\n")
        self.jobs.append((graph, plan, launch, args))
        return True

    def run(self, tmp_path):
        """[(graph, args, outputs)] for every program added."""
        src, lib = tmp_path / "k.cpp", tmp_path / "k.so"
        src.write_text("\n".join(self.parts))
        r = subprocess.run(["g++", "-std=c++17", "-O1", "-shared", "-fPIC", "-w", "-o",
                            str(lib), str(src)], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr[-3000:]
        dll = ctypes.CDLL(str(lib))
        results = []
        for n, (graph, plan, launch, args) in enumerate(self.jobs):
            env = dict(zip(graph.inputs, args))
            for v in plan.constants:
                env[v] = np.ascontiguousarray(v.producer.params["value"])
            for v in launch.args:
                if v not in env:
                    env[v] = np.full(v.shape, 7, v.dtype.np)   # outputs: garbage until written
            arrays = [np.ascontiguousarray(env[v]) for v in launch.args]
            getattr(dll, f"run{n}")((ctypes.c_void_p * len(arrays))(
                *[a.ctypes.data for a in arrays]))
            out = dict(zip(launch.args, arrays))
            results.append((graph, args, [out[v] for v in graph.outputs]))
        return results


# the cases on (3, 4) with broadcasting partners (4,) and (3, 1)
SHAPES = {(3, 4): "rc", (4,): "c", (3, 1): "r1"}
ELEMENTWISE = [n for n, (_, _, specs) in CASES.items() if all(s in SHAPES for s, _ in specs)]


@pytest.mark.parametrize("rows,cols", [(64, 64), (37, 111)], ids=["vector", "scalar"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, tj.bfloat16.np],
                         ids=["f32", "f64", "bf16"])
def test_loop_kernels_match_the_interpreter(dtype, rows, cols, tmp_path):
    """Every elementwise case on a rows x cols loop (4096 elements: the 16-byte path)."""
    scale = {"rc": (rows, cols), "c": (cols,), "r1": (rows, 1)}
    build = HostBuild()
    for name in ELEMENTWISE:
        fn, _, specs = CASES[name]
        args = [a if a.dtype == np.bool_ else a.astype(dtype)
                for a in make_inputs([(scale[SHAPES[s]], dom) for s, dom in specs], seed=3)]
        try:
            build.add(fn, args)
        except (ValueError, IndexError):       # a case written for (3, 4) only (a reshape)
            pass
    assert len(build.jobs) >= 20
    tol = {np.dtype(np.float64): 1e-12, np.dtype(np.float32): 1e-5}.get(np.dtype(dtype),
                                                                         2.0 ** -6)
    for graph, args, got in build.run(tmp_path):
        for g, w in zip(got, interpret(graph, args)):
            assert g.dtype == w.dtype and g.shape == w.shape, graph
            np.testing.assert_allclose(g.astype(np.float64), w.astype(np.float64), rtol=tol,
                                       atol=tol, err_msg=graph.as_text())


def test_mixed_widths_and_casts_in_the_vector_path(tmp_path):
    """8 bfloat16 lanes per thread feeding float32, float64, int32 and bfloat16 outputs (one,
    two, four 16-byte words per thread); results identical to the interpreter's, bit for bit."""
    x = (np.random.default_rng(0).standard_normal(4096) * 100).astype(tj.bfloat16.np)

    def f(v):
        return v.float() * 2, v.double() + 1, tj.cast(v, tj.int32), v * v
    build = HostBuild()
    assert build.add(f, [x])
    ((graph, _, got),) = build.run(tmp_path)
    for g, w in zip(got, interpret(graph, [x])):
        assert g.dtype == w.dtype
        assert (g.view(np.uint8) == w.view(np.uint8)).all()
