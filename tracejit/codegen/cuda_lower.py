"""The CUDA renderer: one loop kernel of the loop IR (codegen.loops, built by codegen.schedule
for the "gpu" target) as a CUDA C function, and the prelude every translation unit starts with.
It translates statement by statement and decides nothing about loops (see codegen.schedule for
how each kernel kind maps to grids, blocks and threads); codegen.cuda_program assembles a
graph's functions and launches. Sizes are compile-time constants, so every index division is by
a constant."""
from __future__ import annotations

from ..ir import dtypes as dt
from ..ir.core import Value
from . import loops as L
from .cuda_expr import COMPUTE, STORE, CBody, CEmitter, CS, literal
from .expr import EmitterIndexTable, compute_dtype

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
  // ((T): a char or short shuffles as int)
  for (int o = 16; o > 0; o >>= 1) v = op(v, (T)__shfl_down_sync(0xffffffffu, v, o));
  __syncthreads();                       // part[] may still be read by the last reduction
  if (lane == 0) part[warp] = v;
  __syncthreads();
  if (warp == 0) {
    v = lane < (int)(blockDim.x >> 5) ? part[lane] : init;
    for (int o = 16; o > 0; o >>= 1) v = op(v, (T)__shfl_down_sync(0xffffffffu, v, o));
    if (lane == 0) part[0] = v;
  }
  __syncthreads();
  return part[0];
}
"""


_FUNCTOR = {"sum": "TjSum", "max": "TjMax", "min": "TjMin"}     # the prelude's reductions
_INFIX = {"sum": "+", "prod": "*"}


class _Renderer(L.StatementRenderer):
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
        if out.dtype in dt.HALF or out.dtype in dt.SMALL_INT:
            # the backend widens these scatters (passes.widen_half)
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


__all__ = ["render", "PRELUDE", "PORTABLE"]
