"""How reductions are scheduled (the reduction half of codegen.schedule), and the helpers
both halves build loop IR with. See codegen.schedule for the accumulation rule and the order of
additions that both targets share."""
from __future__ import annotations

import math

from ..ir import dtypes as dt
from ..ir.core import Aval, Value
from . import loops as L
from .expr import compute_dtype
from .fusion import Kernel

SMALL_KERNEL = 1 << 15    # below this many elements, compile time matters more than vector code
VECTOR_WIDTH = 16         # lanes the CPU vectorizer is asked for
LOOP_BLOCK = 256          # CUDA threads per block of elementwise work
MAX_GRID = 1 << 16        # grid-stride loops cover anything larger
VEC_MIN = 1 << 12         # CUDA: below this many elements, one element per thread is as good
SPLIT_OUTPUTS = 256       # CUDA: fewer outputs than this cannot fill the GPU a block each
SPLIT_MIN = 1 << 15       # ... when each has at least this many elements to reduce
SPLIT_CHUNK = 1 << 13     # elements per block of a split trailing reduction



def is_small(k: Kernel) -> bool:
    """Whether a kernel is small: on the CPU it is then scheduled for compile speed (no
    vector hints), as llvm_program builds it."""
    return int(math.prod(k.shape)) < SMALL_KERNEL


def acc_dtype(op: str, d: dt.DType) -> dt.DType:
    """What a reduction `op` with result dtype d accumulates in (both targets)."""
    if op == "sum":
        return dt.f64 if d.is_float else d
    return dt.i32 if d is dt.bool_ else compute_dtype(d)


def parallel_extent(k: Kernel) -> int:
    """CPU: the size of the loop that threads split (1 when there is none)."""
    if k.kind in ("loop", "rows"):
        return k.shape[0] if k.shape else 1
    if k.kind == "reduce":
        axes = k.instr.params["axes"]
        kept = [d for d in range(len(k.shape)) if d not in axes]
        return k.shape[kept[0]] if kept else 1
    if k.kind == "scan":
        outer = [d for i, d in enumerate(k.shape) if i != k.instr.params["axis"]]
        return outer[0] if outer else 1
    return 1


def _size(shape) -> int:
    return int(math.prod(shape))


class _Names:
    """Fresh loop-variable and accumulator names within one kernel."""

    def __init__(self) -> None:
        self.n = 0

    def __call__(self, prefix: str) -> str:
        self.n += 1
        return f"{prefix}{self.n}"

    def vars(self, prefix: str, k: int) -> list[str]:
        return [self(prefix) for _ in range(k)]


def _nest(names: _Names, extents, body_fn, first: str = "serial", vector: int = 0,
          prefix: str = "i") -> list:
    """Loops over `extents` (outermost first); the first gets `first` as its parallel mapping,
    the innermost the vector hint. body_fn(index vars) gives the innermost body."""
    vs = names.vars(prefix, len(extents))
    body = body_fn([L.Var(v) for v in vs])
    for d in reversed(range(len(extents))):
        body = [L.Loop(vs[d], L.Lit(extents[d]) if isinstance(extents[d], int) else extents[d],
                       body, par=first if d == 0 else "serial",
                       vector=vector if d == len(extents) - 1 else 0)]
    return body


def _unflatten(names: _Names, flat: L.Ix, shape, prefix: str = "u") -> tuple[L.Unflatten,
                                                                                 list[L.Ix]]:
    vs = names.vars(prefix, len(shape))
    return L.Unflatten(flat, tuple(shape), vs), [L.Var(v) for v in vs]


def _cast(e: L.Expr, src: dt.DType, to: dt.DType) -> L.Expr:
    return e if compute_dtype(src) is compute_dtype(to) else L.Cast(e, to)


def _index_bits(lk: L.LoopKernel, loop_sizes) -> int:
    sizes = [_size(v.shape) for v in lk.args] + list(loop_sizes)
    return 64 if max(sizes, default=0) >= 2 ** 31 else 32

def _block_size(n: int) -> int:
    """Threads for a block that strides over n elements: a multiple of 32, at most 256."""
    return max(32, min(256, 32 * -(-n // 32)))


class ReduceScheduler:
    """The reduction schedules; Scheduler (codegen.schedule) adds the other kernel kinds."""

    target = "cpu"
    small = False

    @property
    def gpu(self) -> bool:
        return self.target == "gpu"

    def _vec(self) -> int:
        return 0 if self.small else VECTOR_WIDTH

    def _kernel(self, name, inputs, outputs, body, accs, grid=0, block=0, extent=1,
                loop_sizes=(), aligned=()) -> L.LoopKernel:
        lk = L.LoopKernel(name, self.target, list(inputs), list(outputs), body, grid, block,
                          extent, 64, list(aligned), {a.name: a for a in accs})
        if self.gpu:
            lk.index_bits = _index_bits(lk, loop_sizes)
        return lk

    # -- reductions ------------------------------------------------------------------------
    def reduce_at(self, k: Kernel, names: _Names, oidx: list[L.Ix], accs: list,
                  by_block: bool, span=None, partial=None) -> list:
        """Reduce k's input over its reduced axes at kept index oidx, then store: serially, or
        with the block's threads taking turns (by_block). `span` (lo, hi): only that range of
        the flattened reduced elements; `partial` (buffer, flat index): store the accumulator
        there, unconverted."""
        ins = k.instr
        op, axes = ins.prim.name, ins.params["axes"]
        x, out = ins.inputs[0], ins.out
        kept = [d for d in range(len(x.shape)) if d not in axes]
        adt = acc_dtype(op, out.dtype)
        acc = L.Acc(names("acc"), adt, op, reassoc=op == "sum" and adt.is_float and
                    not by_block and not self.gpu)
        accs.append(acc)

        def full(ridx):
            f: list = [None] * len(x.shape)
            for d, i in zip(kept, oidx):
                f[d] = i
            for d, i in zip(axes, ridx):
                f[d] = i
            return f

        def update(ridx):
            return [L.Update(acc.name, _cast(L.Eval(x, full(ridx)), x.dtype, adt))]
        red = [x.shape[d] for d in axes]
        if self.gpu:
            r = names("r")
            un, ridx = _unflatten(names, L.Var(r), red)
            lo, hi = span or (L.Lit(0), L.Lit(_size(red)))
            loop = L.Loop(r, L.add(hi, L.mul(lo, -1)), [un, *update(ridx)], lo=lo,
                          par="block" if by_block else "serial")
            if isinstance(lo, L.Lit) and isinstance(hi, L.Lit):
                loop.extent = L.Lit(hi.value - lo.value)
            body = [acc, loop]
        elif op in ("max", "min") and adt.is_float and self._vec() and \
                axes[-1] == len(x.shape) - 1 and red[-1] >= self._vec():
            body = self._lane_reduce(names, acc, accs, red, lambda ridx: update(ridx)[0].value)
        else:
            # a hinted loop the vectorizer cannot take prints a remark: only sums (and the
            # max/min above) ask for a width
            body = [acc, *_nest(names, red, update, vector=self._vec() if op == "sum" else 0,
                                prefix="r")]
        if partial is not None:
            store = L.Store(partial[0], partial[1], L.AccGet(acc.name))
        else:
            store = L.Store(out, L.linear(oidx, out.shape),
                            _cast(L.AccGet(acc.name), adt, out.dtype))
        if by_block:
            return body + [L.BlockReduce(acc.name), L.Leader([store])]
        return body + [store]

    def _lane_reduce(self, names: _Names, acc: L.Acc, accs: list, red, value) -> list:
        """A float max/min along a contiguous last axis, into one accumulator per vector lane,
        then across the lanes into `acc`. LLVM does not always recognise a NaN-propagating
        max as a reduction: a masked softmax row's max(acc, where(m, x, -inf)) became a
        select of the accumulator and ran as scalar code with a dependency chain (0.85 ms of
        a [8,4,64,64] row kernel). Lanes are elementwise maxima, which it vectorizes. max
        and min are associative and commutative (NaN wins, -0 < +0), so the result is the
        same bits in any order."""
        w, n = self._vec(), red[-1]
        lanes = L.Acc(names("lanes"), acc.dtype, acc.op, size=w)
        accs.append(lanes)

        def lane_loop(count: int, update, vector: bool = True) -> L.Loop:
            lane = names("l")
            return L.Loop(lane, L.Lit(count), [update(L.Var(lane))],
                          vector=w if vector else 0, unroll=not vector)

        def along(outer):
            g = names("g")
            step = lane_loop(w, lambda i: L.Update(lanes.name, value(
                outer + [L.add(L.mul(L.Var(g), w), i)]), at=i))
            body = [L.Loop(g, L.Lit(n // w), [step])]
            if n % w:
                body.append(lane_loop(n % w, lambda i: L.Update(lanes.name, value(
                    outer + [L.add(L.Lit(n - n % w), i)]), at=i), vector=False))
            return body
        outer = _nest(names, red[:-1], along, prefix="r") if len(red) > 1 else along([])
        # across the lanes as a balanced tree: a chain of 16 maxima was most of a 64-wide row
        tree = L.Tree(acc.op, [L.AccGet(lanes.name, L.Lit(i)) for i in range(w)])
        return [lanes, lane_loop(w, lambda i: L.Reset(lanes.name, at=i)), *outer, acc,
                L.Update(acc.name, tree)]

    def reduce(self, k: Kernel, name: str) -> L.Scheduled:
        """A reduction over trailing (or interleaved) axes (leading ones: schedule_leading)."""
        names = _Names()
        axes = k.instr.params["axes"]
        kept = [k.shape[d] for d in range(len(k.shape)) if d not in axes]
        accs: list = []
        if not self.gpu:
            def body_fn(oidx):
                return self.reduce_at(k, names, oidx, accs, False)
            body = _nest(names, kept, body_fn, "threads", prefix="o") if kept else body_fn([])
            return L.Scheduled(k, [self._kernel(name, k.inputs, k.outputs, body, accs,
                                                extent=parallel_extent(k))])
        n_out, n_red = _size(kept), _size([k.shape[d] for d in axes])
        if 0 < n_out < SPLIT_OUTPUTS and n_red >= SPLIT_MIN:
            return self.split_reduce(k, name, n_out, n_red)
        block = _block_size(n_red)
        o = names("o")
        un, oidx = _unflatten(names, L.Var(o), kept)
        body = [L.Loop(o, L.Lit(n_out), [un, *self.reduce_at(k, names, oidx, accs, True)],
                       par="blocks")]
        return L.Scheduled(k, [self._kernel(name, k.inputs, k.outputs, body, accs,
                                            min(n_out, MAX_GRID), block,
                                            loop_sizes=[_size(k.shape)])],
                           note="a block per output")

    def split_reduce(self, k: Kernel, name: str, n_out: int, n_red: int) -> L.Scheduled:
        """Few, long outputs (a loss sum): blocks reduce chunks of each output's elements into
        partials; a finishing kernel reduces each output's partials, a block per output."""
        ins = k.instr
        op, out = ins.prim.name, ins.out
        adt = acc_dtype(op, out.dtype)
        parts = min(1024, -(-n_red // SPLIT_CHUNK))
        chunk = -(-n_red // parts)
        part = Value(Aval((n_out * parts,), adt), None, name=f"{name}_partials")
        kept = [n for d, n in enumerate(k.shape) if d not in ins.params["axes"]]
        names, accs = _Names(), []
        b = names("b")
        o = L.Div(L.Var(b), parts) if parts > 1 else L.Var(b)
        ov = names("o")
        lo = L.mul(L.add(L.Var(b), L.mul(L.Var(ov), -parts)), chunk)
        lov, hiv = names("lo"), names("hi")
        un, oidx = _unflatten(names, L.Var(ov), kept)
        body = [L.Loop(b, L.Lit(n_out * parts), [
            L.Let(ov, o), L.Let(lov, lo), L.Let(hiv, L.Min(L.add(L.Var(lov), L.Lit(chunk)),
                                                           L.Lit(n_red))), un,
            *self.reduce_at(k, names, oidx, accs, True, (L.Var(lov), L.Var(hiv)),
                            (part, L.Var(b)))], par="blocks")]
        first = self._kernel(name, k.inputs, [part], body, accs, min(n_out * parts, MAX_GRID),
                             256, loop_sizes=[_size(k.shape)])
        names2 = _Names()
        acc = L.Acc("acc", adt, op)
        o2, j = names2("o"), names2("j")
        body2 = [L.Loop(o2, L.Lit(n_out), [
            acc, L.Loop(j, L.Lit(parts), [L.Update("acc", L.LoadFlat(
                part, L.add(L.mul(L.Var(o2), parts), L.Var(j))))], par="block"),
            L.BlockReduce("acc"),
            L.Leader([L.Store(out, L.Var(o2), _cast(L.AccGet("acc"), adt, out.dtype))])],
            par="blocks")]
        finish = self._kernel(name + "_finish", [part], [out], body2, [acc], min(n_out, MAX_GRID),
                              _block_size(parts), loop_sizes=[n_out * parts])
        return L.Scheduled(k, [first, finish], [part],
                           note=f"two-stage: {parts} partial blocks per output, then a finishing "
                                f"kernel")
