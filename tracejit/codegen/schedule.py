"""The one schedule: every kernel of the fusion plan becomes loop IR (codegen.loops) for a
target, "cpu" or "gpu". Every decision about loops lives here: which loop is parallel and how
it maps to CPU threads or to CUDA blocks and threads, tiles, unrolling, vector widths, how a
reduction is split and what it accumulates in. The renderers only translate.

The accumulation rule (README, "One accumulation rule"): a float sum accumulates in float64 and
rounds once to its dtype, an integer sum in its own type (wrapping); max/min in the compute type.
A reduction over leading axes (a column sum, a bias gradient) has the same order of additions on
both targets: rows in groups (schedule_leading.row_unroll: four rows, or one under a long row
expression) added as a balanced tree, and, when the rows are split into chunks
(`leading_split`), each chunk summed on its own and the chunk sums added in chunk order. So
CPU and GPU column sums agree bit for bit. On the GPU the chunks run in parallel (a partial-sum
kernel, then a finishing kernel); on the CPU a thread takes a range of columns and runs the
chunks of each column tile in turn."""
from __future__ import annotations

from ..ir import dtypes as dt
from ..ir.core import Value
from ..ir.printer import value_names
from ..ir.prims_scan import scan_acc_dtype
from . import loops as L
from .loop_text import format_program
from .schedule_pads import pad_pieces, split_nest
from .access_probe import innermost_steps
from .fusion import Kernel, Plan
from .schedule_leading import LeadingScheduler, leading_split  # noqa: F401  (this API)
from .schedule_reduce import (  # noqa: F401  (acc_dtype: part of this API)
    LOOP_BLOCK, MAX_GRID, VEC_MIN, VECTOR_WIDTH, _block_size, _cast, _Names, _nest, _size,
    _unflatten, acc_dtype, is_small, parallel_extent)


class Scheduler(LeadingScheduler):
    """Builds the loop kernels of one plan kernel for one target."""

    def __init__(self, target: str, small: bool = False) -> None:
        if target not in ("cpu", "gpu"):
            raise ValueError(f"unknown target {target!r}: 'cpu' or 'gpu'")
        self.target, self.small = target, small

    def __call__(self, k: Kernel, name: str | None = None) -> L.Scheduled:
        name = name or k.name
        fn = {"loop": self.loop, "reduce": self.reduce, "rows": self.rows,
              "scatter": self.scatter, "scan": self.scan}.get(k.kind)
        if fn is None:
            raise ValueError(f"kernel kind {k.kind} is not generated")
        return fn(k, name)

    def loop(self, k: Kernel, name: str) -> L.Scheduled:
        names = _Names()

        def stores(idx):
            return [L.Store(v, L.linear(idx, v.shape), L.Eval(v, idx)) for v in k.outputs]
        split = pad_pieces(k) if not self.gpu else None
        if split is not None:
            return L.Scheduled(k, [self._kernel(name, k.inputs, k.outputs,
                                                split_nest(k, names, *split), [],
                                                extent=parallel_extent(k))],
                               note="split at its operands' ranges")
        if not self.gpu:
            body = _nest(names, k.shape, stores, "threads") if k.shape else stores([])
            _cpu_vector_hints(body, k, self.small)
            return L.Scheduled(k, [self._kernel(name, k.inputs, k.outputs, body, [],
                                                extent=parallel_extent(k))])
        n = _size(k.shape)
        vec = _vector_plan(k)
        if vec is not None:
            lanes, vec_in = vec
            q, u, i = names("q"), names("l"), names("e")
            idx = names.vars("u", len(k.shape))
            flat = L.add(L.mul(L.Var(q), lanes), L.Var(u))
            lane = L.Lanes(u, lanes, L.Var(q), vec_in, list(k.outputs), i, flat,
                           tuple(k.shape), idx,
                           [L.Store(v, L.Var(i), L.Eval(v, [L.Var(x) for x in idx]))
                            for v in k.outputs])
            body = [L.Loop(q, L.Lit(n // lanes), [lane], par="grid")]
            grid = min(-(-n // (lanes * LOOP_BLOCK)), MAX_GRID)
            return L.Scheduled(k, [self._kernel(name, k.inputs, k.outputs, body, [], grid,
                                                LOOP_BLOCK, loop_sizes=[n], aligned=vec_in)],
                               note=f"{lanes} elements per thread, 16-byte words")
        i = names("i")
        un, idx = _unflatten(names, L.Var(i), k.shape)
        body = [L.Loop(i, L.Lit(n), [un, *[L.Store(v, L.Var(i), L.Eval(v, idx))
                                            for v in k.outputs]], par="grid")]
        return L.Scheduled(k, [self._kernel(name, k.inputs, k.outputs, body, [],
                                            min(-(-n // LOOP_BLOCK), MAX_GRID), LOOP_BLOCK,
                                            loop_sizes=[n])])

    # -- rows, scatter, scan ---------------------------------------------------------------
    def rows(self, k: Kernel, name: str) -> L.Scheduled:
        """Per row, each stage (a reduction over the row or an elementwise loop over it) in
        turn, so the row is read from memory once and from cache afterwards."""
        j = k.outer
        names, accs = _Names(), []

        def stage_stores(st, idx):
            return [L.Store(v, L.linear(idx, v.shape), L.Eval(v, idx)) for v in st.outputs]

        def row(oidx):
            out = []
            for st in k.stages:
                inner = st.shape[j:]
                if st.kind == "reduce":
                    out += self.reduce_at(st, names, oidx, accs, self.gpu)
                elif self.gpu:
                    c = names("c")
                    un, iidx = _unflatten(names, L.Var(c), inner)
                    out.append(L.Compute(list(st.outputs), [L.Loop(c, L.Lit(_size(inner)), [
                        un, *stage_stores(st, list(oidx) + iidx)], par="block")]))
                else:
                    body = _nest(names, inner, lambda i, st=st: stage_stores(
                        st, list(oidx) + i), vector=self._vec(), prefix="c") \
                        if inner else stage_stores(st, list(oidx))
                    out.append(L.Compute(list(st.outputs), body))
                if self.gpu:
                    out.append(L.Barrier())
            return out
        rows = k.shape[:j]
        if not self.gpu:
            return L.Scheduled(k, [self._kernel(name, k.inputs, k.outputs,
                                                _nest(names, rows, row, "threads", prefix="o"),
                                                accs, extent=parallel_extent(k))])
        r = names("r")
        un, oidx = _unflatten(names, L.Var(r), rows)
        body = [L.Loop(r, L.Lit(_size(rows)), [un, *row(oidx)], par="blocks")]
        width = max(_size(st.shape[j:]) for st in k.stages)
        return L.Scheduled(k, [self._kernel(name, k.inputs, k.outputs, body, accs,
                                            min(_size(rows), MAX_GRID), _block_size(width),
                                            loop_sizes=[_size(k.shape)])],
                           note="a block per row; stages separated by barriers")

    def scatter(self, k: Kernel, name: str) -> L.Scheduled:
        """A zero fill, then every update added at its gathered index (in index order on the
        CPU, atomically on the GPU)."""
        ins = k.instr
        ind, upd = ins.inputs
        out, axis = ins.out, ins.params["axis"]
        nk, n = len(ind.shape), out.shape[axis]
        names = _Names()
        i = names("i")
        zero = [L.Loop(i, L.Lit(_size(out.shape)), [L.Store(out, L.Var(i),
                                                              L.Const(0, out.dtype))],
                       par="grid" if self.gpu else "serial")]

        def add(idx):
            j = L.Gathered(L.Eval(ind, idx[axis:axis + nk]), n)
            target = idx[:axis] + [j] + idx[axis + nk:]
            return [L.ScatterAdd(out, L.linear(target, out.shape),
                                 _cast(L.Eval(upd, idx), upd.dtype, out.dtype))]
        if not self.gpu:
            body = zero + (_nest(names, upd.shape, add) if _size(upd.shape) and n else [])
            return L.Scheduled(k, [self._kernel(name, k.inputs, k.outputs, body, [])])
        zk = self._kernel(name + "_zero", [], [out], zero, [],
                          min(-(-_size(out.shape) // LOOP_BLOCK), MAX_GRID), LOOP_BLOCK,
                          loop_sizes=[_size(out.shape)])
        e = names("e")
        un, idx = _unflatten(names, L.Var(e), upd.shape)
        m = _size(upd.shape)
        body = [L.Loop(e, L.Lit(m), [un, *add(idx)], par="grid")]
        main = self._kernel(name, k.inputs, k.outputs, body, [],
                            min(-(-m // LOOP_BLOCK), MAX_GRID) if n else 0, LOOP_BLOCK,
                            loop_sizes=[m])
        return L.Scheduled(k, [zk, main], note="zero fill, then atomic adds")

    def scan(self, k: Kernel, name: str) -> L.Scheduled:
        """cumsum/cumprod: per row along the axis, a sequential loop that carries the
        accumulator (float32 in float64, as the interpreter) and stores every prefix."""
        ins = k.instr
        x, out = ins.inputs[0], ins.out
        axis, rev, n = ins.params["axis"], ins.params["reverse"], x.shape[ins.params["axis"]]
        adt = scan_acc_dtype(out.dtype)
        op = "sum" if ins.prim.name == "cumsum" else "prod"
        acc = L.Acc("acc", adt, op)
        names = _Names()

        def row(oidx):
            r, j = names("r"), names("k")
            idx = list(oidx[:axis]) + [L.Var(j)] + list(oidx[axis:])
            return [acc, L.Loop(r, L.Lit(n), [
                L.Let(j, L.add(L.Lit(n - 1), L.mul(L.Var(r), -1)) if rev else L.Var(r)),
                L.Update("acc", _cast(L.Eval(x, idx), x.dtype, adt)),
                L.Store(out, L.linear(idx, out.shape), _cast(L.AccGet("acc"), adt, out.dtype))])]
        outer = [d for i, d in enumerate(x.shape) if i != axis]
        if not self.gpu:
            body = _nest(names, outer, row, "threads", prefix="o") if outer else row([])
            return L.Scheduled(k, [self._kernel(name, k.inputs, k.outputs, body, [acc],
                                                extent=parallel_extent(k))])
        i = names("i")
        un, oidx = _unflatten(names, L.Var(i), outer)
        m = _size(outer)
        body = [L.Loop(i, L.Lit(m), [un, *row(oidx)], par="grid")]
        return L.Scheduled(k, [self._kernel(name, k.inputs, k.outputs, body, [acc],
                                            min(-(-m // LOOP_BLOCK), MAX_GRID) if n else 0,
                                            LOOP_BLOCK, loop_sizes=[_size(x.shape)])],
                           note="a thread per row")

# the widest stride LLVM vectorizes with shuffles (interleaved access groups); wider ones it
# vectorizes with scatters
MAX_INTERLEAVE = 8
# an innermost loop shorter than this LLVM unrolls fully before the vectorizer sees it
SHORT_INNER = 32


def _cpu_vector_hints(body: list, k: Kernel, small: bool) -> None:
    """The vector hints of a CPU loop nest whose innermost extent is above MAX_INTERLEAVE and
    whose reads all move by 0 or 1 element along it (access_probe): its outer loops
    vector(1), and a short innermost loop vector(VECTOR_WIDTH) without unrolling. Along an
    outer loop the stores stride by the inner extents' product, so a vectorized outer loop
    writes with scatters, and that is what LLVM did with a short innermost loop: unrolled it
    fully (a per-example outer product's 10 classes, 256x128x10) and widened the loop around
    it. Measured on that kernel: 145 us as LLVM chose, 95 us with scalar outer loops, 31 us
    with the innermost loop vectorized (masked tail). Left to LLVM: strides up to
    MAX_INTERLEAVE (shuffles beat scalar code: [65536, 2] 94 us vectorized, 720 us scalar),
    and reads that jump along the innermost axis (a transpose's [32768, 10]: 150 us as LLVM
    chose, with contiguous loads along the outer loop; 240 us with gathers inside).
    The outer loops are also kept from the unroller: unrolled around a vectorized inner loop,
    they cost LLVM time and bought nothing measured (a transformer's head transposes,
    [8,64,4,32] -> [8,4,64,32]: 50 -> 20 ms of LLVM each, run time the same; no kernel of
    bench/models.py's CPU workloads ran slower)."""
    shape = k.shape
    if small or len(shape) < 2 or shape[-1] <= MAX_INTERLEAVE:
        return
    steps = innermost_steps(k)
    if steps is None or any(s not in (0, 1) for s in steps):
        return
    loop = body[0]
    for _ in range(len(shape) - 1):
        loop.vector, loop.unroll = 1, False
        loop = loop.body[0]
    if shape[-1] < SHORT_INNER:
        loop.vector, loop.unroll = VECTOR_WIDTH, False


def _vector_plan(k: Kernel) -> tuple[int, list[Value]] | None:
    """For a GPU loop kernel whose outputs (and the inputs it reads at its own index) are all
    numbers of 2, 4 or 8 bytes: (lanes, those inputs). Each thread then handles `lanes`
    consecutive elements (16 bytes of the narrowest type) with 16-byte loads and stores."""
    n = _size(k.shape)
    vec_in = [v for v in k.inputs if v.shape == k.shape and v.dtype is not dt.bool_]
    if n < VEC_MIN or any(v.dtype is dt.bool_ for v in k.outputs):
        return None
    lanes = 16 // min(v.dtype.np.itemsize for v in vec_in + k.outputs)
    return (lanes, vec_in) if n % lanes == 0 else None


GENERATED = ("loop", "reduce", "rows", "scatter", "scan")


def schedule_plan(plan: Plan, target: str, prefix: str = "") -> list[L.Scheduled]:
    """The loop IR of every generated kernel of the plan, in plan order."""
    return [Scheduler(target, small=target == "cpu" and is_small(k))(k, prefix + k.name)
            for k in plan.kernels if k.kind in GENERATED]


def describe(plan: Plan, target: str) -> str:
    """The loop IR of a plan as text (TRACEJIT_DUMP=loops, `.lower(...).loops`)."""
    names = value_names(plan.graph)
    return format_program(schedule_plan(plan, target),
                            lambda v: names.get(v) or v.name or "?")


__all__ = ["Scheduler", "schedule_plan", "describe", "acc_dtype", "leading_split",
           "parallel_extent", "is_small"]
