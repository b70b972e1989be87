"""The CUDA backend: the kernel plan lowered to CUDA C (codegen.cuda_program), compiled by NVRTC
through CuPy to a CUBIN for the device's architecture, cached in memory (per executable and
device) and on disk (keyed by the source, the architecture, NVRTC's version and tracejit's),
and launched through CuPy. Matmuls go to cuBLAS directly (runtime.cuda_gemm); extern primitives
(argsort) run their implementation on CuPy arrays; cumsum/cumprod are generated `scan` kernels.

Building an executable needs no GPU: the source is generated eagerly (so `.cuda_source` and
`TRACEJIT_DUMP=cuda` work anywhere) and compiled on the first run."""
from __future__ import annotations

import math
import threading
import time
from typing import Any, Sequence

import numpy as np

from ..codegen.cuda_program import lower_program
from ..codegen.memplan import describe_plan
from ..codegen.fusion import operand_view, plan as make_plan
from ..codegen.schedule import describe as describe_loops
from ..ir.core import Graph
from ..ir.printer import value_names
from ..ir.matmul_fold import fold_matmuls
from ..ir.passes import widen_half
from ..ir.prims_conv import expand_convs
from ..ir.prims_select import expand_arg_reductions
from ..ir.primitives import P
from . import cache, cuda_exe_cache, cuda_gemm, profiler
from .backend import Executable, PendingPasses, apply_view, register_backend
from .cuda_exe_cache import Extern
from ..codegen.dot import plan_dot
from ..debug import dump
from ..devices import cupy_module


def _cupy_or_none():
    try:
        return cupy_module()
    except Exception:               # no CuPy: the source is still generated (.cuda_source)
        return None


def compile_cubin(source: str, arch: str) -> bytes:
    """CUBIN for sm_`arch`, from the disk cache when an entry checks out. CUBIN, not PTX: PTX
    from an NVRTC newer than the driver is rejected at load time."""
    from cupy.cuda import nvrtc
    # no FMA contraction: see llvm_expr.ScalarBuilder.FLAGS (the options are part of the key)
    options = [f"--gpu-architecture=sm_{arch}", "--std=c++17", "--fmad=false"]
    target = f"cuda sm_{arch} nvrtc {'.'.join(map(str, nvrtc.getVersion()))} {' '.join(options)}"
    k = cache.key(source, target)
    cubin = cache.load(k)
    if cubin is not None:
        return cubin
    prog = nvrtc.createProgram(source, "tracejit.cu", [], [])
    try:
        try:
            nvrtc.compileProgram(prog, options)
        except nvrtc.NVRTCError:
            raise RuntimeError(f"NVRTC could not compile the generated CUDA source for sm_{arch}:"
                               f"\n{nvrtc.getProgramLog(prog)}") from None
        cubin = nvrtc.getCUBIN(prog)
    finally:
        nvrtc.destroyProgram(prog)
    cache.store(k, cubin)
    return cubin


_EXTERN = object()      # marks a step that runs a primitive's implementation on CuPy arrays


class _Bound:
    """An executable's compiled module on one device, with its launches resolved."""

    def __init__(self, exe: "CudaExecutable", cp: Any) -> None:
        dev = cp.cuda.Device()
        self.module = cp.cuda.function.Module()
        self.module.load(compile_cubin(exe.source, str(dev.compute_capability)))
        self.constants = {v: cp.asarray(a) for v, a in exe.constants}
        self.steps: list[tuple] = []
        for ln in exe.launches:
            if ln[0] == "kernel":
                _, name, grid, block, args, _ = ln
                self.steps.append((self.module.get_function(name), (grid,), (block,), args))
            elif ln[0] == "extern":
                self.steps.append((_EXTERN, ln[1], None, None))
            else:
                self.steps.append((None,) + ln[1:])


def _launches(graph: Graph, plan, program) -> list[tuple]:
    """A program's launches as the runtime runs them: ("kernel", function, grid, block, buffer
    arguments, the buffers it writes), ("extern", Extern) or ("matmul", (buffer, views),
    (buffer, views), out). Kernels of one structural key launch one function."""
    buffers = set(graph.inputs) | set(plan.constants) | \
        {v for k in plan.kernels for v in k.outputs}
    scratch = set(program.scratch)
    out: list[tuple] = []
    for ln in program.launches:
        if ln.kind == "kernel":        # (what it writes: its kernel's outputs, or scratch)
            outs = set(launch_kernel(plan, ln).outputs) | scratch
            out.append(("kernel", ln.function, ln.grid, ln.block, list(ln.args),
                        [v for v in ln.args if v in outs]))
        elif ln.kind == "extern":
            ins = ln.kernel.instr
            out.append(("extern", Extern(ins.prim, list(ins.inputs), ins.params, ins.out)))
        else:
            ins = ln.kernel.instr
            out.append(("matmul", operand_view(ins.inputs[0], buffers),
                        operand_view(ins.inputs[1], buffers), ins.out))
    return out


def launch_kernel(plan, ln):
    """The fusion kernel a generated launch belongs to: the scheduler names its launches
    after it (k3, k3_zero, k3_finish)."""
    by_name = {k.name: k for k in plan.kernels}
    k = by_name.get(ln.name) or by_name.get(ln.name.rsplit("_", 1)[0])
    if k is None:
        raise AssertionError(f"launch {ln.name} of no kernel of the plan")
    return k


def same_index_inputs(plan, program) -> dict:
    """{output: [inputs]}: for each output of a generated elementwise kernel (one launch), the
    inputs of that kernel whose memory may hold the output instead (cuda_graphs stores a
    parameter's new value over the old one this way). Each thread reads such an input only at
    the elements it writes (every operation the input reaches is elementwise over the loop's
    shape), and the output's value depends on every operation that reads the input, so the
    renderer's one load of each element (it memoizes loads per element) comes before the
    store of that element, in any compilation of the kernel."""
    launches: dict[int, int] = {}
    for ln in program.launches:
        if ln.kind == "kernel":
            k = id(launch_kernel(plan, ln))
            launches[k] = launches.get(k, 0) + 1
    out: dict = {}
    for k in plan.kernels:
        if k.kind != "loop" or launches.get(id(k)) != 1:
            continue
        made = {op.out: op for op in k.ops}
        for x in k.inputs:
            if x.shape != k.shape:
                continue
            tainted, users, ok = {x}, [], True
            for op in k.ops:
                if any(i in tainted for i in op.inputs):
                    if op.prim.kind != "elementwise" or op.out.shape != k.shape:
                        ok = False
                        break
                    tainted.add(op.out)
                    if x in op.inputs:
                        users.append(op.out)
            if not ok:
                continue
            for v in k.outputs:
                if v.shape != x.shape or v.dtype != x.dtype or v not in made:
                    continue
                feeds, todo = set(), [v]        # the kernel's values v is computed from
                while todo:
                    y = todo.pop()
                    if y not in feeds and y in made:
                        feeds.add(y)
                        todo.extend(made[y].inputs)
                if all(u in feeds for u in users):
                    out.setdefault(v, []).append(x)
    return out


def prepare(graph: Graph) -> Graph:
    """The graph the CUDA backend lowers: 16-bit sums accumulate in float32; float16 and
    bfloat16 matmuls stay 16-bit GEMMs (cuda_gemm: tensor cores, float32 accumulation);
    8/16-bit integer scatter-adds run in int32 (CUDA has no atomic add of their width)."""
    return widen_half(fold_matmuls(expand_arg_reductions(expand_convs(graph))),
                      matmul_dtypes=(), int_scatters=True)


class CudaExecutable(Executable):
    """A graph's launches on the GPU. Built from the fusion plan and the CUDA program, or, on a
    hit in the disk cache of whole executables (runtime/cuda_exe_cache.py), from the entry,
    without planning or rendering: the plan and program are then built only if something asks
    for them (`.lower()`'s texts, TRACEJIT_DUMP). Either way it runs from the same fields:
    `launches`, `constants`, `source` and the buffer lists, keyed by the graph's Values."""
    backend = "cuda"

    def __init__(self, graph: Graph, passes: PendingPasses | None = None) -> None:
        t0 = time.perf_counter()
        self.source_graph, self._passes = graph, passes
        self._plan = self._program = self._full = None
        k = fields = None
        if not profiler.enabled():          # (profiling keys each launch by its kernel)
            cp = _cupy_or_none()
            k = cuda_exe_cache.key(graph, passes, cp) if cp is not None else None
            if k is None and passes is not None and passes.text is None and cp is not None:
                passes()            # (the optimized graph may have a key the traced one lacks)
                k = cuda_exe_cache.key(graph, None, cp)
            fields = cuda_exe_cache.load(k, P.get) if k is not None else None
        self.cached = fields is not None
        if fields is None:
            if passes is not None:
                passes()
            super().__init__(prepare(graph))
            self._plan = make_plan(self.graph)
            self._program = lower_program(self._plan)
            prog = self._program
            mem = prog.memory
            fields = dict(
                constants=[(v, np.ascontiguousarray(v.producer.params["value"], v.dtype.np))
                           for v in self._plan.constants],
                source=prog.source, launches=_launches(self.graph, self._plan, prog),
                same_index=same_index_inputs(self._plan, prog),
                written=list(dict.fromkeys(v for k in self._plan.kernels for v in k.outputs)),
                aligned={v for ln in prog.launches for v in ln.aligned},
                scratch_bytes=mem.arena_bytes if prog.temps else 0,
                scratch_layout=[(v, mem.offsets[v], mem.sizes[v], np.dtype(v.dtype.np),
                                 v.shape) for v in prog.temps])
            # an output that is an input, a constant or repeated is copied; the rest are fresh
            outs = self.graph.outputs
            fields["out_plan"] = [(v, v not in fields["written"] or v in outs[:i])
                                  for i, v in enumerate(outs)]
            # outputs handed to the caller get allocations of their own; intermediates share
            fields["fresh"] = [v for v in fields["written"] if v in set(outs)]
            self.__dict__.update(fields)
            if k is not None:
                cuda_exe_cache.store(k, cuda_exe_cache.spec_of(self))
        else:
            self.__dict__.update(fields)
        self._bound: dict[int, _Bound] = {}
        self._bind_lock = threading.Lock()      # threads' first calls build one module per device
        # TRACEJIT_PROFILE: each launch timed with a device synchronize after it
        self._prof_keys = [profiler.launch_key(graph.name, ln.name, ln.kind, ln.kernel)
                           for ln in self.program.launches] if profiler.enabled() else None
        self.compile_s = time.perf_counter() - t0
        dump("kernels", graph.name, lambda: self.plan.describe())
        dump("dot", graph.name, lambda: plan_dot(self.plan, "cuda"))
        dump("loops", graph.name, lambda: self.stage_text("loops"))
        dump("cuda", graph.name, lambda: self.source)

    @classmethod
    def from_traced(cls, graph: Graph, passes: PendingPasses) -> "CudaExecutable":
        """Keyed on the graph as traced, so a disk-cache hit skips its passes too."""
        return cls(graph, passes)

    # -- what a disk-cache hit leaves out, built when asked for ----------------------------
    def _built(self) -> "CudaExecutable":
        """This executable built from its graph (itself, unless it came from the disk)."""
        if not self.cached:
            return self
        if self._full is None:
            if self._passes is not None:
                self._passes()
            full = CudaExecutable.__new__(CudaExecutable)
            full.cached, full._passes = False, None
            full.source_graph = self.source_graph
            Executable.__init__(full, prepare(self.source_graph))
            full._plan = make_plan(full.graph)
            full._program = lower_program(full._plan)
            self._full = full
        return self._full

    @property
    def plan(self):
        return self._built()._plan

    @property
    def program(self):
        return self._built()._program

    def bind(self, cp: Any) -> _Bound:
        """The compiled module and resolved launches on the current device."""
        dev = cp.cuda.Device().id
        bound = self._bound.get(dev)
        if bound is None:
            with self._bind_lock:
                bound = self._bound.get(dev)
                if bound is None:
                    bound = self._bound[dev] = _Bound(self, cp)
        return bound

    def run(self, args: Sequence[Any]) -> list[Any]:
        cp = cupy_module()
        bound = self.bind(cp)
        env: dict = dict(bound.constants)
        for v, a in zip(self.graph.inputs, args):
            a = cp.ascontiguousarray(cp.asarray(a, v.dtype.np))
            if v in self.aligned and a.data.ptr % 16:
                a = a.copy()             # a view at an odd offset: 16-byte loads need 16 bytes
            env[v] = a
        # every call has its own buffers (so threads never share one) and hands its outputs to
        # the caller; CuPy's memory pool makes the allocations cheap and reuses a block only
        # after its array is freed
        for v in self.fresh:
            env[v] = cp.empty(v.shape, v.dtype.np)
        if self.scratch_layout:
            # the intermediates: views of one allocation at the memory plan's offsets
            # (codegen.memplan); launches run in stream order, and CuPy's pool reuses the
            # arena only after this call has dropped it, in stream order too
            arena = cp.empty(max(self.scratch_bytes, 1), np.uint8)
            for v, off, n, dtype, shape in self.scratch_layout:
                env[v] = arena[off:off + n].view(dtype).reshape(shape)
        prof = self._prof_keys
        if prof is not None:
            cp.cuda.Device().synchronize()
        for i, (fn, a, b, c) in enumerate(bound.steps):
            if prof is not None:
                t0 = time.perf_counter()
            if fn is _EXTERN:
                ins = a
                r = ins.prim.impl(*[env[v] for v in ins.inputs], **ins.params)
                env[ins.out] = cp.ascontiguousarray(cp.asarray(r, ins.out.dtype.np))
            elif fn is not None:
                fn(a, b, tuple(env[v] for v in c))
            else:
                (ra, va), (rb, vb) = a, b
                cuda_gemm.matmul(cp, apply_view(env[ra], va), apply_view(env[rb], vb), env[c])
            if prof is not None:
                cp.cuda.Device().synchronize()
                profiler.record(prof[i], time.perf_counter() - t0)
        return [env[v].copy() if copy else env[v] for v, copy in self.out_plan]

    def stage_text(self, stage: str) -> str:
        if self.cached and stage != "cuda":
            return self._built()._stage_text(stage)
        return self._stage_text(stage)

    def _stage_text(self, stage: str) -> str:
        if stage == "kernels":
            return self._plan.describe()
        if stage == "memory":
            names = value_names(self.graph)
            prog = self._program
            labels = {v: f"%{names.get(v) or v.name or '?'} {v.aval}" for v in prog.temps}
            nb = lambda v: math.prod(v.shape) * v.dtype.np.itemsize   # noqa: E731
            fresh = [v for v in dict.fromkeys(v for k in self._plan.kernels for v in k.outputs)
                     if v in set(self.graph.outputs)]
            return describe_plan(prog.memory, labels, sum(nb(v) for v in fresh),
                                 sum(nb(v) for v in self._plan.constants))
        if stage == "loops":
            return describe_loops(self._plan, "gpu")
        if stage == "cuda":
            return self.source
        raise NotImplementedError(f"the cuda backend has no '{stage}' stage (LLVM IR and "
                                  f"assembly come from the CPU backend); it shows 'kernels', "
                                  f"'loops' and 'cuda'")


register_backend("cuda", CudaExecutable)
