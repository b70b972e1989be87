"""The CUDA renderer: the loop IR of every generated kernel (codegen.loops, built by
codegen.schedule for the "gpu" target) as CUDA C: one translation unit, one `extern "C"
__global__` function per loop kernel, and the launch list that runs the graph. It translates
statement by statement and decides nothing about loops (see codegen.schedule for how each
kernel kind maps to grids, blocks and threads).

Matmuls are not generated: the runtime calls cuBLAS (through CuPy) and the epilogue fuses into
the next loop kernel, as on the CPU; extern primitives (argsort) run their implementation on
CuPy arrays. Sizes are compile-time constants, so every index division is by a constant.

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

from ..ir import dtypes as dt
from ..ir.core import Aval, Value
from . import loops as L
from .cuda_expr import COMPUTE, STORE, CBody, CEmitter, CS, literal
from .expr import EmitterIndexTable, compute_dtype
from .fusion import Kernel, Plan, operand_view
from .kernel_key import check_keys_enabled, kernel_key
from .memplan import MemoryPlan, plan_memory
from .schedule import Scheduler

# The prelude's plain C++ part (bfloat16 conversions in integer code, the reduction functors,
# atomic adds): it compiles for the host too, given shims for a few CUDA built-ins, and the
# tests run generated kernels that way.
PORTABLE = r"""__device__ __forceinline__ float tj_bf2f(unsigned short b) {
  return __uint_as_float((unsigned int)b << 16);
}
__device__ __forceinline__ unsigned short tj_f2bf(float f) {   // round to nearest even
  const unsigned int u = __float_as_uint(f);
  if (f != f) return (unsigned short)((u >> 16) | 0x40u);       // NaN stays a (quiet) NaN
  return (unsigned short)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}
struct TjSum { template <class T> __device__ T operator()(T a, T b) const { return a + b; } };
struct TjMax {
  template <class T> __device__ T operator()(T a, T b) const { return (a > b || a != a) ? a : b; }
};
struct TjMin {
  template <class T> __device__ T operator()(T a, T b) const { return (a < b || a != a) ? a : b; }
};
// PyTorch's integer power: square-and-multiply (wraps, as two's complement, through unsigned
// arithmetic), 0 ** 0 = 1, a negative exponent gives 1, +-1 or 0 by the base
template <class T>
__device__ __forceinline__ T tj_ipow(T x, T y) {
  if (y < 0) return x == 1 ? T(1) : x == -1 ? ((y & 1) ? T(-1) : T(1)) : T(0);
  typedef unsigned long long U;
  U acc = 1, b = (U)x, e = (U)y;
  while (e) {
    if (e & 1) acc *= b;
    b *= b;
    e >>= 1;
  }
  return (T)acc;
}
__device__ __forceinline__ void tj_atomic_add(float* p, float v) { atomicAdd(p, v); }
__device__ __forceinline__ void tj_atomic_add(double* p, double v) { atomicAdd(p, v); }
__device__ __forceinline__ void tj_atomic_add(int* p, int v) { atomicAdd(p, v); }
__device__ __forceinline__ void tj_atomic_add(long long* p, long long v) {
  atomicAdd((unsigned long long*)p, (unsigned long long)v);   // two's complement: same bits
}
"""

PRELUDE = r"""// tracejit CUDA prelude: float16 and bfloat16 as raw bits, NumPy-style
// NaN-propagating max/min, atomic adds (16-bit scatters are widened to float32 before
// lowering), block reductions (warp shuffles, then one warp over the per-warp partials).
__device__ __forceinline__ float tj_h2f(unsigned short h) {
  float f; asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h)); return f;
}
__device__ __forceinline__ unsigned short tj_f2h(float f) {
  unsigned short h; asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f)); return h;
}
__device__ __forceinline__ unsigned short tj_d2h(double d) {
  unsigned short h; asm("cvt.rn.f16.f64 %0, %1;" : "=h"(h) : "d"(d)); return h;
}
""" + PORTABLE + r"""// blockDim.x must be a multiple of 32; every thread gets the result
template <class T, class Op>
__device__ __forceinline__ T tj_block_reduce(T v, T init, Op op) {
  __shared__ T part[32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  for (int o = 16; o > 0; o >>= 1) v = op(v, __shfl_down_sync(0xffffffffu, v, o));
  __syncthreads();                       // part[] may still be read by the last reduction
  if (lane == 0) part[warp] = v;
  __syncthreads();
  if (warp == 0) {
    v = lane < (int)(blockDim.x >> 5) ? part[lane] : init;
    for (int o = 16; o > 0; o >>= 1) v = op(v, __shfl_down_sync(0xffffffffu, v, o));
    if (lane == 0) part[0] = v;
  }
  __syncthreads();
  return part[0];
}
"""


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


_FUNCTOR = {"sum": "TjSum", "max": "TjMax", "min": "TjMin"}     # the prelude's reductions
_INFIX = {"sum": "+", "prod": "*"}


class _Renderer:
    """Renders one LoopKernel as a CUDA C function."""

    def __init__(self, lk: L.LoopKernel) -> None:
        self.lk = lk
        self.names = {v: f"a{i}" for i, v in enumerate(lk.args)}
        self.b = CBody()
        index = "long long" if lk.index_bits == 64 else "int"
        self.e = CEmitter(self.b, {v: self.names[v] for v in lk.inputs},
                          {v: self.names[v] for v in lk.outputs}, index)
        # a CPU schedule's thread range is the whole range here
        self.env = {"begin": "0", "end": str(lk.extent)}
        self.index_table = EmitterIndexTable(self.e, self.env, self.expr)
        self.lane_out: dict[Value, str] = {}

    def function(self) -> str:
        self.body(self.lk.body)
        params = []
        for v in self.lk.args:
            const = "" if v in self.lk.outputs else "const "
            params.append(f"{const}{STORE[v.dtype.name]}* __restrict__ {self.names[v]}")
        sig = (f'extern "C" __global__ void __launch_bounds__({self.lk.block}) '
               f'{self.lk.name}({", ".join(params)})')
        return "\n".join([sig + " {", *self.b.lines, "}"])

    # -- index and scalar expressions --------------------------------------------------------
    def ix(self, x: L.Ix) -> str:
        return L.render_index(x, self.index_table)

    def acc_ref(self, name: str, at: L.Ix | None) -> str:
        return name if at is None else f"{name}[{self.ix(at)}]"

    def expr(self, x: L.Expr) -> CS:
        e = self.e
        if isinstance(x, L.Eval):
            return e.emit(x.value, [self.ix(i) for i in x.at])
        if isinstance(x, L.AccGet):
            return CS(self.acc_ref(x.acc, x.at), self.lk.accs[x.acc].dtype)
        if isinstance(x, L.LoadFlat):
            return e.load(x.buf, self.ix(x.at))
        if isinstance(x, L.Const):
            return e.sb.literal(x.value, x.dtype)
        if isinstance(x, L.Cast):
            v = self.expr(x.x)
            return v if v.dtype is compute_dtype(x.dtype) else e.sb.cast(v, x.dtype)
        vals = [self.expr(i) for i in x.items]
        sb = e.sb
        fn = {"sum": sb.add, "prod": sb.mul, "max": sb.max, "min": sb.min}[x.op]
        while len(vals) > 1:        # a balanced tree
            vals = [fn(vals[i], vals[i + 1]) if i + 1 < len(vals) else vals[i]
                    for i in range(0, len(vals), 2)]
        return vals[0]

    # -- statements --------------------------------------------------------------------------
    def body(self, stmts: list) -> None:
        for st in stmts:
            getattr(self, "st_" + type(st).__name__)(st)

    def block(self, header: str, fn) -> None:
        self.b.open(header)
        fn()
        self.b.close()
        self.e.memo.clear()        # locals of the block are out of scope after it

    def st_Loop(self, st: L.Loop) -> None:
        ix, v = self.e.index, st.var + "_"       # never a CBody local's name (t1, t2, ...)
        lo = self.ix(st.lo)
        hi = self.e.iadd(lo, self.ix(st.extent))
        if st.par == "grid":
            head = (f"for ({ix} {v} = ({ix})blockIdx.x * blockDim.x + threadIdx.x; {v} < {hi}; "
                    f"{v} += ({ix})gridDim.x * blockDim.x)")
        elif st.par == "blocks":
            head = f"for ({ix} {v} = blockIdx.x; {v} < {hi}; {v} += gridDim.x)"
        elif st.par == "block":
            start = "threadIdx.x" if lo == "0" else f"{lo} + threadIdx.x"
            head = f"for ({ix} {v} = {start}; {v} < {hi}; {v} += blockDim.x)"
        else:                      # serial, and a CPU schedule's thread range
            head = f"for ({ix} {v} = {lo}; {v} < {hi}; ++{v})"
        self.env[st.var] = v
        self.block(head, lambda: self.body(st.body))

    def st_Lanes(self, st: L.Lanes) -> None:
        """Each thread moves its lanes' same-shape inputs and outputs as 16-byte words."""
        b, e, n = self.b, self.e, st.lanes
        q = self.ix(st.group)

        def words(v: Value) -> int:          # 16-byte words per `lanes` elements of v
            return n * v.dtype.np.itemsize // 16

        def declare(v: Value, var: str) -> None:    # a register block seen as words or elements
            b.line(f"union {{ uint4 u[{words(v)}]; {STORE[v.dtype.name]} e[{n}]; }} {var};")
        for v in st.inputs:
            a = self.names[v]
            declare(v, f"{a}v")
            for j in range(words(v)):
                b.line(f"{a}v.u[{j}] = reinterpret_cast<const uint4*>({a})[{q} * {words(v)} + "
                       f"{j}];")
        for j, v in enumerate(st.outputs):
            declare(v, f"o{j}")
        for u in range(n):
            def lane(u=u):
                self.env[st.var] = str(u)
                flat = self.env[st.flat_var] = self.ix(st.flat)
                idx = L.render_unflatten(e, flat, st.shape)
                for var, i in zip(st.vars, idx):
                    self.env[var] = i
                for v in st.inputs:          # the element this lane needs is already loaded
                    e.memo[(v, tuple(idx))] = e.sb.widen(f"{self.names[v]}v.e[{u}]", v.dtype)
                self.lane_out = {v: f"o{j}.e[{u}]" for j, v in enumerate(st.outputs)}
                self.body(st.body)
                self.lane_out = {}
            self.block("", lane)
        for j, v in enumerate(st.outputs):
            for m in range(words(v)):
                b.line(f"reinterpret_cast<uint4*>({self.names[v]})[{q} * {words(v)} + {m}] = "
                       f"o{j}.u[{m}];")

    def st_Let(self, st: L.Let) -> None:
        self.env[st.var] = self.ix(st.expr)

    def st_Unflatten(self, st: L.Unflatten) -> None:
        for var, i in zip(st.vars, L.render_unflatten(self.e, self.ix(st.flat), st.shape)):
            self.env[var] = i

    def _init(self, acc: L.Acc) -> str:
        return literal(L.identity(acc.op, acc.dtype), acc.dtype)

    def st_Acc(self, st: L.Acc) -> None:
        ty = COMPUTE[st.dtype.name]
        if st.size > 1:
            self.b.line(f"{ty} {st.name}[{st.size}];")
        else:
            self.b.line(f"{ty} {st.name} = {self._init(st)};")

    def st_Reset(self, st: L.Reset) -> None:
        self.b.line(f"{self.acc_ref(st.acc, st.at)} = {self._init(self.lk.accs[st.acc])};")

    def st_Update(self, st: L.Update) -> None:
        acc = self.lk.accs[st.acc]
        v = self.expr(st.value)
        ref = self.acc_ref(st.acc, st.at)
        if acc.op in _INFIX:
            self.b.line(f"{ref} = {ref} {_INFIX[acc.op]} {v.ref};")
        else:
            self.b.line(f"{ref} = {_FUNCTOR[acc.op]}()({ref}, {v.ref});")

    def st_Store(self, st: L.Store) -> None:
        value = self.expr(st.value)
        if st.buf in self.lane_out:
            self.b.line(f"{self.lane_out[st.buf]} = {self.e.sb.narrow(value, st.buf.dtype)};")
        else:
            self.e.store(st.buf, self.ix(st.at), value)

    def st_ScatterAdd(self, st: L.ScatterAdd) -> None:
        out = st.buf
        if out.dtype is dt.bool_:
            raise NotImplementedError("scatter_add: bool outputs have no CUDA atomic add; "
                                      "cast to an integer type first")
        if out.dtype in dt.HALF:         # the backend widens 16-bit scatters (passes.widen_half)
            raise NotImplementedError(f"scatter_add: no CUDA atomic add for {out.dtype}")
        flat = self.ix(st.at)
        val = self.expr(st.value)
        self.b.line(f"tj_atomic_add(&{self.e.outputs[out]}[{flat}], {val.ref});")

    def st_BlockReduce(self, st: L.BlockReduce) -> None:
        acc = self.lk.accs[st.acc]
        ty = COMPUTE[acc.dtype.name]
        self.b.line(f"{acc.name} = tj_block_reduce<{ty}>({acc.name}, ({ty}){self._init(acc)}, "
                    f"{_FUNCTOR[acc.op]}());")

    def st_Leader(self, st: L.Leader) -> None:
        self.block("if (threadIdx.x == 0)", lambda: self.body(st.body))

    def st_Barrier(self, st: L.Barrier) -> None:
        self.b.line("__syncthreads();     // the next stage reads what this one wrote")

    def st_Compute(self, st: L.Compute) -> None:
        # a later stage may load these values; this one must compute them
        hidden = {v: self.e.buffers.pop(v) for v in st.values if v in self.e.buffers}
        self.body(st.body)
        self.e.buffers.update(hidden)


def render(lk: L.LoopKernel) -> str:
    """The CUDA C function of one loop kernel (its parameters are lk.args in order)."""
    return _Renderer(lk).function()


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


__all__ = ["CudaProgram", "Launch", "lower_program", "render", "PRELUDE", "PORTABLE"]
