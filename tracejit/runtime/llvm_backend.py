"""The LLVM CPU backend: the graph's LLVM program (codegen.llvm_program) JIT-compiled, bound to
buffers and run, with as little Python as possible.

Codegen decides everything about the program: its slots, its steps (native segments of kernel
calls, large kernels split across threads, matmuls as BLAS calls on operand views, extern
primitives), and the distinct kernel modules. This module compiles those modules (each at most
once per process: llvm_jit.jit_kernels), builds the call tables, and runs.

What it binds and runs is the program's RunSpec (runtime.exe_cache), which the disk cache keeps
with the kernels' keys: a graph compiled in an earlier process is bound straight from there,
without planning or generating code. Its plan and program are then built only if something
asks for them (`.lower()`'s texts, TRACEJIT_DUMP, the profiler).

Calls may come from several threads at once. Each call takes a frame (the word table the
native code reads, and the intermediate buffers it writes) from a free list and puts it back
afterwards, so concurrent calls never share a buffer and are never serialized; a second frame
exists only once two calls have overlapped. Outputs follow runtime.buffers' ownership rule: an
array handed to the caller is never written again while anything can still reach it."""
from __future__ import annotations

import ctypes
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Sequence

import numpy as np

from ..codegen.fusion import plan as make_plan
from ..codegen.llvm_program import CALL_WORDS, HEADER, build_program
from ..codegen.schedule import describe as describe_loops
from ..ir.core import Graph
from ..ir.dtypes import HALF
from ..ir.matmul_fold import fold_matmuls
from ..ir.passes import widen_half
from ..ir.primitives import P
from ..ir.prims_conv import expand_convs
from ..ir.prims_select import expand_arg_reductions
from . import blas_threads, exe_cache, flat_inputs, llvm_jit, profiler
from .backend import STEP_HOOKS, Executable, PendingPasses, apply_view, register_backend
from .buffers import POOL_MIN_BYTES, ScratchArena, release_arena, shared_pool, take_arena
from ..codegen.dot import plan_dot
from ..debug import dump

_SEG = ctypes.CFUNCTYPE(None, ctypes.c_void_p)
_CALLS = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64)
_KERN = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64)
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def n_threads() -> int:
    return int(os.environ.get("TRACEJIT_NUM_THREADS", os.cpu_count() or 1))


def _thread_pool() -> ThreadPoolExecutor:
    global _pool
    if _pool is None:
        with _pool_lock:          # two threads' first parallel kernels must share one pool
            if _pool is None:
                _pool = ThreadPoolExecutor(max_workers=max(n_threads() - 1, 1),
                                           thread_name_prefix="tracejit")
    return _pool


class LLVMExecutable(Executable):
    backend = "llvm"

    def __init__(self, graph: Graph, passes: PendingPasses | None = None) -> None:
        t0 = time.perf_counter()
        self.source_graph = graph
        self._passes = passes       # graph's standard passes, if still pending (from_traced)
        self.threads = n_threads()
        self._graph = self._plan = self._program = None
        key = exe_cache.key(graph, self.threads, passes)
        if key is None and passes is not None:
            passes()                # (the optimized graph may have a key the traced one lacks)
            key = exe_cache.key(graph, self.threads)
        hit = exe_cache.load(key) if key is not None else None
        jit = llvm_jit.load_kernels(hit[1]) if hit is not None else None
        if jit is not None:
            spec = hit[0]
        else:
            spec = exe_cache.spec_of(self.program)
            jit = llvm_jit.jit_kernels(self.program.codes.values())
            if key is not None:
                exe_cache.store(key, spec, {s: jit[s].key for s in self.program.codes})
        self._jit, self.spec = jit, spec
        self._make_buffers()
        self._bind_functions()
        self.compile_s = time.perf_counter() - t0
        dump("kernels", graph.name, lambda: self.plan.describe())
        dump("dot", graph.name, lambda: plan_dot(self.plan, "llvm"))
        dump("loops", graph.name, lambda: self.stage_text("loops"))
        dump("program", graph.name, lambda: self.program.describe())
        dump("llvm", graph.name, lambda: self.program.llvm_text())
        dump("asm", graph.name, lambda: self.stage_text("asm"))

    # -- what the run description leaves out, built when asked for --------------------------
    @classmethod
    def from_traced(cls, graph: Graph, passes: PendingPasses) -> "LLVMExecutable":
        """Keyed on the graph as traced, so a disk-cache hit skips its passes too."""
        return cls(graph, passes)

    @property
    def graph(self) -> Graph:
        """The graph the plan is made from: the source graph (after its standard passes)
        with convolutions and arg reductions expanded, matmuls folded and 16-bit matmuls
        widened (NumPy has no half-precision BLAS, so they run as float32 BLAS calls)."""
        if self._graph is None:
            if self._passes is not None:
                self._passes()
            g = self.source_graph
            self._graph = widen_half(fold_matmuls(expand_arg_reductions(expand_convs(g))),
                                     matmul_dtypes=HALF)
        return self._graph

    @property
    def plan(self):
        if self._plan is None:
            self._plan = make_plan(self.graph)
        return self._plan

    @property
    def program(self):
        if self._program is None:
            self._program = build_program(self.plan, self.threads)
        return self._program

    # -- buffers ----------------------------------------------------------------------------
    def _make_buffers(self) -> None:
        spec = self.spec
        self.n_words = spec.n_words
        # every frame shares the constants (read only) and has its own intermediates
        self.constants = spec.constants
        # intermediates live in the thread's scratch arena at the plan's offsets
        # (codegen.memplan; runtime.buffers.take_arena)
        self.scratch_layout = spec.scratch_layout
        self.scratch_bytes = spec.scratch_bytes
        # the intermediates Python steps (matmul, extern) read or write: indices in the layout
        py_slots = set()
        for st in spec.steps:
            if st[0] == "matmul":
                py_slots.update((st[2][0], st[3][0], st[4]))
            elif st[0] == "extern":
                py_slots.update(st[4] + [st[5]])
        self._py_scratch = [k for k, (s, *_) in enumerate(self.scratch_layout) if s in py_slots]
        # outputs written by kernels get new arrays per call (pooled when large)
        self.out_alloc = [(s, shape, dtype, nbytes >= POOL_MIN_BYTES)
                          for s, shape, dtype, nbytes in spec.out_alloc]
        self.out_plan = spec.out_plan
        self.out_slots = [s for s, *_ in spec.out_alloc]
        self._kept: list[bool] | None = None        # see reuse_outputs
        self._pool = shared_pool()
        # DDP buckets written in place by the program (runtime/flat_inputs.py)
        self._scratch_pos = {s: k for k, (s, *_) in enumerate(self.scratch_layout)}
        self._flat_steps = flat_inputs.plan(spec.steps, self.scratch_layout)
        self._new_results = flat_inputs.new_result_steps(spec.steps)

    def _new_frame(self) -> "_Frame":
        fr = _Frame(self.n_words)
        fr.table[0], fr.table[1] = self._header
        for s, a in self.constants:
            fr.set(s, a)
        return fr

    def _bind_scratch(self, fr: "_Frame", ar: ScratchArena) -> list:
        views = ar.bind(self, self.scratch_layout)
        table = fr.table
        for s, v in views:
            table[s] = id(v)        # the arena holds the views; the frame only their ids
        fr.bound = ar.serial
        return views

    # -- binding ----------------------------------------------------------------------------
    def _slot_list(self, slots) -> int:
        arr = (ctypes.c_int64 * max(len(slots), 1))(*slots)
        self._keep.append(arr)              # the call tables point at it
        return ctypes.addressof(arr)

    def _bind_functions(self) -> None:
        spec = self.spec
        runner = llvm_jit.runner()
        run_calls = _CALLS(runner.address("tj_run_calls"))
        self._keep: list = []
        self.run_steps = []
        self.step_slots: list[set[int]] = []   # the slots each run step reads or writes
        # TRACEJIT_PROFILE: every kernel a native call of its own, each step timed (profiler.py)
        keys = [] if profiler.enabled() else None
        by_name = {k.name: k for k in self.plan.kernels} if keys is not None else {}
        run_index = {}                          # spec.steps index -> run_steps index
        for j, st in enumerate(spec.steps):
            kind = st[0]
            run_index[j] = len(self.run_steps)
            if kind == "seg":
                groups = [[c] for c in st[1]] if keys is not None else [st[1]]
                for calls in groups:
                    table = (ctypes.c_uint64 * (CALL_WORDS * len(calls)))()
                    for i, (_, symbol, slots, extent) in enumerate(calls):
                        table[CALL_WORDS * i:CALL_WORDS * (i + 1)] = [
                            self._jit[symbol].address, self._slot_list(slots), 0, extent]
                    self._keep.append(table)
                    self.run_steps.append(("seg", (run_calls, ctypes.addressof(table),
                                                   len(calls))))
                    self.step_slots.append({s for c in calls for s in c[2]})
                    if keys is not None:
                        keys.append(profiler.key_for(self.graph.name, by_name[calls[0][0]]))
                continue
            if keys is not None:
                keys.append(profiler.key_for(self.graph.name, by_name[st[1]]))
            if kind == "par":
                _, _, symbol, slots, chunks = st
                fn = _KERN(self._jit[symbol].address)
                self.run_steps.append(("par", (fn, self._slot_list(slots), chunks)))
                self.step_slots.append(set(slots))
            elif kind == "extern":
                _, _, prim, params, ins, out = st
                self.run_steps.append(("extern", (P.get(prim).impl, params, ins, out)))
                self.step_slots.append(set(ins) | {out})
            else:
                self.run_steps.append(("matmul", st[2:]))
                self.step_slots.append({st[2][0], st[3][0], st[4]})
        self.only_seg = None
        self._header = (0, 0)
        self._prof_keys = keys
        # GEMMs (and NumPy externs) run on TRACEJIT_NUM_THREADS BLAS threads (blas_threads.py)
        self._blas = any(kind in ("matmul", "extern") for kind, _ in self.run_steps)
        if len(self.run_steps) == 1 and self.run_steps[0][0] == "seg" and keys is None:
            # the common case: one native call, tj_run(frame), finds its call table in the
            # frame's header words
            _, (_, table, n) = self.run_steps[0]
            self._header = (table, n)
            self.only_seg = _SEG(runner.address("tj_run"))
        # (TRACEJIT_PROFILE splits segments into more run steps: keyed by run step from here)
        self._flat_steps = {run_index[j]: fs for j, fs in self._flat_steps.items()}
        self._new_results = {run_index[j] for j in self._new_results}
        self._frames: list[_Frame] = [self._new_frame()]
        # with one native call and only new outputs, run() returns them in this order
        # (True: as allocated), without storing anything in the frame
        self._direct = None
        if self.only_seg is not None and not any(copy for _, copy in self.out_plan):
            order = {a[0]: k for k, a in enumerate(self.out_alloc)}
            idx = [order[s] for s, _ in self.out_plan]
            self._direct = True if idx == list(range(len(idx))) else idx

    # -- outputs ----------------------------------------------------------------------------
    def reuse_outputs(self, indices: Sequence[int]) -> None:
        """Outputs the caller copies away before it calls again on this thread (Entry's
        write-backs of parameters and optimizer state) are written into arrays kept per thread
        instead of new ones: a new array of many pages takes a page fault on each page's first
        write (a nanoGPT-small AdamW step took ~1,100 per call, ~10% of its time). A slot that
        is also a user's output stays new."""
        mine = set(indices)
        users = {s for i, (s, _) in enumerate(self.out_plan) if i not in mine}
        kept = [s not in users for s, *_ in self.out_alloc]
        self._kept = kept if any(kept) else None        # (None: run()'s fast path)
        self._local = threading.local()

    def _outputs(self, given: dict | None = None) -> list[np.ndarray]:
        """This call's output arrays, in out_alloc's order (given[k]: the caller's for k)."""
        kept = self._kept_arrays() if self._kept is not None else None
        outs = []
        for k, (s, shape, dtype, pooled) in enumerate(self.out_alloc):
            if given and k in given:
                outs.append(given[k])
            elif kept is not None and kept[k] is not None:
                outs.append(kept[k])
            else:
                outs.append(self._pool.empty(shape, dtype) if pooled else np.empty(shape, dtype))
        return outs

    def _kept_arrays(self) -> list:
        arrays = getattr(self._local, "arrays", None)
        if arrays is None:
            arrays = self._local.arrays = [np.empty(shape, dtype) if keep else None
                                           for keep, (_, shape, dtype, _) in
                                           zip(self._kept, self.out_alloc)]
        return arrays

    # -- running --------------------------------------------------------------------------
    def run(self, args: Sequence[np.ndarray]) -> list[np.ndarray]:
        frames = self._frames
        try:
            fr = frames.pop()           # atomic: two threads never get the same frame
        except IndexError:
            fr = self._new_frame()      # calls overlap: one more frame, kept for later
        direct = self._direct
        if direct is None:
            return self._run_frame(fr, args)
        if self.scratch_layout:
            ar = take_arena(self.scratch_bytes)
            try:
                if fr.bound != ar.serial:
                    self._bind_scratch(fr, ar)
                return self._run_direct(fr, args, direct)
            finally:
                release_arena(ar)
        return self._run_direct(fr, args, direct)

    def _run_direct(self, fr: "_Frame", args: Sequence[np.ndarray], direct) -> list[np.ndarray]:
        frames = self._frames
        # the common case: one native call, every output a new array. Only the table sees
        # the arguments and results, so the frame keeps no reference to either. (An exception
        # here loses the frame, which costs a new one later, nothing else.)
        table = fr.table
        held = []
        for i, a in enumerate(args, HEADER):
            if not a.flags.c_contiguous:
                a = np.ascontiguousarray(a)
                held.append(a)          # the table holds no reference: keep it to the end
            table[i] = id(a)
        if self._kept is None:          # (the cached-call fast path: no kept outputs)
            outs = []
            for s, shape, dtype, pooled in self.out_alloc:
                o = self._pool.empty(shape, dtype) if pooled else np.empty(shape, dtype)
                table[s] = id(o)
                outs.append(o)
        else:
            outs = self._outputs()
            for (s, *_), o in zip(self.out_alloc, outs):
                table[s] = id(o)
        self.only_seg(fr.addr)
        frames.append(fr)
        return outs if direct is True else [outs[k] for k in direct]

    def run_hooked(self, args: Sequence[np.ndarray], outs: dict[int, np.ndarray],
                   hooks: dict[int, Callable[[], None]]) -> list[np.ndarray]:
        """run() writing the new outputs out_alloc[k] into the caller's arrays outs[k]
        (C-contiguous of the output's shape and dtype; views into a larger buffer are fine,
        since the native code reads each array's own data pointer), calling hooks[i]() after
        run step i (step_slots[i]: the slots it touches). DDP writes a compiled backward's
        gradients straight into its bucket buffers this way, and starts a bucket's all-reduce
        and lets MPI progress between the steps (runtime/grad_sync.py)."""
        try:
            fr = self._frames.pop()
        except IndexError:
            fr = self._new_frame()
        return self._run_frame(fr, args, outs, hooks)

    def _run_frame(self, fr: "_Frame", args: Sequence[np.ndarray], outs: dict | None = None,
                   hooks: dict | None = None) -> list[np.ndarray]:
        """Several steps, or outputs that are copies: the frame's arrays hold this call's."""
        frames = self._frames
        arrays, table = fr.arrays, fr.table
        ar = take_arena(self.scratch_bytes) if self.scratch_layout else None
        rebound: list[int] = []         # slots bound to arrays of this call's own
        try:
            if ar is not None:
                views = ar.bind(self, self.scratch_layout)
                if fr.bound != ar.serial:
                    self._bind_scratch(fr, ar)
                # the Python steps (matmuls, externs) read their intermediates from the frame's
                # arrays, for this call only: the frame must not keep the arena alive after the
                # thread's arena is replaced
                for k in self._py_scratch:
                    s, v = views[k]
                    arrays[s] = v
            for i, a in enumerate(args, HEADER):
                if not a.flags.c_contiguous:
                    a = np.ascontiguousarray(a)
                arrays[i] = a
                table[i] = id(a)
            for (s, *_), o in zip(self.out_alloc, self._outputs(outs)):
                arrays[s] = o
                table[s] = id(o)
            if self.only_seg is not None:
                self.only_seg(fr.addr)
                if hooks and 0 in hooks:
                    hooks[0]()
            else:
                # this call's flat buckets, the program writing their pieces in place
                flats = {i: self._pool.empty((fs.size,), fs.dtype)
                         for i, fs in self._flat_steps.items()}
                for i, fs in self._flat_steps.items():
                    rebound += fs.bind(flats[i], arrays, table)
                self._run_steps(arrays, fr.addr, hooks, flats, rebound, table)
            return [arrays[s].copy() if copy else arrays[s] for s, copy in self.out_plan]
        finally:
            if rebound:     # the frame's table points at the arena's views again
                for s in rebound:
                    k = self._scratch_pos.get(s)
                    if k is not None:
                        table[s] = id(views[k][1])
                        arrays[s] = None
            # the frame keeps neither the caller's arrays nor the results alive
            for i in range(HEADER, HEADER + len(args)):
                arrays[i] = None
            for s in self.out_slots:
                arrays[s] = None
            if ar is not None:
                for k in self._py_scratch:
                    arrays[self.scratch_layout[k][0]] = None
                release_arena(ar)
            frames.append(fr)

    def _run_steps(self, *args) -> None:
        """The run steps (`_steps`) with this thread's BLAS calls on self.threads threads."""
        if not self._blas:
            self._steps(*args)
            return
        prev = blas_threads.limit(self.threads)
        try:
            self._steps(*args)
        finally:
            blas_threads.restore(prev)

    def _steps(self, arrays, addr: int, hooks: dict | None = None,
               flats: dict | None = None, rebound: list | None = None,
               frame_table=None) -> None:
        """The run steps in order; flats: this call's flat buckets by step, rebound: collects
        the slots whose arrays are this call's own (runtime/flat_inputs.py), frame_table:
        the frame's table of array ids (None: extern results are always copied)."""
        flats = flats or {}
        keys = self._prof_keys
        between = STEP_HOOKS.fns            # (filled by a step of this run: see backend.py)
        for i, (kind, x) in enumerate(self.run_steps):
            if keys is not None:
                t0 = time.perf_counter()
            if kind == "seg":
                run_calls, table, n = x
                run_calls(addr, table, n)
            elif kind == "par":
                fn, slots, chunks = x
                futs = [_thread_pool().submit(fn, addr, slots, lo, hi) for lo, hi in chunks[1:]]
                fn(addr, slots, *chunks[0])
                for f, (lo, hi) in zip(futs, chunks[1:]):
                    # a chunk no helper has started yet is run here: on a loaded machine a
                    # helper thread is scheduled late (a 256x64x128 kernel of ~100 us waited
                    # milliseconds for it), and one with all helpers busy would wait for them
                    if f.cancel():
                        fn(addr, slots, lo, hi)
                    else:
                        f.result()
            elif kind == "extern":
                impl, params, ins, so = x
                with np.errstate(all="ignore"):
                    if i in flats:      # a bucket (runtime/flat_inputs.py)
                        flat = flats[i]
                        pieces = self._flat_steps[i].complete(flat, arrays)
                        r = self._flat_steps[i].start(flat, pieces, **params)
                    else:
                        r = impl(*[arrays[s] for s in ins], **params)
                out = arrays[so]
                if frame_table is not None and i in self._new_results and \
                        isinstance(r, np.ndarray) and r.dtype == out.dtype and \
                        r.shape == out.shape and r.flags.c_contiguous:
                    arrays[so] = r      # the result's own array: kept, not copied
                    frame_table[so] = id(r)
                    rebound.append(so)
                else:
                    np.copyto(out, r, casting="unsafe")
            else:
                (sa, va), (sb, vb), so = x
                np.matmul(apply_view(arrays[sa], va), apply_view(arrays[sb], vb),
                          out=arrays[so])
            if keys is not None:
                profiler.record(keys[i], time.perf_counter() - t0)
            if hooks:
                hook = hooks.get(i)
                if hook is not None:
                    hook()
            if between:
                for fn in tuple(between):
                    fn()

    def stage_text(self, stage: str) -> str:
        if stage == "kernels":
            return self.plan.describe()
        if stage == "loops":
            return describe_loops(self.plan, "cpu")
        if stage == "program":
            return self.program.describe()
        if stage == "memory":
            return self.program.describe_memory()
        if stage == "llvm":
            return self.program.llvm_text()
        if stage == "asm":
            return "\n\n".join(f"; module {c.symbol}\n" + llvm_jit.assembly(
                llvm_jit.optimize(c.text, c.speed_level), c.speed_level)
                for c in self.program.codes.values())
        return super().stage_text(stage)


class _Frame:
    """One call's view of the executable's buffers: the table of array addresses that the
    native code reads (slot i holds id(array i); the code finds the data pointer in the array
    object) and the arrays themselves, which the table does not keep alive."""

    __slots__ = ("table", "addr", "arrays", "bound")

    def __init__(self, n: int) -> None:
        self.table = (ctypes.c_void_p * n)()
        self.addr = ctypes.addressof(self.table)
        self.arrays: list[np.ndarray | None] = [None] * n
        self.bound = 0          # serial of the scratch arena whose views the table holds

    def set(self, slot: int, arr: np.ndarray) -> None:
        self.arrays[slot] = arr
        self.table[slot] = id(arr)


register_backend("llvm", LLVMExecutable)
