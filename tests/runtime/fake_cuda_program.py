"""Compiled CUDA programs run under the strict fake CuPy (tests/fakecupy.py), for testing the
runtime's plumbing (launch order, buffers, CUDA graph capture and replay) without a GPU.

The generated kernels themselves are not executed: each fusion kernel's launches get a host
stand-in that evaluates the kernel's IR instructions with the registry's NumPy implementations
(as the reference interpreter does) at its last launch, reading and writing the arrays at the
addresses the launches were given. A launch that reads a buffer the runtime forgot to fill, or
writes one it reads later from elsewhere, gives wrong numbers here as on a GPU. What the
kernels compute is tested elsewhere (nvcc, host emulation, the `gpu` tests)."""
from __future__ import annotations

import numpy as np

import fakecupy
from tracejit.runtime import cuda_backend, cuda_gemm


class _Group:
    """The launches of one fusion kernel: the arrays they were given, and its computation."""

    def __init__(self, kernel) -> None:
        self.kernel = kernel
        self.pending: dict = {}

    def function(self, args: list, last: bool):
        def run(grid, block, arrays):
            self.pending.update(zip(args, arrays))
            if last:
                pending, self.pending = self.pending, {}
                self._compute(pending)
        return run

    def _compute(self, arrays: dict) -> None:
        k = self.kernel
        outs = set(k.outputs)
        env = {v: a for v, a in arrays.items() if v not in outs}
        with np.errstate(all="ignore"):
            for ins in k.ops:
                for x in ins.inputs:
                    if x not in env:            # a literal: an instruction without inputs
                        p = x.producer
                        assert p is not None and not p.inputs, f"{k.name}: {x} not given"
                        env[x] = np.asarray(p.prim.impl(**p.params), x.dtype.np)
                r = ins.prim.impl(*[env[x] for x in ins.inputs], **ins.params)
                env[ins.out] = np.asarray(r, ins.out.dtype.np)
        for v in k.outputs:
            arrays[v][...] = env[v]


def kernel_table(plan, program) -> dict:
    """{CUDA function: host stand-in} for a program lowered from `plan`. Kernels of one
    structural key launch the same functions (codegen/cuda_program.py): a function's stand-in
    computes the instructions of the first kernel that launches it, on whatever buffers each
    launch passes, so a later kernel's numbers are right only if sharing its code is."""
    launches: dict = {}
    for ln in program.launches:
        if ln.kind == "kernel":
            launches.setdefault(id(cuda_backend.launch_kernel(plan, ln)), []).append(ln)
    table = {}
    for k in plan.kernels:
        lns = launches.get(id(k), [])
        group = _Group(k)
        for j, ln in enumerate(lns):
            if ln.function not in table:
                table[ln.function] = group.function(list(ln.args), j == len(lns) - 1)
    return table


def install(monkeypatch) -> None:
    """Compiled CUDA executables run under the fake (after the `fake_gpu` fixture)."""
    real_lower = cuda_backend.lower_program

    def lower(plan, *a, **kw):
        program = real_lower(plan, *a, **kw)
        fakecupy.KERNELS[program.source.encode()] = kernel_table(plan, program)
        return program

    monkeypatch.setattr(cuda_backend, "lower_program", lower)
    real_bind = cuda_backend.CudaExecutable.bind

    def bind(exe, cp):
        # an executable from the disk cache (runtime/cuda_exe_cache.py) rendered no source in
        # this process: its stand-ins come from its plan and program, built again
        if exe.source.encode() not in fakecupy.KERNELS:
            fakecupy.KERNELS[exe.source.encode()] = kernel_table(exe.plan, exe.program)
        return real_bind(exe, cp)
    monkeypatch.setattr(cuda_backend.CudaExecutable, "bind", bind)
    monkeypatch.setattr(cuda_backend, "compile_cubin", lambda source, arch: source.encode())
    monkeypatch.setattr(cuda_gemm, "cublas_binding", lambda: fakecupy.CUBLAS)
    monkeypatch.setattr(cuda_gemm, "graph_binding", lambda: fakecupy.CUBLAS_LIB)
    fakecupy.LOG.clear()
