"""The CUDA program: everything codegen decides about running a graph on the GPU, as one
artifact (the GPU's counterpart of llvm_program.LLVMProgram): one translation unit of CUDA C
(codegen.cuda_lower renders each function), the launches that run the graph and the memory plan
of its intermediates.

Matmuls are not generated: the runtime calls cuBLAS (through CuPy) and the epilogue fuses into
the next loop kernel, as on the CPU; extern primitives (argsort) run their implementation on
CuPy arrays.

Each structural kernel is rendered once. Plan kernels with one structural key
(codegen/kernel_key.py: every transformer layer's) launch the same CUDA functions with their own
buffers, so the translation unit holds each distinct function once and NVRTC compiles it once. A
function's symbol is `tj_`, a hash of its text (rendered under a placeholder name, as on the
CPU) and the scheduler's suffix (`_finish`). The rendered functions of a key are kept for the
process, so a later program with the same kernels (the next shape's retrace, an evaluation
step) neither schedules nor renders them."""
from __future__ import annotations

import hashlib
import math
import threading
from dataclasses import dataclass, field

from ..ir.core import Aval, Value
from .cuda_lower import PRELUDE, render
from .fusion import Kernel, Plan, operand_view
from .kernel_key import check_keys_enabled, kernel_key
from .memplan import MemoryPlan, plan_memory
from .schedule import Scheduler


@dataclass
class Launch:
    """One step of a compiled graph on the GPU: a generated kernel (name, grid, block and its
    buffer arguments) or a matmul the runtime hands to cuBLAS."""
    kind: str                              # "kernel" | "matmul" | "extern"
    name: str = ""                         # the launch's own name (k3, k3_finish): its kernel's
    grid: int = 0
    block: int = 0
    args: list[Value] = field(default_factory=list)
    kernel: Kernel | None = None
    aligned: list[Value] = field(default_factory=list)    # read 16 bytes at a time
    function: str = ""          # the CUDA function it runs: one for every kernel of a key


@dataclass
class CudaProgram:
    source: str
    launches: list[Launch]
    scratch: list[Value] = field(default_factory=list)   # buffers only the kernels use
    # where the intermediates (written, not outputs, and scratch) live in one per-call arena
    memory: MemoryPlan | None = None
    temps: list[Value] = field(default_factory=list)       # the planned buffers, in order


def lower_program(plan: Plan, prefix: str = "", prelude: bool = True,
                  check_keys: bool | None = None) -> CudaProgram:
    """CUDA C for every distinct generated kernel of the plan, and the launches that run the
    graph. Function symbols get `prefix` (several programs can then share one translation
    unit). `check_keys` (default: TRACEJIT_CHECK_KERNEL_KEYS) renders every kernel and raises if
    two with one structural key differ."""
    parts = [PRELUDE] if prelude else []
    defined: set[str] = set()
    launches: list[Launch] = []
    scratch: list[Value] = []
    check = check_keys_enabled() if check_keys is None else check_keys
    for k in plan.kernels:
        if k.kind in ("matmul", "extern"):     # run by the runtime: cuBLAS, CuPy
            launches.append(Launch(k.kind, k.name, kernel=k))
            continue
        fns, mine, vals = _kernel_functions(k, check)
        scratch += mine
        text = [fn.text.replace(_PLACEHOLDER, prefix + fn.symbol, 1) for fn in fns
                if prefix + fn.symbol not in defined]
        defined.update(prefix + fn.symbol for fn in fns)
        head = f"// {k.name}: {k.kind} [{'x'.join(map(str, k.shape)) or 'scalar'}] " \
               f"ops({','.join(dict.fromkeys(i.prim.name for i in k.ops))})"
        if text:
            parts.append(head + "\n" + "\n\n".join(text))
        else:
            parts.append(f"{head}: {', '.join(prefix + fn.symbol for fn in fns)} above")
        launches += [Launch("kernel", prefix + k.name + fn.suffix, fn.grid, fn.block, args,
                            function=prefix + fn.symbol, aligned=aligned)
                     for fn, args, aligned in _bind(fns, vals, mine) if fn.grid > 0]
    temps, memory = plan_buffers(plan, launches, scratch)
    return CudaProgram("\n\n".join(parts) + "\n", launches, scratch, memory, temps)


# -- rendering each structural kernel once -----------------------------------------------------
_PLACEHOLDER = "__tj_function__"      # the name a function is rendered under, then its symbol's


@dataclass(frozen=True)
class _Function:
    """One rendered CUDA function of a structural kernel, its values as the key's numbers
    (a negative number: the kernel's scratch buffer -1 - n)."""
    symbol: str               # tj_<hash of text><suffix>
    text: str                 # named _PLACEHOLDER
    suffix: str               # after the kernel's name in the scheduler's name ("", "_finish")
    grid: int
    block: int
    args: tuple[int, ...]
    aligned: tuple[int, ...]


# structural key -> (functions, scratch types): rendered once per process. Bounded: a program
# generator making endless distinct kernels must not grow it forever (a miss only re-renders).
_RENDERED: dict[tuple, tuple[tuple[_Function, ...], tuple[Aval, ...]]] = {}
_RENDERED_MAX = 4096
_rendered_lock = threading.Lock()
_sched = Scheduler("gpu")


def _render_functions(k: Kernel, vals: list[Value]
                      ) -> tuple[tuple[_Function, ...], list[Value]]:
    """Schedule and render plan kernel k: its functions with arguments numbered by their
    places in `vals` (scratch negative), and its scratch buffers."""
    s = _sched(k, _PLACEHOLDER)
    pos = {v: i for i, v in enumerate(vals)}
    pos.update({v: -1 - j for j, v in enumerate(s.scratch)})
    fns = []
    for lk in s.kernels:
        if any(v not in pos for v in lk.args):    # loop kernels take the kernel's values only
            raise AssertionError(f"kernel {k.name}: a launch argument is not the kernel's")
        suffix = lk.name[len(_PLACEHOLDER):]
        lk.name = _PLACEHOLDER
        text = render(lk)
        symbol = "tj_" + hashlib.sha256(text.encode()).hexdigest()[:20] + suffix
        fns.append(_Function(symbol, text, suffix, lk.grid, lk.block,
                             tuple(pos[v] for v in lk.args), tuple(pos[v] for v in lk.aligned)))
    return tuple(fns), s.scratch


def _kernel_functions(k: Kernel, check: bool
                      ) -> tuple[tuple[_Function, ...], list[Value], list[Value]]:
    """The functions that run plan kernel k, its scratch buffers and the values the functions'
    numbers stand for: k's key's (kernel_key), or, for a kernel without a key, its inputs and
    outputs. From the process's table when a kernel of k's key was rendered before (with new
    scratch buffers of the same types), else rendered now and kept."""
    kk = kernel_key(k)
    if kk is None:
        vals = list(dict.fromkeys(list(k.inputs) + list(k.outputs)))
        return _render_functions(k, vals) + (vals,)
    key, vals = kk
    hit = _RENDERED.get(key)
    if hit is None or check:
        fns, scratch = _render_functions(k, vals)
        mine = (fns, tuple(v.aval for v in scratch))
        if hit is not None and hit != mine:
            raise RuntimeError(f"tracejit internal error: CUDA kernel {k.name} has the "
                               f"structural key of an earlier kernel but other code; please "
                               f"report this graph (TRACEJIT_CHECK_KERNEL_KEYS)")
        with _rendered_lock:
            if key not in _RENDERED:
                if len(_RENDERED) >= _RENDERED_MAX:
                    del _RENDERED[next(iter(_RENDERED))]     # the oldest
                _RENDERED[key] = mine
        return fns, scratch, vals
    fns, avals = hit
    return fns, [Value(a, None, name=f"{k.name}_partials") for a in avals], vals


def _bind(fns: tuple[_Function, ...], vals: list[Value], scratch: list[Value]
          ) -> list[tuple[_Function, list[Value], list[Value]]]:
    """Each function with a kernel's own values in its argument and aligned positions."""
    def value(n: int) -> Value:
        return vals[n] if n >= 0 else scratch[-1 - n]
    return [(fn, [value(n) for n in fn.args], [value(n) for n in fn.aligned]) for fn in fns]


def plan_buffers(plan: Plan, launches: list[Launch], scratch: list[Value],
                 share: bool | None = None) -> tuple[list[Value], MemoryPlan]:
    """The memory plan (codegen.memplan) of the intermediates: every buffer a kernel writes
    that is not a graph output, and the kernels' scratch. A matmul touches the buffers under
    its operand views; launches run in stream order, so the order of `launches` is the order
    in which the device touches the buffers."""
    outs = set(plan.graph.outputs)
    written = [v for k in plan.kernels for v in k.outputs]
    temps = list(dict.fromkeys([v for v in written if v not in outs] + list(scratch)))
    buffers = set(plan.graph.inputs) | set(plan.constants) | set(written)
    touched: list[list[Value]] = []
    for ln in launches:
        if ln.kind == "kernel":
            touched.append(list(ln.args))
        else:
            ins = ln.kernel.instr
            roots = [operand_view(v, buffers)[0] if ln.kind == "matmul" else v
                     for v in ins.inputs]
            touched.append(roots + [ins.out])
    sizes = {v: math.prod(v.shape) * v.dtype.np.itemsize for v in temps}
    return temps, plan_memory(sizes, touched, share)


__all__ = ["CudaProgram", "Launch", "lower_program", "plan_buffers"]
