"""The disk cache of whole CUDA executables: what a CudaExecutable launches, by buffer number.

The CUBIN cache (cuda_backend.compile_cubin) saves NVRTC's time, but a hit there needs the
CUDA source, so a new process planned, scheduled and rendered the whole graph again before it
could look anything up. This cache is keyed on the graph as traced (its standard passes
pending, as runtime/exe_cache.py's key for the CPU: the same exact graph text), and holds
what the executable binds and launches: each buffer's type, the graph's inputs and outputs,
the constants' bytes, the source (whose CUBIN is then found in the CUBIN cache, or compiled),
and the launches (kernel name, grid, block and buffer arguments; extern primitives; cuBLAS
matmuls with their operand views), the buffers the kernels write, the outputs' copies and the
scratch layout. A hit builds no fusion plan, schedule or source.

The key covers the graph, tracejit's version and its ir, codegen and runtime sources, NumPy's
version, the memory-plan switch, the device's architecture and NVRTC's version (the CUBIN's
key has them again). A graph the key cannot describe, or a device that cannot be asked (no
GPU), is not cached whole. An entry that fails to read warns and is rebuilt."""
from __future__ import annotations

import importlib
import io
import pickle
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..codegen.memplan import sharing_enabled
from ..ir.core import Graph, Value, Aval
from ..ir.dtypes import dtype_from_name
from .._version import __version__
from . import cache, exe_cache

EXT = ".cx"
FORMAT = b"tj-cuda-exe-2"


@dataclass
class Extern:
    """An extern step: a primitive's implementation run on CuPy arrays."""
    prim: Any
    inputs: list
    params: dict
    out: Value


@dataclass
class CudaSpec:
    """A CudaExecutable's launches with buffers as numbers (slots): see the module's text."""
    name: str
    avals: list            # per slot: (shape, dtype name)
    inputs: list           # slots of the graph's inputs
    outputs: list          # slots of the graph's outputs
    constants: list        # (slot, array)
    source: str
    launches: list         # ("kernel", name, grid, block, slots, written slots) | ("extern",
    #                        primitive name, params, slots, slot) | ("matmul", (slot, views),
    #                        (slot, views), slot)
    written: list
    aligned: list
    out_plan: list         # (slot, whether to copy it)
    fresh: list
    scratch_bytes: int
    scratch_layout: list   # (slot, offset, bytes, numpy dtype, shape)
    same_index: list       # (slot, [slots]): cuda_backend.same_index_inputs


def device_target(cp: Any) -> str | None:
    """The current device's architecture and NVRTC's version, or None (no device to ask)."""
    try:
        nvrtc = getattr(cp.cuda, "nvrtc", None) or importlib.import_module("cupy.cuda.nvrtc")
        version = ".".join(map(str, nvrtc.getVersion()))
        return f"sm_{cp.cuda.Device().compute_capability} nvrtc {version}"
    except Exception:           # no GPU, no NVRTC: not cached whole (still correct)
        return None


def key(graph: Graph, passes, cp: Any) -> str | None:
    """The entry's key, or None (no disk cache, a graph without an exact text, no device)."""
    if cache.directory() is None:
        return None
    text = passes.text() if passes is not None and passes.text is not None else \
        exe_cache.graph_text(graph)
    if text is None:
        return None
    target = device_target(cp)
    if target is None:
        return None
    env = "|".join([__version__, cache.code_hash(("ir", "codegen", "runtime")), target,
                    f"numpy {np.__version__}", f"memplan {sharing_enabled()}"])
    return cache.key(f"{FORMAT.decode()}\n{text}", env)


def spec_of(exe) -> CudaSpec:
    """The spec of a CudaExecutable built from its plan and program."""
    slots: dict[Value, int] = {}
    avals: list = []

    def s(v: Value) -> int:
        k = slots.get(v)
        if k is None:
            k = slots[v] = len(avals)
            avals.append((v.shape, v.dtype.name))
        return k
    launches: list[tuple] = []
    for ln in exe.launches:
        if ln[0] == "kernel":
            _, name, grid, block, args, writes = ln
            launches.append(("kernel", name, grid, block, [s(v) for v in args],
                             [s(v) for v in writes]))
        elif ln[0] == "extern":
            e = ln[1]
            launches.append(("extern", e.prim.name, dict(e.params), [s(v) for v in e.inputs],
                             s(e.out)))
        else:
            _, (ra, va), (rb, vb), out = ln
            launches.append(("matmul", (s(ra), list(va)), (s(rb), list(vb)), s(out)))
    g = exe.graph
    return CudaSpec(
        name=g.name, avals=avals, inputs=[s(v) for v in g.inputs],
        outputs=[s(v) for v in g.outputs],
        constants=[(s(v), np.ascontiguousarray(a)) for v, a in exe.constants],
        source=exe.source, launches=launches, written=[s(v) for v in exe.written],
        aligned=[s(v) for v in exe.aligned], out_plan=[(s(v), c) for v, c in exe.out_plan],
        fresh=[s(v) for v in exe.fresh], scratch_bytes=exe.scratch_bytes,
        scratch_layout=[(s(v), off, n, dt, shape) for v, off, n, dt, shape in
                        exe.scratch_layout],
        same_index=[(s(v), [s(x) for x in xs]) for v, xs in exe.same_index.items()])


def values_of(spec: CudaSpec, prims) -> dict:
    """The executable's fields from a spec, with a new Value per slot (in a graph of only
    inputs and outputs, named as the spec says); `prims` looks primitives up by name."""
    g = Graph(spec.name)
    vals = [Value(Aval(shape, dtype_from_name(d)), g) for shape, d in spec.avals]
    g.inputs = [vals[k] for k in spec.inputs]
    g.outputs = [vals[k] for k in spec.outputs]
    launches: list[tuple] = []
    for ln in spec.launches:
        if ln[0] == "kernel":
            _, name, grid, block, args, writes = ln
            launches.append(("kernel", name, grid, block, [vals[k] for k in args],
                             [vals[k] for k in writes]))
        elif ln[0] == "extern":
            _, prim, params, ins, out = ln
            launches.append(("extern", Extern(prims(prim), [vals[k] for k in ins], params,
                                              vals[out])))
        else:
            _, (ra, va), (rb, vb), out = ln
            launches.append(("matmul", (vals[ra], va), (vals[rb], vb), vals[out]))
    return dict(
        graph=g, constants=[(vals[k], a) for k, a in spec.constants], source=spec.source,
        launches=launches, written=[vals[k] for k in spec.written],
        aligned={vals[k] for k in spec.aligned},
        out_plan=[(vals[k], c) for k, c in spec.out_plan], fresh=[vals[k] for k in spec.fresh],
        scratch_bytes=spec.scratch_bytes,
        scratch_layout=[(vals[k], off, n, np.dtype(dt), tuple(shape))
                        for k, off, n, dt, shape in spec.scratch_layout],
        same_index={vals[k]: [vals[x] for x in xs] for k, xs in spec.same_index})


def store(k: str, spec: CudaSpec) -> None:
    try:
        payload = pickle.dumps((FORMAT, spec.__dict__), protocol=5)
    except Exception:               # a parameter that does not pickle: not cached
        return
    cache.store_entry(k, payload, EXT)


def load(k: str, prims) -> dict | None:
    """The executable's fields (values_of) from entry k, or None."""
    payload = cache.load_entry(k, EXT)
    if payload is None:
        return None
    try:
        fmt, fields = exe_cache.Reader(io.BytesIO(payload)).load()
        if fmt != FORMAT:
            raise ValueError(f"format {fmt!r}")
        spec = CudaSpec(**fields)
        if type(spec.source) is not str or not all(type(ln) is tuple for ln in spec.launches):
            raise ValueError("fields of the wrong type")
        return values_of(spec, prims)
    except Exception as e:          # the checksum held, yet it does not read
        warnings.warn(f"tracejit: ignoring an unreadable disk-cache entry {cache.path(k, EXT)} "
                      f"({type(e).__name__}: {e}); compiling again", RuntimeWarning,
                      stacklevel=2)
        return None
