"""Lowering of the kernel plan (codegen.fusion) to CUDA C: one translation unit, one
`extern "C" __global__` function per generated kernel, and the launch list that runs them.

Kernel kinds map to CUDA as follows:
- loop: a grid-stride loop over the flat output index, unflattened into the loop's index vector;
  big loops move 16 bytes per load and store (same-shape inputs, outputs): each thread takes 16
  bytes' worth of the narrowest type (4 float32, 8 float16, ...) when the size divides;
- reduce over trailing axes (and reductions in general): one block per output element, threads
  stride over the reduced elements, then warp shuffles and a block reduction;
- reduce over leading axes (a column sum): one thread per output, looping down the column, so
  neighbouring threads read neighbouring memory;
- rows (softmax, layer_norm, logsumexp and their backward): one block per row; the stages run
  in turn, separated by `__syncthreads()`, so a row is read from DRAM once and from cache after;
- scatter: a zero fill, then atomic adds;
- scan (cumsum, cumprod): a thread per row walks along the axis, carrying the accumulator;
- matmul: not generated; the runtime calls cuBLAS (through CuPy) and the epilogue fuses into the
  next loop kernel, as on the CPU;
- extern (argsort): not generated; the runtime calls the primitive's implementation on CuPy
  arrays (CuPy's sort).
Sums accumulate in double for float32 (as the CPU path does) so they are as accurate as NumPy's
pairwise sums. Sizes are compile-time constants, so every index division is by a constant."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..ir import dtypes as dt
from ..ir.core import Aval, Value
from ..ir.prims_scan import scan_acc_dtype
from .cuda_expr import COMPUTE, STORE, CBody, CEmitter, CS, literal
from .expr import compute_dtype, strides
from .fusion import Kernel, Plan

LOOP_BLOCK = 256
MAX_GRID = 1 << 16           # grid-stride loops cover anything larger

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
    name: str = ""
    grid: int = 0
    block: int = 0
    args: list[Value] = field(default_factory=list)
    kernel: Kernel | None = None
    aligned: list[Value] = field(default_factory=list)    # read 16 bytes at a time


@dataclass
class CudaProgram:
    source: str
    launches: list[Launch]
    scratch: list[Value] = field(default_factory=list)   # buffers only the kernels use


def _size(shape) -> int:
    return int(math.prod(shape))


def _unflatten(e: CEmitter, flat: str, shape) -> list[str]:
    """The index vector of flat position `flat` in a C-ordered `shape`."""
    idx, rest = [], flat
    for d, (n, s) in enumerate(zip(shape, strides(shape))):
        if n == 1:
            idx.append("0")
            continue
        q = rest if s == 1 else e.idiv(rest, s)
        idx.append(q)
        if s != 1 and d < len(shape) - 1:
            rest = e.iadd(rest, e.imul(q, -s))
    return idx


_FUNCTOR = {"sum": "TjSum", "max": "TjMax", "min": "TjMin"}     # the prelude's reductions


def _acc_type(op: str, d: dt.DType) -> dt.DType:
    if op == "sum":
        return dt.f64 if d.is_float else dt.i64
    return dt.i32 if d is dt.bool_ else compute_dtype(d)


def _init(op: str, d: dt.DType) -> str:
    if op == "sum":
        return literal(0, d)
    if d.is_float:
        return literal(float("-inf") if op == "max" else float("inf"), d)
    bound = 2 ** (d.bits - 1)
    return literal(-bound if op == "max" else bound - 1, d)


def _block_size(n: int) -> int:
    """Threads for a block that strides over n elements: a multiple of 32, at most 256."""
    return max(32, min(256, 32 * -(-n // 32)))


class _Writer:
    """Emits one kernel's C function."""

    def __init__(self, k: Kernel, inputs: list[Value] | None = None,
                 outputs: list[Value] | None = None) -> None:
        self.k = k
        inputs = k.inputs if inputs is None else inputs
        self.outputs = k.outputs if outputs is None else outputs
        self.args = inputs + [v for v in self.outputs if v not in inputs]
        names = {v: f"a{i}" for i, v in enumerate(self.args)}
        sizes = [_size(v.shape) for v in self.args] + [_size(k.shape)]
        index = "long long" if max(sizes) >= 2 ** 31 else "int"
        self.b = CBody()
        self.e = CEmitter(self.b, {v: names[v] for v in inputs},
                          {v: names[v] for v in self.outputs}, index)
        self.names = names

    def signature(self, name: str, block: int) -> str:
        params = []
        for v in self.args:
            const = "" if v in self.outputs else "const "
            params.append(f"{const}{STORE[v.dtype.name]}* __restrict__ {self.names[v]}")
        return (f'extern "C" __global__ void __launch_bounds__({block}) '
                f'{name}({", ".join(params)})')

    def function(self, name: str, block: int) -> str:
        return "\n".join([self.signature(name, block) + " {", *self.b.lines, "}"])

    # -- loops -------------------------------------------------------------------------------
    def grid_stride(self, n: int, body, per_block: bool = False) -> None:
        """for each i in [0, n): threads (or, with per_block, whole blocks) take turns."""
        ix = self.e.index
        if per_block:
            self.b.open(f"for ({ix} i = blockIdx.x; i < {n}; i += gridDim.x)")
        else:
            self.b.open(f"for ({ix} i = ({ix})blockIdx.x * blockDim.x + threadIdx.x; i < {n}; "
                        f"i += ({ix})gridDim.x * blockDim.x)")
        body("i")
        self.b.close()
        self.e.memo.clear()        # locals of the loop body are out of scope after it

    def block_stride(self, var: str, n: int, body, span: tuple[str, str] | None = None) -> None:
        ix = self.e.index
        lo, hi = span or ("0", str(n))
        start = "threadIdx.x" if lo == "0" else f"{lo} + threadIdx.x"
        self.b.open(f"for ({ix} {var} = {start}; {var} < {hi}; {var} += blockDim.x)")
        body(var)
        self.b.close()
        self.e.memo.clear()

    def store_all(self, outputs, idx: list[str]) -> None:
        for v in outputs:
            self.e.store(v, self.e.linear(idx, v.shape), self.e.emit(v, idx))

    # -- reductions --------------------------------------------------------------------------
    def reduce_at(self, k: Kernel, oidx: list[str], by_block: bool, span: tuple[str, str] |
                  None = None, partial: tuple[Value, str] | None = None) -> None:
        """Reduce k's input over its reduced axes at kept index oidx and store the result:
        cooperatively by the block (by_block) or sequentially by one thread. With `span`
        (lo, hi) only that range of the flattened reduced elements, and with `partial`
        (buffer, flat index) the accumulator is stored there, unconverted."""
        ins = k.instr
        op, axes = ins.prim.name, ins.params["axes"]
        x, out = ins.inputs[0], ins.out
        kept = [d for d in range(len(x.shape)) if d not in axes]
        acc_dt = _acc_type(op, out.dtype)
        acc_ty = COMPUTE[acc_dt.name]
        n = self.b.n = self.b.n + 1
        acc, init = f"acc{n}", _init(op, acc_dt)
        fn = _FUNCTOR[op]
        self.b.line(f"{acc_ty} {acc} = {init};")
        red_shape = [x.shape[d] for d in axes]

        def inner(r):
            full: list = [None] * len(x.shape)
            for d, i in zip(kept, oidx):
                full[d] = i
            for d, i in zip(axes, _unflatten(self.e, r, red_shape)):
                full[d] = i
            v = self.e.emit(x, full)
            if v.dtype is not acc_dt:
                v = self.e.sb.cast(v, acc_dt)
            self.b.line(f"{acc} = {fn}()({acc}, {v.ref});")
        r = f"r{n}"
        if by_block:
            self.block_stride(r, _size(red_shape), inner, span)
            self.b.line(f"{acc} = tj_block_reduce<{acc_ty}>({acc}, ({acc_ty}){init}, {fn}());")
            self.b.open("if (threadIdx.x == 0)")
        else:
            self.b.open(f"for ({self.e.index} {r} = 0; {r} < {_size(red_shape)}; ++{r})")
            inner(r)
            self.b.close()
            self.e.memo.clear()
            self.b.open("")
        if partial is not None:
            self.e.store(partial[0], partial[1], CS(acc, acc_dt))
        else:
            res = self.e.sb.cast(CS(acc, acc_dt), out.dtype)
            self.e.store(out, self.e.linear(oidx, out.shape), res)
        self.b.close()


def _kept_shape(k: Kernel) -> list[int]:
    axes = k.instr.params["axes"]
    return [n for d, n in enumerate(k.shape) if d not in axes]


VEC_MIN = 1 << 12           # below this many elements, one per thread is as good


def _vector_plan(k: Kernel) -> tuple[int, list[Value]] | None:
    """For a loop kernel whose outputs (and the inputs it reads at its own index) are all
    numbers of 2, 4 or 8 bytes: (lanes, those inputs). Each thread then handles `lanes`
    consecutive elements (16 bytes of the narrowest type) with 16-byte loads and stores."""
    n = _size(k.shape)
    vec_in = [v for v in k.inputs if v.shape == k.shape and v.dtype is not dt.bool_]
    if n < VEC_MIN or any(v.dtype is dt.bool_ for v in k.outputs):
        return None
    lanes = 16 // min(v.dtype.np.itemsize for v in vec_in + k.outputs)
    return (lanes, vec_in) if n % lanes == 0 else None


def _loop_vec(k: Kernel, name: str, lanes: int, vec_in: list[Value]) -> tuple[str, list[Launch]]:
    w = _Writer(k)
    n = _size(k.shape)
    ix = w.e.index

    def words(v: Value) -> int:                 # 16-byte words per `lanes` elements of v
        return lanes * v.dtype.np.itemsize // 16

    def declare(v: Value, var: str) -> None:    # a register block seen as words or elements
        w.b.line(f"union {{ uint4 u[{words(v)}]; {STORE[v.dtype.name]} e[{lanes}]; }} {var};")

    def body(q):
        for v in vec_in:
            declare(v, f"{w.names[v]}v")
            for j in range(words(v)):
                w.b.line(f"{w.names[v]}v.u[{j}] = reinterpret_cast<const uint4*>"
                         f"({w.names[v]})[{q} * {words(v)} + {j}];")
        for j, v in enumerate(k.outputs):
            declare(v, f"o{j}")
        for u in range(lanes):
            w.b.open("")
            w.b.n += 1
            i = f"t{w.b.n}"
            w.b.line(f"[[maybe_unused]] const {ix} {i} = {q} * {lanes} + {u};")
            idx = _unflatten(w.e, i, k.shape)
            for v in vec_in:              # the element this lane needs is already loaded
                w.e.memo[(v, tuple(idx))] = w.e.sb.widen(f"{w.names[v]}v.e[{u}]", v.dtype)
            for j, v in enumerate(k.outputs):
                w.b.line(f"o{j}.e[{u}] = {w.e.sb.narrow(w.e.emit(v, idx), v.dtype)};")
            w.b.close()
            w.e.memo.clear()
        for j, v in enumerate(k.outputs):
            for m in range(words(v)):
                w.b.line(f"reinterpret_cast<uint4*>({w.names[v]})[{q} * {words(v)} + {m}] = "
                         f"o{j}.u[{m}];")
    w.grid_stride(n // lanes, body)
    grid = min(-(-n // (lanes * LOOP_BLOCK)), MAX_GRID)
    return w.function(name, LOOP_BLOCK), [Launch("kernel", name, grid, LOOP_BLOCK, w.args,
                                                 aligned=vec_in)]


def _loop(k: Kernel, name: str) -> tuple[str, list[Launch]]:
    vec = _vector_plan(k)
    if vec is not None:
        return _loop_vec(k, name, *vec)
    w = _Writer(k)
    n = _size(k.shape)

    def body(i):
        idx = _unflatten(w.e, i, k.shape)
        for v in k.outputs:                # outputs have the loop's shape: flat index i
            w.e.store(v, i, w.e.emit(v, idx))
    w.grid_stride(n, body)
    grid = min(-(-n // LOOP_BLOCK), MAX_GRID)
    return w.function(name, LOOP_BLOCK), [Launch("kernel", name, grid, LOOP_BLOCK, w.args)]


SPLIT_OUTPUTS = 256         # fewer outputs than this cannot fill the GPU with one block each
SPLIT_MIN = 1 << 15         # ... when each has at least this many elements to reduce
SPLIT_CHUNK = 1 << 13       # elements per block of a split reduction


def _split_reduce(k: Kernel, name: str, n_out: int, n_red: int) -> tuple[str, list[Launch],
                                                                         list[Value]]:
    """A reduction with few, long outputs (a loss sum): pass 1 reduces chunks of each output's
    elements in parallel blocks into partials; pass 2 reduces the partials, one block each."""
    ins = k.instr
    op, out = ins.prim.name, ins.out
    acc_dt = _acc_type(op, out.dtype)
    parts = min(1024, -(-n_red // SPLIT_CHUNK))
    chunk = -(-n_red // parts)
    part = Value(Aval((n_out * parts,), acc_dt), None, name=f"{name}_partials")
    w = _Writer(k, outputs=[part])
    kept = _kept_shape(k)

    def block(b):
        o = w.e.idiv(b, parts) if parts > 1 else b
        s = w.e.iadd(b, w.e.imul(o, -parts))
        lo = w.e.imul(s, chunk)
        hi = w.b.let(w.e.index, f"min({w.e.iadd(lo, str(chunk))}, ({w.e.index}){n_red})")
        w.reduce_at(k, _unflatten(w.e, o, kept), True, (lo, hi), (part, b))
    w.grid_stride(n_out * parts, block, per_block=True)
    block1 = 256

    fin = _Writer(k, inputs=[part], outputs=[out])
    fn = _FUNCTOR[op]
    acc_ty, init = COMPUTE[acc_dt.name], _init(op, acc_dt)

    def finish(o):
        fin.b.line(f"{acc_ty} acc = {init};")
        fin.block_stride("j", parts, lambda j: fin.b.line(
            f"acc = {fn}()(acc, {fin.e.load(part, fin.e.iadd(fin.e.imul(o, parts), j)).ref});"))
        fin.b.line(f"acc = tj_block_reduce<{acc_ty}>(acc, ({acc_ty}){init}, {fn}());")
        fin.b.open("if (threadIdx.x == 0)")
        fin.e.store(out, o, fin.e.sb.cast(CS("acc", acc_dt), out.dtype))
        fin.b.close()
    fin.grid_stride(n_out, finish, per_block=True)
    block2 = _block_size(parts)
    text = w.function(name, block1) + "\n\n" + fin.function(name + "_finish", block2)
    return text, [Launch("kernel", name, min(n_out * parts, MAX_GRID), block1, w.args),
                  Launch("kernel", name + "_finish", min(n_out, MAX_GRID), block2, fin.args)], \
        [part]


def _reduce(k: Kernel, name: str) -> tuple[str, list[Launch]]:
    w = _Writer(k)
    axes = k.instr.params["axes"]
    kept = _kept_shape(k)
    n_out, n_red = _size(kept), _size([k.shape[d] for d in axes])
    leading = bool(axes) and tuple(axes) == tuple(range(len(axes))) and len(axes) < len(k.shape)
    if not leading and 0 < n_out < SPLIT_OUTPUTS and n_red >= SPLIT_MIN:
        return _split_reduce(k, name, n_out, n_red)
    if leading:                     # a column sum: one thread per output, coalesced
        block = LOOP_BLOCK
        w.grid_stride(n_out, lambda o: w.reduce_at(k, _unflatten(w.e, o, kept), False))
        grid = -(-n_out // block)
    else:
        block = _block_size(n_red)
        w.grid_stride(n_out, lambda o: w.reduce_at(k, _unflatten(w.e, o, kept), True),
                      per_block=True)
        grid = n_out
    return w.function(name, block), [Launch("kernel", name, min(grid, MAX_GRID), block, w.args)]


def _rows(k: Kernel, name: str) -> tuple[str, list[Launch]]:
    w = _Writer(k)
    j = k.outer
    rows = k.shape[:j]
    width = max(_size(st.shape[j:]) for st in k.stages)
    block = _block_size(width)

    def row(r):
        oidx = _unflatten(w.e, r, rows)
        for st in k.stages:
            if st.kind == "reduce":
                w.reduce_at(st, oidx, True)
            else:
                inner = st.shape[j:]
                # a later stage may load this stage's outputs; this one must compute them
                hidden = {v: w.e.buffers.pop(v) for v in st.outputs if v in w.e.buffers}
                w.block_stride("c", _size(inner), lambda c, st=st, inner=inner: w.store_all(
                    st.outputs, oidx + _unflatten(w.e, c, inner)))
                w.e.buffers.update(hidden)
            w.b.line("__syncthreads();     // the next stage reads what this one wrote")
    w.grid_stride(_size(rows), row, per_block=True)
    return w.function(name, block), [Launch("kernel", name, min(_size(rows), MAX_GRID), block,
                                            w.args)]


def _scatter(k: Kernel, name: str) -> tuple[str, list[Launch]]:
    ins = k.instr
    ind, upd = ins.inputs
    out, axis = ins.out, ins.params["axis"]
    if out.dtype is dt.bool_:
        raise NotImplementedError("scatter_add: bool outputs have no CUDA atomic add; "
                                  "cast to an integer type first")
    zero = _Writer(k, inputs=[], outputs=[out])      # the zero fill reads nothing
    zero.grid_stride(_size(out.shape), lambda i: zero.e.store(out, i, zero.e.sb.literal(0, out.dtype)))
    w = _Writer(k)
    nk, n = len(ind.shape), out.shape[axis]

    def add(i):
        idx = _unflatten(w.e, i, upd.shape)
        j = w.e.wrap_index(w.e.emit(ind, idx[axis:axis + nk]), n)
        flat = w.e.linear(idx[:axis] + [j] + idx[axis + nk:], out.shape)
        val = w.e.emit(upd, idx)
        if out.dtype in dt.HALF:         # the backend widens 16-bit scatters (passes.widen_half)
            raise NotImplementedError(f"scatter_add: no CUDA atomic add for {out.dtype}")
        if val.dtype is not out.dtype:
            val = w.e.sb.cast(val, out.dtype)
        w.b.line(f"tj_atomic_add(&{w.e.outputs[out]}[{flat}], {val.ref});")
    w.grid_stride(_size(upd.shape), add)
    launches = []
    if _size(out.shape):
        launches.append(Launch("kernel", name + "_zero",
                               min(-(-_size(out.shape) // LOOP_BLOCK), MAX_GRID), LOOP_BLOCK,
                               zero.args))
    if _size(upd.shape) and n:
        launches.append(Launch("kernel", name, min(-(-_size(upd.shape) // LOOP_BLOCK),
                                                   MAX_GRID), LOOP_BLOCK, w.args))
    return (zero.function(name + "_zero", LOOP_BLOCK) + "\n\n" +
            w.function(name, LOOP_BLOCK)), launches


def _scan(k: Kernel, name: str) -> tuple[str, list[Launch]]:
    """cumsum/cumprod: a thread per row walks along the axis, carrying the accumulator."""
    ins = k.instr
    x, out = ins.inputs[0], ins.out
    axis, rev, n = ins.params["axis"], ins.params["reverse"], x.shape[ins.params["axis"]]
    acc_dt = scan_acc_dtype(out.dtype)
    init, op = (0, "+") if ins.prim.name == "cumsum" else (1, "*")
    outer = [d for i, d in enumerate(x.shape) if i != axis]
    w = _Writer(k)

    def row(i):
        oidx = _unflatten(w.e, i, outer)
        w.b.line(f"{COMPUTE[acc_dt.name]} acc = {literal(init, acc_dt)};")
        w.b.open(f"for ({w.e.index} r = 0; r < {n}; ++r)")
        j = w.e.iadd(str(n - 1), w.e.imul("r", -1)) if rev else "r"
        full = oidx[:axis] + [j] + oidx[axis:]
        v = w.e.emit(x, full)
        if v.dtype is not acc_dt:
            v = w.e.sb.cast(v, acc_dt)
        w.b.line(f"acc = acc {op} {v.ref};")
        w.e.store(out, w.e.linear(full, out.shape), w.e.sb.cast(CS("acc", acc_dt), out.dtype))
        w.b.close()
        w.e.memo.clear()
    m = _size(outer)
    w.grid_stride(m, row)
    grid = min(-(-m // LOOP_BLOCK), MAX_GRID) if n else 0
    return w.function(name, LOOP_BLOCK), [Launch("kernel", name, grid, LOOP_BLOCK, w.args)]


_LOWER = {"loop": _loop, "reduce": _reduce, "rows": _rows, "scatter": _scatter, "scan": _scan}


def lower_program(plan: Plan, prefix: str = "", prelude: bool = True) -> CudaProgram:
    """CUDA C for every generated kernel of the plan, and the launches that run the graph.
    Kernel names get `prefix` (several programs can then share one translation unit)."""
    parts = [PRELUDE] if prelude else []
    launches: list[Launch] = []
    scratch: list[Value] = []
    for k in plan.kernels:
        if k.kind in ("matmul", "extern"):     # run by the runtime: cuBLAS, CuPy
            launches.append(Launch(k.kind, k.name, kernel=k))
            continue
        text, ls, *extra = _LOWER[k.kind](k, prefix + k.name)
        scratch += extra[0] if extra else []
        parts.append(f"// {k.name}: {k.kind} [{'x'.join(map(str, k.shape)) or 'scalar'}] "
                     f"ops({','.join(dict.fromkeys(i.prim.name for i in k.ops))})\n{text}")
        launches += [ln for ln in ls if ln.grid > 0]
    return CudaProgram("\n\n".join(parts) + "\n", launches, scratch)


__all__ = ["CudaProgram", "Launch", "lower_program", "PRELUDE"]
