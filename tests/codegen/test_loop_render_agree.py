"""Renderer agreement: one loop IR (codegen.loops, the GPU schedule of each kernel) rendered to
LLVM and run on the CPU, and rendered to CUDA C and run on the host (g++, every thread of every
launch in turn, as tests/codegen/test_cuda_host.py does), give the same bits. This covers every
kernel kind the host emulation runs: elementwise loops (one element per thread and 16-byte lane
groups), leading-axis reductions (serial and split in two stages), scatter-adds and scans.
Block-cooperative kernels (warp shuffles, barriers) are left to the GPU tests.

The expressions avoid transcendental functions (LLVM's inlined math and the host's libm differ
by ulps) and products feeding sums (LLVM contracts them into FMAs; the host build has none)."""
from __future__ import annotations

import ctypes
import shutil

import numpy as np
import pytest

import tracejit as tj
from test_cuda_host import SHIMS, HostBuild, build_host, host_launch
from tracejit.codegen import cuda_lower, llvm_lower
from tracejit.codegen.fusion import plan as make_plan
from tracejit.codegen.llvm_ipow import ipow_library
from tracejit.codegen.llvm_math import library
from tracejit.codegen.llvm_special import special_library
from tracejit.codegen.schedule import Scheduler, schedule_plan
from tracejit.ir.interpret import interpret
from tracejit.runtime import llvm_jit
from tracejit.runtime.cuda_backend import prepare

pytestmark = pytest.mark.skipif(shutil.which("g++") is None, reason="g++ is not installed")
BLOCKWISE = ("BlockReduce", "Barrier", "Leader")


def _uses_blocks(stmts) -> bool:
    todo = list(stmts)
    while todo:
        st = todo.pop()
        if type(st).__name__ in BLOCKWISE or getattr(st, "par", "") in ("block", "blocks"):
            return True
        todo += getattr(st, "body", [])
    return False


class Job:
    """One program's GPU schedule, its buffers and their host arrays."""

    def __init__(self, n: int, fn, args) -> None:
        self.graph = prepare(tj.compile(fn, device="cuda").lower(*args).graph)
        self.plan = make_plan(self.graph)
        sched = Scheduler("gpu")
        self.scheduled = [sched(k, f"j{n}_{k.name}") for k in self.plan.kernels]
        self.kernels = [lk for s in self.scheduled for lk in s.kernels]
        assert all(k.kind not in ("matmul", "extern") for k in self.plan.kernels)
        assert not any(_uses_blocks(lk.body) for lk in self.kernels), "needs a real GPU"
        self.args = args
        self.slots = {v: i for i, v in enumerate(dict.fromkeys(
            v for lk in self.kernels for v in lk.args))}

    def arrays(self) -> tuple[dict, list[int]]:
        env = dict(zip(self.graph.inputs, self.args))
        for v in self.plan.constants:
            env[v] = np.ascontiguousarray(v.producer.params["value"])
        for v in self.slots:
            if v not in env:                 # written by a kernel: garbage until then
                env[v] = np.full(v.shape, 7, v.dtype.np)
        env = {v: np.ascontiguousarray(a) for v, a in env.items()}
        ptrs = [0] * len(self.slots)
        for v, i in self.slots.items():
            ptrs[i] = env[v].ctypes.data
        return env, ptrs

    def outputs(self, env) -> list[np.ndarray]:
        return [env[v] for v in self.graph.outputs]


def run_cuda_on_host(jobs: list[Job], tmp_path) -> list[list[np.ndarray]]:
    parts = [SHIMS + cuda_lower.PORTABLE]
    for n, job in enumerate(jobs):
        lines = ["\n\n".join(cuda_lower.render(lk) for lk in job.kernels),
                 f'extern "C" void run{n}(void** a) {{']
        for lk in job.kernels:
            lines += host_launch(lk.name, lk.grid, lk.block, lk.args, job.slots)
        parts.append("\n".join(lines + ["}"]))
    dll = build_host("\n".join(parts), tmp_path, "agree")
    results = []
    for n, job in enumerate(jobs):
        env, ptrs = job.arrays()
        getattr(dll, f"run{n}")((ctypes.c_void_p * len(ptrs))(*ptrs))
        results.append(job.outputs(env))
    return results


def run_llvm(jobs: list[Job]) -> list[list[np.ndarray]]:
    """The same loop kernels rendered to LLVM: each runs its whole range in one call."""
    parts = [library(False), special_library(False), ipow_library(),
             "declare i64 @llvm.smax.i64(i64, i64)\ndeclare i64 @llvm.smin.i64(i64, i64)"]
    for n, job in enumerate(jobs):
        wrapper = [f"define void @run{n}(ptr %a) {{"]
        for c, lk in enumerate(job.kernels):
            parts.append(llvm_lower.render(lk, lk.name))
            ptrs = []
            for i, v in enumerate(lk.args):
                wrapper += [f"  %g{c}_{i} = getelementptr ptr, ptr %a, i64 {job.slots[v]}",
                            f"  %p{c}_{i} = load ptr, ptr %g{c}_{i}"]
                ptrs.append(f"ptr %p{c}_{i}")
            wrapper.append(f"  call void @{lk.name}({', '.join(ptrs)}, i64 0, "
                           f"i64 {lk.extent})")
        parts.append("\n".join(wrapper + ["  ret void", "}"]))
    engine = llvm_jit.Engine(llvm_jit.optimize("\n\n".join(parts) + "\n", 2))
    results = []
    for n, job in enumerate(jobs):
        env, ptrs = job.arrays()
        ctypes.CFUNCTYPE(None, ctypes.c_void_p)(engine.address(f"run{n}"))(
            (ctypes.c_void_p * len(ptrs))(*ptrs))
        results.append(job.outputs(env))
    return results


def _same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and \
        a.view(np.uint8).tobytes() == b.view(np.uint8).tobytes()


rng = np.random.default_rng(7)
F32 = rng.standard_normal((37, 111)).astype(np.float32)
G32 = rng.standard_normal((37, 111)).astype(np.float32)
V32 = rng.standard_normal((64, 64)).astype(np.float32)
BF = (rng.standard_normal(4096) * 50).astype(tj.bfloat16.np)
COLS = rng.standard_normal((300, 700)).astype(np.float32)
IDX = rng.integers(-50, 50, 700)
CASES = {
    # one element per thread (4107 elements: not a multiple of 4)
    "loop": (lambda x, y: ((x + y) * 0.5, tj.maximum(x, y), tj.where(x > y, x - y, y / 3),
                           tj.cast(x * 100, tj.int32), tj.sqrt(tj.abs(x))), [F32, G32]),
    # views: a transpose, a strided slice, a broadcast
    "views": (lambda x, y: (x.T[::2] + y[0, :37], x[:, :1] - y), [F32, G32]),
    # 16-byte lane groups: 4 float32 and 8 bfloat16 per thread
    "lanes_f32": (lambda x: (x * 2, x - 1, (x > 0).float()), [V32]),
    "lanes_bf16": (lambda v: (v.float() / 3, v.double() + 1, v * v), [BF]),
    # leading-axis reductions: serial down a column, and split in chunks of rows
    "column_serial": (lambda x: ((x * 2).sum(0), tj.amax(x, 0), tj.amin(x, 0)), [F32]),
    "column_split": (lambda x: (x.sum(0), x.double().sum(0), tj.amax(x, 0)), [COLS]),
    "column_int": (lambda x: x.sum(0), [rng.integers(-9, 9, (300, 700))]),
    "column_axes": (lambda x: x.sum((0, 1)), [rng.standard_normal((6, 50, 24)).astype(np.float32)]),
    # scatter-adds (the gradient of a gather, negative indices wrap) and scans
    "scatter": (tj.grad(lambda v: (v[tj.tensor(IDX)] * 3).sum()), [rng.standard_normal((50, 6))]),
    "scan": (lambda x: (tj.cumsum(x, 1), tj.cumprod(x.double() / 2 + 1, 0)), [F32]),
    # a reverse scan: the gradient of a cumsum
    "scan_reverse": (tj.grad(lambda x: (tj.cumsum(x, 1) * tj.tensor(G32)).sum()), [F32]),
}


def test_one_loop_ir_two_renderers_same_bits(tmp_path):
    """Every case's GPU loop IR, rendered by both renderers, gives identical outputs, and
    they match the reference interpreter (exactly where no sum is reordered)."""
    jobs = [Job(n, fn, args) for n, (fn, args) in enumerate(CASES.values())]
    kinds = {s.source.kind for job in jobs for s in job.scheduled}
    assert kinds == {"loop", "reduce", "scatter", "scan"}
    assert any(len(s.kernels) == 2 and s.scratch for job in jobs for s in job.scheduled), \
        "a split leading reduction (partials, then a finishing kernel) is covered"
    for name, job, cuda, cpu in zip(CASES, jobs, run_cuda_on_host(jobs, tmp_path),
                                    run_llvm(jobs)):
        for c, g, w in zip(cuda, cpu, interpret(job.graph, job.args)):
            assert _same_bits(c, g), (name, job.graph.as_text())
            tol = 2.0 ** -7 if c.dtype == tj.bfloat16.np else 1e-5
            np.testing.assert_allclose(c.astype(np.float64), w.astype(np.float64), rtol=tol,
                                       atol=tol, err_msg=name)


def _cancelling_columns(rows: int, cols: int) -> np.ndarray:
    """Column 0's float64 sum depends on the order of the additions: a large value, +1, its
    negation, +1 (added in sequence: 1; as a tree: 0), then noise."""
    x = rng.standard_normal((rows, cols)).astype(np.float32)
    x[:4, 0] = [1e17, 1, -1e17, 1]
    return x


@pytest.mark.parametrize("rows", [40, 300, 4096], ids=["serial", "split", "split_many"])
def test_cpu_and_cuda_column_sums_agree_bit_for_bit(rows, tmp_path):
    """The accumulation rule of both backends: the compiled CPU program (LLVM backend, its own
    CPU schedule) and the compiled CUDA program (run on the host) add a column's float64
    partial sums in the same order, so even order-sensitive columns agree to the bit."""
    x = _cancelling_columns(rows, 129)
    fns = [lambda a: a.sum(0), lambda a: (a * 2).sum(0), lambda a: a.double().sum(0),
           lambda a: a.reshape(rows // 4, 4, 129).sum((0, 1)), lambda a: tj.cumsum(a, 0)]
    build = HostBuild()
    for fn in fns:
        assert build.add(fn, [x])
    for fn, (graph, args, got) in zip(fns, build.run(tmp_path)):
        cpu = tj.compile(fn)(x).numpy()
        assert _same_bits(got[0], cpu), graph.as_text()
        want = interpret(graph, args)[0]
        if graph.instrs[-1].prim.name != "cumsum":
            np.testing.assert_allclose(got[0][1:], want[1:], rtol=1e-5, atol=1e-5)


def test_leading_reduction_splits_beyond_its_outputs_on_emulated_cuda(tmp_path):
    """sum over (0, 1) of [16, 256, 512] (a layer-norm weight gradient): 512 outputs, but the
    GPU schedule runs 65536 threads (128 chunks of 32 rows per column), then a finishing
    kernel; run on the host, the result equals the CPU backend's bit for bit and the float64
    sum rounded once to float32."""
    x = np.random.default_rng(3).standard_normal((16, 256, 512)).astype(np.float32)
    f = lambda a: a.sum((0, 1))                          # noqa: E731
    prog = tj.compile(f, device="cuda").lower(x)._entry.exe.program
    first, finish = prog.launches
    assert first.grid * first.block >= 65536 > 512
    assert finish.name.endswith("_finish") and len(prog.scratch) == 1
    assert prog.scratch[0].shape == (65536,) and prog.scratch[0].dtype is tj.float64
    build = HostBuild()
    assert build.add(f, [x])
    ((graph, _, (got,)),) = build.run(tmp_path)
    assert _same_bits(got, tj.compile(f)(x).numpy())
    want = x.astype(np.float64).sum((0, 1)).astype(np.float32)
    np.testing.assert_allclose(got, want, rtol=2e-7, atol=1e-6)


def test_gpu_schedules_render_on_the_cpu_and_cpu_schedules_on_cuda():
    """Any loop IR renders on either backend: a CPU schedule's thread range is the whole range
    in CUDA (a grid of one thread), a GPU block is a block of one thread in LLVM."""
    x = np.ones((8, 300), np.float32)
    graph = prepare(tj.compile(lambda a: tj.softmax(a, -1) + a.sum(0), device="cuda")
                    .lower(x).graph)
    plan = make_plan(graph)
    for s in schedule_plan(plan, "gpu"):
        for lk in s.kernels:
            assert "define internal void" in llvm_lower.render(lk, lk.name)
    for s in schedule_plan(plan, "cpu"):
        for lk in s.kernels:
            assert '__global__' in cuda_lower.render(lk)
