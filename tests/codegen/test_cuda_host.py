"""Generated CUDA kernels, run without a GPU: the CUDA source of a compiled program is built
for the host with g++ (a few shims stand in for CUDA's built-ins; atomics become plain adds),
every thread of every launch runs in turn, and the results must match the reference
interpreter. This executes the index arithmetic, the 16-byte vector path, bfloat16
conversions, casts, literals, scatter-adds and column sums that the nvcc corpus only compiles.
Programs whose kernels cooperate within a block (warp shuffles, `__syncthreads`) are left to the
GPU tests, as is float16 (its conversions are PTX instructions)."""
from __future__ import annotations

import ctypes
import shutil
import subprocess

import numpy as np
import pytest

import tracejit as tj
from cases import CASES, bits_sweep, make_inputs
from tracejit.codegen.cuda_expr import STORE
from tracejit.codegen.cuda_lower import PORTABLE
from tracejit.codegen.cuda_program import lower_program
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
template <class T> static T atomicAdd(T* p, T v) { T old = *p; *p += v; return old; }
"""


def host_launch(function: str, grid: int, block: int, args: list, slots: dict) -> list[str]:
    """C++ lines running one launch on the host: every thread of every block in turn, with
    argument v at a[slots[v]] of the `void** a` in scope."""
    params = ", ".join(f"({STORE[v.dtype.name]}*)a[{slots[v]}]" for v in args)
    return [f"  gridDim.x = {grid}; blockDim.x = {block};",
            f"  for (unsigned b = 0; b < {grid}; b++)",
            f"    for (unsigned t = 0; t < {block}; t++) {{",
            f"      blockIdx.x = b; threadIdx.x = t; {function}({params});", "    }"]


def build_host(source: str, tmp_path, name: str = "k") -> ctypes.CDLL:
    """The C++ source built by g++ as a shared library and loaded."""
    src, lib = tmp_path / f"{name}.cpp", tmp_path / f"{name}.so"
    src.write_text(source)
    r = subprocess.run(["g++", "-std=c++17", "-O1", "-shared", "-fPIC", "-w", "-o",
                        str(lib), str(src)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    return ctypes.CDLL(str(lib))


def run_in_one_arena(graph, plan, prog, args: list, tmp_path) -> list[np.ndarray]:
    """The outputs of CUDA program `prog` (lowered from `plan` without the prelude) run on the
    host, with every intermediate at its memory-plan offset in ONE arena of poisoned bytes (a
    launch reading what no launch wrote, or a plan overlapping two live buffers, shows in the
    numbers) and the outputs in memory of their own."""
    mem = prog.memory
    order = list(dict.fromkeys(v for ln in prog.launches for v in ln.args))
    slots = {v: i for i, v in enumerate(order)}
    lines = [SHIMS + PORTABLE, prog.source, 'extern "C" void run(void** a) {']
    for ln in prog.launches:
        lines += host_launch(ln.function, ln.grid, ln.block, ln.args, slots)
    dll = build_host("\n".join(lines + ["}"]), tmp_path)
    arena = np.full(max(mem.arena_bytes, 1), 0x7f, np.uint8)      # garbage until written
    env = dict(zip(graph.inputs, args))
    for v in plan.constants:
        env[v] = np.ascontiguousarray(v.producer.params["value"])
    for v in prog.temps:
        off, n = mem.offsets[v], mem.sizes[v]
        env[v] = arena[off:off + n].view(v.dtype.np).reshape(v.shape)
    for v in order + list(graph.outputs):
        if v not in env:                # outputs (of a size-0 graph too, never written)
            env[v] = np.full(v.shape, 7, v.dtype.np)
    ptrs = [env[v].ctypes.data for v in order]
    dll.run((ctypes.c_void_p * len(ptrs))(*ptrs))
    return [env[v] for v in graph.outputs]


class HostBuild:
    """Compiled programs lowered for CUDA, built together into one host library."""

    def __init__(self) -> None:
        self.parts: list[str] = [SHIMS + PORTABLE]
        self.jobs: list = []

    def add(self, fn, args) -> bool:
        """Lower fn(*args); False (and nothing added) if a kernel needs a real GPU."""
        graph = prepare(tj.compile(fn, device="cuda").lower(*args).graph)
        plan = make_plan(graph)
        n = len(self.jobs)
        prog = lower_program(plan, prefix=f"c{n}_", prelude=False)
        if any(ln.kind != "kernel" for ln in prog.launches) or \
                any(t in prog.source for t in ("tj_block_reduce", "__syncthreads", "__shfl")):
            return False
        slots = {v: i for i, v in enumerate(dict.fromkeys(
            v for ln in prog.launches for v in ln.args))}
        lines = [prog.source, f'extern "C" void run{n}(void** a) {{']
        for ln in prog.launches:
            lines += host_launch(ln.function, ln.grid, ln.block, ln.args, slots)
        self.parts.append("\n".join(lines + ["}"]))
        self.jobs.append((graph, plan, slots, args))
        return True

    def run(self, tmp_path):
        """[(graph, args, outputs)] for every program added."""
        dll = build_host("\n".join(self.parts), tmp_path)
        results = []
        for n, (graph, plan, slots, args) in enumerate(self.jobs):
            env = dict(zip(graph.inputs, args))
            for v in plan.constants:
                env[v] = np.ascontiguousarray(v.producer.params["value"])
            for v in slots:
                if v not in env:                  # written by a kernel: garbage until then
                    env[v] = np.full(v.shape, 7, v.dtype.np)
            env = {v: np.ascontiguousarray(a) for v, a in env.items()}
            ptrs = [0] * len(slots)
            for v, i in slots.items():
                ptrs[i] = env[v].ctypes.data
            getattr(dll, f"run{n}")((ctypes.c_void_p * len(ptrs))(*ptrs))
            results.append((graph, args, [env[v] for v in graph.outputs]))
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


def test_scatters_and_column_sums(tmp_path):
    """Multi-launch programs: scatter-adds (zero fill, then atomics) from gathers' gradients,
    in float32, float64 and bfloat16 (a float32 buffer), and column sums (a thread per
    output walking down its column)."""
    rng = np.random.default_rng(1)
    idx = rng.integers(0, 50, 700)
    build, ran = HostBuild(), 0
    for d in (np.float32, np.float64, tj.bfloat16.np):
        x = rng.standard_normal((50, 6)).astype(d)
        # the index is a constant (a NumPy index array): an argument index would add the
        # compiled bounds check, a block reduction the host emulation cannot run
        ran += build.add(tj.grad(lambda v: (v[idx] * v[idx]).sum()), [x])
        ran += build.add(lambda v: (v * 2).sum(0), [rng.standard_normal((300, 700)).astype(d)])
    ran += build.add(lambda v: v.sum(0), [rng.integers(-9, 9, (300, 700))])
    assert ran == 7
    for graph, args, got in build.run(tmp_path):
        for g, w in zip(got, interpret(graph, args)):
            tol = 2.0 ** -6 if g.dtype == tj.bfloat16.np else 1e-5
            assert g.dtype == w.dtype
            np.testing.assert_allclose(g.astype(np.float64), w.astype(np.float64), rtol=tol,
                                       atol=tol, err_msg=graph.as_text())


def test_bfloat16_conversions_match_ml_dtypes(tmp_path):
    """The prelude's bfloat16 code is plain integer C: built for the host, it rounds every
    class of float32 bit pattern exactly as ml_dtypes does, and widens exactly back."""
    src, lib = tmp_path / "bf16.cpp", tmp_path / "bf16.so"
    src.write_text(SHIMS + PORTABLE + r"""
extern "C" void narrow(const float* x, unsigned short* y, long n) {
  for (long i = 0; i < n; i++) y[i] = tj_f2bf(x[i]);
}
extern "C" void widen(const unsigned short* x, float* y, long n) {
  for (long i = 0; i < n; i++) y[i] = tj_bf2f(x[i]);
}
""")
    r = subprocess.run(["g++", "-O1", "-shared", "-fPIC", "-w", "-o", str(lib), str(src)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    dll = ctypes.CDLL(str(lib))
    for fn in (dll.narrow, dll.widen):
        fn.argtypes, fn.restype = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_long], None
    x = bits_sweep(200000, 0)
    bits = np.empty(x.size, np.uint16)
    dll.narrow(x.ctypes.data, bits.ctypes.data, x.size)
    with np.errstate(invalid="ignore"):
        want = x.astype(tj.bfloat16.np)
    nan = np.isnan(x)
    assert (bits[~nan] == want.view(np.uint16)[~nan]).all()
    assert np.isnan(bits[nan].view(tj.bfloat16.np).astype(np.float32)).all()
    back = np.empty(x.size, np.float32)
    dll.widen(bits.ctypes.data, back.ctypes.data, x.size)
    assert (back[~nan] == want[~nan].astype(np.float32)).all()
