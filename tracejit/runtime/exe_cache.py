"""The disk cache of whole CPU executables: a graph's run description and its kernels' keys.

The kernel cache (runtime/cache.py, runtime/llvm_jit.py) saves LLVM's time, but a hit there
still needs every kernel's module text, so a new process ran matmul folding, the fusion plan,
scheduling and LLVM text generation for the whole graph again before it could look anything
up: most of a cached first call. This cache is keyed on the graph itself, as the backend
receives it (from tj.compile: as traced, before its standard passes, which a hit then skips
too: backend.PendingPasses), so a hit skips all of that: it holds what the runtime binds and runs (frame size,
constants, the scratch layout, outputs, the steps with their slots) and the kernel-cache key of
every distinct kernel, whose object code llvm_jit loads from there. A kernel entry that is gone
(evicted), damaged or untrusted makes the whole hit a miss: the graph is compiled as before.

The graph of tj.grad / tj.value_and_grad of a compiled function is keyed before it exists:
by the traced primal graph's text and the transform (runtime/grad_trace.py's JointBuild, the
`text` of its PendingPasses), so a hit skips the reverse-mode transform too.

The key covers everything that decides that description or that code: the graph (every
instruction's primitive, operands, parameters and type, constants by their bytes; not its
source locations), the thread count, the memory-plan switch, the target (triple, CPU name and
features), the LLVM, llvmlite and NumPy versions, where NumPy keeps an array's data pointer,
tracejit's version and a hash of its ir, codegen and runtime sources. A graph holding a
parameter the key cannot describe exactly, or a primitive registered from outside tracejit
(whose rules are not in the key), is not cached here (its kernels still are).

Files live beside the kernel entries (cache.load_entry/store_entry with EXT: the same header,
checksum, atomic rename, ownership checks and eviction). The payload is a pickle read back by an
unpickler that builds only plain data, NumPy arrays and dtypes, and tracejit dtypes, so an
entry can hold nothing else. A payload that fails to read is ignored with a warning and
rebuilt."""
from __future__ import annotations

import functools
import io
import pickle
import warnings
from dataclasses import dataclass

import llvmlite
import llvmlite.binding as llvm
import numpy as np

from ..codegen.llvm_program import LLVMProgram, data_offset
from ..codegen.memplan import sharing_enabled
from ..ir.core import Graph
from ..ir.exact_params import Inexact, exact_param
from .._version import __version__
from . import cache
from .llvm_jit import target_id

EXT = ".x"
FORMAT = b"tj-exe-1"


@dataclass
class RunSpec:
    """What LLVMExecutable binds and runs; built from an LLVMProgram or read from the cache.
    Steps are tuples: ("seg", [(kernel, symbol, slots, extent), ...]), ("par", kernel,
    symbol, slots, chunks), ("matmul", kernel, (slot, views), (slot, views), out) and
    ("extern", kernel, primitive name, params, input slots, out)."""
    n_words: int
    constants: list                 # (slot, array), read only, shared by every frame
    scratch_layout: list            # (slot, byte offset, shape, numpy dtype)
    scratch_bytes: int
    out_alloc: list                 # (slot, shape, numpy dtype, nbytes)
    out_plan: list                  # per graph output: (slot, whether to copy it)
    steps: list


def spec_of(prog: LLVMProgram) -> RunSpec:
    mem = prog.memory
    steps: list[tuple] = []
    for st in prog.steps:
        if st.kind == "seg":
            steps.append(("seg", [(c.kernel, c.code.symbol, c.slots, c.extent)
                                  for c in st.calls]))
        elif st.kind == "par":
            c = st.calls[0]
            steps.append(("par", c.kernel, c.code.symbol, c.slots, list(st.chunks)))
        elif st.kind == "extern":
            ins = st.kernel.instr
            steps.append(("extern", st.kernel.name, ins.prim.name, dict(ins.params),
                          [s for s, _ in st.operands], st.out))
        else:
            (sa, va), (sb, vb) = st.operands
            steps.append(("matmul", st.kernel.name, (sa, list(va)), (sb, list(vb)), st.out))
    out_alloc = [(s, v.shape, np.dtype(v.dtype.np),
                  int(np.prod(v.shape, dtype=np.int64)) * v.dtype.np.itemsize)
                 for s, v in prog.fresh]
    return RunSpec(
        n_words=prog.n_words,
        constants=[(s, np.ascontiguousarray(v.producer.params["value"], v.dtype.np))
                   for s, v in prog.constants],
        scratch_layout=[(s, mem.offsets[s], v.shape, np.dtype(v.dtype.np))
                        for s, v in prog.temps],
        scratch_bytes=mem.arena_bytes, out_alloc=out_alloc, out_plan=list(prog.out_plan),
        steps=steps)


# -- the key ------------------------------------------------------------------------------------
_OURS: dict = {}                      # Primitive -> whether tracejit defines all its rules


def _ours(prim) -> bool:
    """Whether every rule of `prim` is tracejit's own code (its sources are in the key). A
    primitive registered from outside could be registered again with other rules under the
    same name in another process: graphs that use one are not cached. A NumPy ufunc used as a
    rule itself (an elementwise impl) counts as ours: NumPy's version is in the key."""
    ok = _OURS.get(prim)
    if ok is None:
        mods = [getattr(f.func if isinstance(f, functools.partial) else f, "__module__", None)
                for f in vars(prim).values() if callable(f) and not isinstance(f, np.ufunc)]
        ok = _OURS[prim] = all(isinstance(m, str) and m.startswith("tracejit.") for m in mods)
    return ok


def graph_text(g: Graph) -> str | None:
    """An exact text of what the graph computes, or None when it has none (a parameter
    without an exact text, a primitive defined outside tracejit): every instruction's
    primitive, result type, operands (by number) and parameters, whole (a NumPy array's str
    would elide elements; printer.print_graph prints params by str)."""
    ids = {v: i for i, v in enumerate(g.inputs)}
    n = len(ids)
    body: list[tuple] = []
    add = body.append               # (a tight loop: ~2 us per instruction is most of a hit's key)
    try:
        for ins in g.instrs:
            prim, out, p = ins.prim, ins.out, ins.params
            if _OURS.get(prim) is not True and not _ours(prim):
                return None
            a = out.aval
            add((prim.name, a.shape, a.dtype.name, tuple([ids[v] for v in ins.inputs]),
                 tuple([(k, exact_param(p[k])) for k in sorted(p)]) if p else ()))
            ids[out] = n
            n += 1
        outs = tuple([ids[v] for v in g.outputs])
    except (Inexact, KeyError):
        return None
    ins_t = tuple([(v.aval.shape, v.aval.dtype.name) for v in g.inputs])
    return repr((g.name, ins_t, body, outs))


def environment() -> str:
    """Everything besides the graph and the thread count that decides the cached program."""
    return "|".join([
        __version__, cache.code_hash(("ir", "codegen", "runtime")), target_id(),
        "llvm %d.%d.%d" % tuple(llvm.llvm_version_info), f"llvmlite {llvmlite.__version__}",
        f"numpy {np.__version__}", f"data@{data_offset()}",
        f"memplan {sharing_enabled()}"])


def key(g: Graph, threads: int, passes=None) -> str | None:
    """The entry's key, or None: no disk cache, or a graph the key cannot describe. With
    `passes` (a backend.PendingPasses) that knows the text of a graph it builds, that text."""
    if cache.directory() is None:
        return None
    text = passes.text() if passes is not None and passes.text is not None else graph_text(g)
    if text is None:
        return None
    return cache.key(f"{FORMAT.decode()}\nthreads {threads}\n{text}", environment())


# -- the file -----------------------------------------------------------------------------------
_ALLOWED = {
    ("numpy", "dtype"), ("numpy", "ndarray"),
    ("numpy._core.numeric", "_frombuffer"), ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"), ("numpy.core.multiarray", "scalar"),
    ("tracejit.ir.dtypes", "dtype_from_name"),
    ("builtins", "slice"), ("builtins", "complex"), ("builtins", "frozenset"), ("builtins", "set"),
}


class _Reader(pickle.Unpickler):
    """Builds plain data, NumPy arrays and dtypes (ml_dtypes' too) and tracejit dtypes only."""

    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED or (module == "ml_dtypes" and not name.startswith("_")
                                          and name[:1].islower()):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a cache entry")


Reader = _Reader                    # (runtime/cuda_exe_cache.py reads its entries with it too)


def store(k: str, spec: RunSpec, kernels: dict[str, str]) -> None:
    """Store the spec and the kernel-cache keys of its kernels ({symbol: key})."""
    try:
        payload = pickle.dumps((FORMAT, spec.__dict__, kernels), protocol=5)
    except Exception:               # a parameter that does not pickle: not cached
        return
    cache.store_entry(k, payload, EXT)


def _own_dtype(d: np.dtype) -> np.dtype:
    """NumPy's own object for a dtype read back from a pickle, which is a new object equal to
    it: the arrays the executable allocates carry it, and the eager hot paths test dtypes with
    `is` first (a VJP plan's check failed on every output of a cached fused composite)."""
    own = np.dtype(d.type)
    return own if own == d else d


def load(k: str) -> tuple[RunSpec, dict[str, str]] | None:
    payload = cache.load_entry(k, EXT)
    if payload is None:
        return None
    try:
        fmt, fields, kernels = _Reader(io.BytesIO(payload)).load()
        if fmt != FORMAT:
            raise ValueError(f"format {fmt!r}")
        spec = RunSpec(**fields)
        spec.out_alloc = [(s, sh, _own_dtype(d), n) for s, sh, d, n in spec.out_alloc]
        spec.scratch_layout = [(s, o, sh, _own_dtype(d)) for s, o, sh, d in spec.scratch_layout]
        if not all(type(s) is str and type(o) is str for s, o in kernels.items()):
            raise ValueError("kernel keys of the wrong type")
        return spec, kernels
    except Exception as e:          # the checksum held, yet it does not read
        warnings.warn(f"tracejit: ignoring an unreadable disk-cache entry {cache.path(k, EXT)} "
                      f"({type(e).__name__}: {e}); compiling again", RuntimeWarning,
                      stacklevel=2)
        return None
