"""The LLVM CPU backend: the graph's LLVM program (codegen.llvm_program) JIT-compiled, bound to
buffers and run, with as little Python as possible.

Codegen decides everything about the program: its slots, its steps (native segments of kernel
calls, large kernels split across threads, matmuls as BLAS calls on operand views, extern
primitives), and the distinct kernel modules. This module compiles those modules (each at most
once per process: llvm_jit.jit_kernels), builds the call tables, and runs.

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
from typing import Sequence

import numpy as np

from ..codegen.fusion import plan as make_plan
from ..codegen.llvm_program import CALL_WORDS, HEADER, build_program
from ..codegen.schedule import describe as describe_loops
from ..ir.core import Graph
from ..ir.dtypes import HALF
from ..ir.matmul_fold import fold_matmuls
from ..ir.passes import widen_half
from ..ir.prims_conv import expand_convs
from ..ir.prims_select import expand_arg_reductions
from . import llvm_jit, profiler
from .backend import Executable, apply_view, register_backend
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

    def __init__(self, graph: Graph) -> None:
        # 16-bit matmuls run as float32 BLAS calls: NumPy has no half-precision BLAS
        super().__init__(widen_half(fold_matmuls(expand_arg_reductions(expand_convs(graph))),
                                    matmul_dtypes=HALF))
        t0 = time.perf_counter()
        self.plan = make_plan(self.graph)
        self.program = build_program(self.plan, n_threads())
        self._jit = llvm_jit.jit_kernels(self.program.codes.values())
        self._make_buffers()
        self._bind_functions()
        self.compile_s = time.perf_counter() - t0
        dump("kernels", graph.name, lambda: self.plan.describe())
        dump("dot", graph.name, lambda: plan_dot(self.plan, "llvm"))
        dump("loops", graph.name, lambda: self.stage_text("loops"))
        dump("program", graph.name, lambda: self.program.describe())
        dump("llvm", graph.name, lambda: self.program.llvm_text())
        dump("asm", graph.name, lambda: self.stage_text("asm"))

    # -- buffers ----------------------------------------------------------------------------
    def _make_buffers(self) -> None:
        prog = self.program
        self.n_words = prog.n_words
        # every frame shares the constants (read only) and has its own intermediates
        self.constants = [(s, np.ascontiguousarray(v.producer.params["value"], v.dtype.np))
                          for s, v in prog.constants]
        # intermediates live in the thread's scratch arena at the plan's offsets
        # (codegen.memplan; runtime.buffers.take_arena)
        mem = prog.memory
        self.scratch_layout = [(s, mem.offsets[s], v.shape, np.dtype(v.dtype.np))
                               for s, v in prog.temps]
        self.scratch_bytes = mem.arena_bytes
        # the intermediates Python steps (matmul, extern) read or write: indices in the layout
        py_slots = {sl for st in prog.steps if st.kind in ("matmul", "extern")
                    for sl in [s for s, _ in st.operands] + [st.out]}
        self._py_scratch = [k for k, (s, *_) in enumerate(self.scratch_layout) if s in py_slots]
        # outputs written by kernels get new arrays per call (pooled when large)
        self.out_alloc = []
        for s, v in prog.fresh:
            nbytes = int(np.prod(v.shape, dtype=np.int64)) * v.dtype.np.itemsize
            self.out_alloc.append((s, v.shape, np.dtype(v.dtype.np), nbytes >= POOL_MIN_BYTES))
        self.out_plan = prog.out_plan
        self.out_slots = [s for s, _ in prog.fresh]
        self._kept: list[bool] | None = None        # see reuse_outputs
        self._pool = shared_pool()

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
        runner = llvm_jit.runner()
        run_calls = _CALLS(runner.address("tj_run_calls"))
        self._keep: list = []
        self.run_steps = []
        # TRACEJIT_PROFILE: every kernel a native call of its own, each step timed (profiler.py)
        keys = [] if profiler.enabled() else None
        by_name = {k.name: k for k in self.plan.kernels}
        for st in self.program.steps:
            if st.kind == "seg":
                groups = [[c] for c in st.calls] if keys is not None else [st.calls]
                for calls in groups:
                    table = (ctypes.c_uint64 * (CALL_WORDS * len(calls)))()
                    for i, c in enumerate(calls):
                        table[CALL_WORDS * i:CALL_WORDS * (i + 1)] = [
                            self._jit[c.code.symbol].address, self._slot_list(c.slots), 0,
                            c.extent]
                    self._keep.append(table)
                    self.run_steps.append(("seg", (run_calls, ctypes.addressof(table),
                                                   len(calls))))
                    if keys is not None:
                        keys.append(profiler.key_for(self.graph.name, by_name[calls[0].kernel]))
                continue
            if keys is not None:
                k = st.kernel if st.kind in ("matmul", "extern") else by_name[st.calls[0].kernel]
                keys.append(profiler.key_for(self.graph.name, k))
            if st.kind == "par":
                c = st.calls[0]
                fn = _KERN(self._jit[c.code.symbol].address)
                self.run_steps.append(("par", (fn, self._slot_list(c.slots), st.chunks)))
            elif st.kind == "extern":
                ins = st.kernel.instr
                self.run_steps.append(("extern", (ins.prim.impl, ins.params,
                                                  [s for s, _ in st.operands], st.out)))
            else:
                self.run_steps.append(("matmul", (st.operands[0], st.operands[1], st.out)))
        self.only_seg = None
        self._header = (0, 0)
        self._prof_keys = keys
        if len(self.run_steps) == 1 and self.run_steps[0][0] == "seg" and keys is None:
            # the common case: one native call, tj_run(frame), finds its call table in the
            # frame's header words
            _, (_, table, n) = self.run_steps[0]
            self._header = (table, n)
            self.only_seg = _SEG(runner.address("tj_run"))
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

    def _outputs(self) -> list[np.ndarray]:
        """This call's output arrays, in out_alloc's order."""
        kept = self._kept_arrays() if self._kept is not None else None
        outs = []
        for k, (s, shape, dtype, pooled) in enumerate(self.out_alloc):
            if kept is not None and kept[k] is not None:
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

    def _run_frame(self, fr: "_Frame", args: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Several steps, or outputs that are copies: the frame's arrays hold this call's."""
        frames = self._frames
        arrays, table = fr.arrays, fr.table
        ar = take_arena(self.scratch_bytes) if self.scratch_layout else None
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
            for (s, *_), o in zip(self.out_alloc, self._outputs()):
                arrays[s] = o
                table[s] = id(o)
            if self.only_seg is not None:
                self.only_seg(fr.addr)
            else:
                self._run_steps(arrays, fr.addr)
            return [arrays[s].copy() if copy else arrays[s] for s, copy in self.out_plan]
        finally:
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

    def _run_steps(self, arrays, addr: int) -> None:
        keys = self._prof_keys
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
                    r = impl(*[arrays[s] for s in ins], **params)
                np.copyto(arrays[so], r, casting="unsafe")
            else:
                (sa, va), (sb, vb), so = x
                np.matmul(apply_view(arrays[sa], va), apply_view(arrays[sb], vb),
                          out=arrays[so])
            if keys is not None:
                profiler.record(keys[i], time.perf_counter() - t0)

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
                llvm_jit.optimize(c.text, c.speed_level)) for c in self.program.codes.values())
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
