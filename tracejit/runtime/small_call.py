"""A compiled graph's call on small arrays with as little Python around the native call as the
LLVM executable allows: the eager fused composites' (tracer/fused.py) hot path.

An eager LSTM step runs ~80 fused composites (sigmoid, mse_loss) on [batch, hidden] arrays,
each a forward and a backward native call. Through the general `LLVMExecutable.run` (frame
list, the direct-call test, the scratch test, `_run_direct` with its contiguity copies, then
the composites' argument wrapper) a call took ~9 us of Python around a native call of
~0.2-0.9 us; this one takes ~3 us (measured with timeit on a [4, 8] float32 sigmoid, 2-core
machine under load, one run: 9.0 vs 3.0 us). Everything the general path decides per call that
depends only on the executable (one native segment, every output a new unpooled array in the
order returned, the scratch size) is decided here once.

NumPy scalars (what NumPy returns for many 0-d results, such as a scalar loss's gradient) are
made 0-d arrays; arguments that are not C-contiguous (a gate slice, a transposed view) are
copied, as the general path copies them. Frames are taken and put back as `run` does, so
calls from several threads never share one."""
from __future__ import annotations

from typing import Callable

import numpy as np

from ..codegen.llvm_program import HEADER
from .buffers import release_arena, take_arena
from .llvm_backend import LLVMExecutable


def small_runner(exe, general: Callable) -> Callable:
    """run(list of arrays) -> list of arrays for `exe`, lean where its program is one native
    segment writing new outputs; `general` (the full run, given any arguments) otherwise."""
    if type(exe) is not LLVMExecutable or exe._direct is not True or exe._kept is not None \
            or exe.only_seg is None or any(pooled for *_, pooled in exe.out_alloc):
        return general
    frames, new_frame, seg = exe._frames, exe._new_frame, exe.only_seg
    outs = tuple((s, shape, dtype) for s, shape, dtype, _ in exe.out_alloc)
    # (a layout of size-0 intermediates has 0 bytes, and its slots must be bound all the same)
    scratch, nbytes = bool(exe.scratch_layout), exe.scratch_bytes
    bind_scratch = exe._bind_scratch
    empty, ndarray, asarray, ascontiguousarray = np.empty, np.ndarray, np.asarray, \
        np.ascontiguousarray

    def run_small(args: list) -> list:
        for a in args:
            if type(a) is not ndarray or not a.flags.c_contiguous:
                return other(args)
        try:
            fr = frames.pop()           # atomic: two threads never get the same frame
        except IndexError:
            fr = new_frame()
        table = fr.table
        i = HEADER
        for a in args:                  # (the table holds ids only: `args` keeps them alive)
            table[i] = id(a)
            i += 1
        res = []
        for s, shape, dtype in outs:
            o = empty(shape, dtype)
            table[s] = id(o)
            res.append(o)
        if scratch:
            ar = take_arena(nbytes)
            try:
                if fr.bound != ar.serial:
                    bind_scratch(fr, ar)
                seg(fr.addr)
            finally:
                release_arena(ar)
        else:
            seg(fr.addr)
        frames.append(fr)
        return res

    def other(args: list) -> list:
        # a NumPy scalar (NumPy's result for many 0-d operations: the gradient of a scalar
        # loss) as a 0-d array; a non-contiguous array (an LSTM's gate slice gates[:, :H]) as
        # a C-contiguous copy, the copy the general run makes for it too
        args = [a if type(a) is ndarray else asarray(a) for a in args]
        return run_small([a if a.flags.c_contiguous else ascontiguousarray(a) for a in args])
    return run_small
