"""The LLVM CPU backend: fuse, lower, JIT, and run a graph with as little Python as possible.

A run is a short list of steps: native segments (several kernels in one call), large
kernels split across threads, matmuls (an extern BLAS call through NumPy) and extern
primitives (argsort: its NumPy implementation). cumsum/cumprod are not extern: they are
generated `scan` kernels like the others.

Calls may come from several threads at once. Each call takes a frame (the pointer table the
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

from ..codegen.fusion import Kernel, plan as make_plan
from ..codegen.llvm_lower import DATA_OFFSET, is_small, lower_module, parallel_extent
from ..ir.core import Graph, Value
from ..ir.dtypes import HALF
from ..ir.matmul_fold import fold_matmuls
from ..ir.passes import widen_half
from ..ir.prims_conv import expand_convs
from ..ir.prims_select import expand_arg_reductions
from . import cache, llvm_jit
from .backend import Executable, apply_view, register_backend, view_chain
from .buffers import POOL_MIN_BYTES, OutputPool
from ..debug import dump

PARALLEL_MIN = 1 << 17          # elements a kernel needs before it is split across threads
_SEG = ctypes.CFUNCTYPE(None, ctypes.c_void_p)
_KERN = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64)
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _check_array_layout() -> None:
    """Generated code reads an array's data pointer straight from the array object."""
    a = np.arange(3.0)
    if ctypes.c_void_p.from_address(id(a) + DATA_OFFSET).value != a.ctypes.data:
        raise RuntimeError("tracejit: unexpected NumPy array layout; the LLVM backend cannot "
                           "run here (use backend='interpreter')")


_check_array_layout()


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
        self._assign_slots()
        self._make_steps()
        self.llvm_text = lower_module(self.plan, self.slots, self.segments)
        self.speed_level = 2 if is_small(self.plan) else 3
        key = cache.key(self.llvm_text, llvm_jit.target_id())
        obj = cache.load(key)
        self._mod = None
        if obj is None:
            self._mod = llvm_jit.optimize(self.llvm_text, self.speed_level)
            obj = llvm_jit.object_code(self._mod)
            cache.store(key, obj)
        self.engine = llvm_jit.Engine(obj=obj)
        self._bind_functions()
        self.compile_s = time.perf_counter() - t0
        dump("kernels", graph.name, lambda: self.plan.describe())
        dump("llvm", graph.name, lambda: self.llvm_text)
        dump("asm", graph.name, lambda: self.stage_text("asm"))

    # -- layout ---------------------------------------------------------------------------
    def _assign_slots(self) -> None:
        g, p = self.graph, self.plan
        self.slots: dict[Value, int] = {}
        order = list(g.inputs) + p.constants
        written = [v for k in p.kernels for v in k.outputs]
        order += [v for v in written if v not in g.outputs] + [v for v in written if v in g.outputs]
        for v in order:
            self.slots.setdefault(v, len(self.slots))
        self.n_slots = max(len(self.slots), 1)
        # every frame shares the constants (read only) and has its own intermediates
        self.constants = [(self.slots[v], np.ascontiguousarray(v.producer.params["value"],
                                                                v.dtype.np))
                          for v in p.constants]
        outs = set(g.outputs)
        self.temps = [(self.slots[v], v.shape, v.dtype.np) for v in dict.fromkeys(written)
                      if v not in outs]
        # outputs written by kernels get new arrays per call (pooled when large); the rest,
        # an input, a constant or a repeated output, are copies
        self.out_alloc = []
        for v in dict.fromkeys(written):
            if v in outs:
                nbytes = int(np.prod(v.shape, dtype=np.int64)) * v.dtype.np.itemsize
                self.out_alloc.append((self.slots[v], v.shape, np.dtype(v.dtype.np),
                                       nbytes >= POOL_MIN_BYTES))
        fresh = {a[0] for a in self.out_alloc}
        self.out_plan, seen = [], set()
        for v in g.outputs:
            s = self.slots[v]
            self.out_plan.append((s, s not in fresh or s in seen))
            seen.add(s)
        self.out_slots = sorted(fresh)
        self._pool = OutputPool()
        self._frames: list[_Frame] = [self._new_frame()]

    def _new_frame(self) -> "_Frame":
        fr = _Frame(self.n_slots)
        for s, a in self.constants:
            fr.set(s, a)
        for s, shape, dtype in self.temps:
            fr.set(s, np.empty(shape, dtype))
        return fr

    def _make_steps(self) -> None:
        """Group kernels into native segments; big kernels and matmuls are steps of their own."""
        self.segments: list[list[Kernel]] = []
        self.steps: list[tuple] = []
        cur: list[Kernel] = []
        threads = n_threads()
        for k in self.plan.kernels:
            big = threads > 1 and k.kind in ("loop", "reduce", "rows") and \
                int(np.prod(k.shape)) >= PARALLEL_MIN and parallel_extent(k) >= 2
            if k.kind in ("matmul", "extern") or big:
                if cur:
                    self.steps.append(("seg", len(self.segments)))
                    self.segments.append(cur)
                    cur = []
                self.steps.append((k.kind, k) if k.kind in ("matmul", "extern") else ("par", k))
            else:
                cur.append(k)
        if cur:
            self.steps.append(("seg", len(self.segments)))
            self.segments.append(cur)

    def _bind_functions(self) -> None:
        self.run_steps = []
        self.only_seg = None
        for kind, x in self.steps:
            if kind == "seg":
                self.run_steps.append(("seg", _SEG(self.engine.address(f"seg{x}"))))
            elif kind == "par":
                fn = _KERN(self.engine.address(x.name))
                n = parallel_extent(x)
                t = min(n_threads(), n)
                bounds = [n * i // t for i in range(t + 1)]
                self.run_steps.append(("par", (fn, list(zip(bounds[:-1], bounds[1:])))))
            elif kind == "extern":
                ins = x.instr
                self.run_steps.append(("extern", (ins.prim.impl, ins.params,
                                                  [self.slots[v] for v in ins.inputs],
                                                  self.slots[ins.out])))
            else:
                ins = x.instr
                (ra, va), (rb, vb) = (view_chain(v, self.slots) for v in ins.inputs)
                self.run_steps.append(("matmul", ((self.slots[ra], va), (self.slots[rb], vb),
                                                  self.slots[ins.out])))
        if len(self.run_steps) == 1 and self.run_steps[0][0] == "seg":
            self.only_seg = self.run_steps[0][1]        # the common case: one native call
        # with one native call and only new outputs, run() returns them in this order
        # (True: as allocated), without storing anything in the frame
        self._direct = None
        if self.only_seg is not None and not any(copy for _, copy in self.out_plan):
            order = {a[0]: k for k, a in enumerate(self.out_alloc)}
            idx = [order[s] for s, _ in self.out_plan]
            self._direct = True if idx == list(range(len(idx))) else idx

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
        # the common case: one native call, every output a new array. Only the table sees
        # the arguments and results, so the frame keeps no reference to either. (An exception
        # here loses the frame, which costs a new one later, nothing else.)
        table = fr.table
        held = []
        for i, a in enumerate(args):
            if not a.flags.c_contiguous:
                a = np.ascontiguousarray(a)
                held.append(a)          # the table holds no reference: keep it to the end
            table[i] = id(a)
        outs = []
        for s, shape, dtype, pooled in self.out_alloc:
            o = self._pool.empty(shape, dtype) if pooled else np.empty(shape, dtype)
            table[s] = id(o)
            outs.append(o)
        self.only_seg(fr.addr)
        frames.append(fr)
        return outs if direct is True else [outs[k] for k in direct]

    def _run_frame(self, fr: "_Frame", args: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Several steps, or outputs that are copies: the frame's arrays hold this call's."""
        frames = self._frames
        arrays, table = fr.arrays, fr.table
        try:
            for i, a in enumerate(args):
                if not a.flags.c_contiguous:
                    a = np.ascontiguousarray(a)
                arrays[i] = a
                table[i] = id(a)
            for s, shape, dtype, pooled in self.out_alloc:
                o = self._pool.empty(shape, dtype) if pooled else np.empty(shape, dtype)
                arrays[s] = o
                table[s] = id(o)
            if self.only_seg is not None:
                self.only_seg(fr.addr)
            else:
                self._run_steps(arrays, fr.addr)
            return [arrays[s].copy() if copy else arrays[s] for s, copy in self.out_plan]
        finally:
            # the frame keeps neither the caller's arrays nor the results alive
            for i in range(len(args)):
                arrays[i] = None
            for s in self.out_slots:
                arrays[s] = None
            frames.append(fr)

    def _run_steps(self, arrays, addr: int) -> None:
        for kind, x in self.run_steps:
            if kind == "seg":
                x(addr)
            elif kind == "par":
                fn, chunks = x
                futs = [_thread_pool().submit(fn, addr, lo, hi) for lo, hi in chunks[1:]]
                fn(addr, *chunks[0])
                for f in futs:
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

    def stage_text(self, stage: str) -> str:
        if stage == "kernels":
            return self.plan.describe()
        if stage == "llvm":
            return self.llvm_text
        if stage == "asm":
            if self._mod is None:
                self._mod = llvm_jit.optimize(self.llvm_text, self.speed_level)
            return llvm_jit.assembly(self._mod)
        return super().stage_text(stage)


class _Frame:
    """One call's view of the executable's buffers: the table of array addresses that the
    native code reads (slot i holds id(array i); the code finds the data pointer in the array
    object) and the arrays themselves, which the table does not keep alive."""

    __slots__ = ("table", "addr", "arrays")

    def __init__(self, n: int) -> None:
        self.table = (ctypes.c_void_p * n)()
        self.addr = ctypes.addressof(self.table)
        self.arrays: list[np.ndarray | None] = [None] * n

    def set(self, slot: int, arr: np.ndarray) -> None:
        self.arrays[slot] = arr
        self.table[slot] = id(arr)


register_backend("llvm", LLVMExecutable)
