"""The loop-level kernel IR: what a generated kernel does, loop by loop, before any backend
dialect. The schedule (codegen.schedule) builds it from each kernel of the fusion plan; the
renderers (llvm_lower, cuda_lower) translate it statement by statement and decide nothing.

A `LoopKernel` is one function: its buffer arguments, its body, and how its parallel loop maps
to the machine (CUDA grid and block sizes; on the CPU the loop marked `threads` is the range the
runtime splits across threads). Statements:

- `Loop`: a counted loop over [lo, lo + extent). `par` says how its iterations are spread:
  `serial`; `threads` (CPU: the [begin, end) range of one thread); `grid` (CUDA: every thread of
  the grid takes turns); `blocks` (CUDA: one block per iteration); `block` (the threads of a
  block take turns). `vector` asks the CPU vectorizer for that many lanes; `unroll=False`
  asks LLVM not to unroll it (a short loop LLVM would unroll fully before vectorizing).
- `Lanes`: each iteration of the enclosing loop handles `lanes` consecutive elements; the
  listed inputs and outputs move as 16-byte words (CUDA) or element by element (CPU).
- `Let` / `Unflatten`: index arithmetic (names bound to index expressions).
- `Acc`, `Reset`, `Update`: accumulators with an explicit dtype and combine (sum, max, min,
  prod); `reassoc` allows the vectorizer to reorder a float sum. `BlockReduce` combines the
  accumulators of a block's threads; `Leader` runs its body on one thread of the block.
- `Store`, `ScatterAdd`: writes (a scatter-add is atomic on the GPU, in index order on the CPU).
- `Compute`: inside its body the listed values are recomputed from their producers instead of
  loaded (a row stage computes what later stages of the row read back).
- `Barrier`: the block's threads wait for each other.

Scalar expressions: `Eval` (a value of the graph at an index vector: buffers are loaded, every
other producer is recomputed inline, see codegen.expr), `AccGet`, `LoadFlat`, `Cast`, `Tree` (a
balanced tree of one combine)."""
from __future__ import annotations

import textwrap
from dataclasses import dataclass, field
from typing import Callable, Union

from ..ir import dtypes as dt
from ..ir.core import Value


# -- index expressions -------------------------------------------------------------------------
@dataclass(frozen=True)
class Var:
    name: str

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True)
class Lit:
    value: int

    def __str__(self) -> str:
        return str(self.value)


@dataclass(frozen=True)
class Add:
    a: "Ix"
    b: "Ix"

    def __str__(self) -> str:
        return f"{self.a} + {self.b}"


@dataclass(frozen=True)
class Mul:
    a: "Ix"
    k: int

    def __str__(self) -> str:
        return f"{_atom(self.a)}*{self.k}"


@dataclass(frozen=True)
class Div:
    a: "Ix"
    k: int

    def __str__(self) -> str:
        return f"{_atom(self.a)}/{self.k}"


@dataclass(frozen=True)
class Min:
    a: "Ix"
    b: "Ix"

    def __str__(self) -> str:
        return f"min({self.a}, {self.b})"


@dataclass(frozen=True)
class Gathered:
    """An index read from memory (a gather's or scatter's index operand): negative counts from
    the end, and it is clamped into [0, n) so that no index reaches outside the buffer."""
    value: "Expr"
    n: int

    def __str__(self) -> str:
        return _ix(self, lambda v: "%" + (v.name or "?"))


Ix = Union[Var, Lit, Add, Mul, Div, Min, Gathered]
# On the CPU, the share of the parallel loop [0, extent) that one thread runs
BEGIN, END = Var("begin"), Var("end")


def _atom(x: Ix) -> str:
    return f"({x})" if isinstance(x, Add) else str(x)


def add(a: Ix, b: Ix) -> Ix:
    """a + b, folding literal zeros and literal sums."""
    if isinstance(a, Lit) and isinstance(b, Lit):
        return Lit(a.value + b.value)
    if isinstance(a, Lit) and a.value == 0:
        return b
    if isinstance(b, Lit) and b.value == 0:
        return a
    return Add(a, b)


def mul(a: Ix, k: int) -> Ix:
    if k == 0 or (isinstance(a, Lit) and a.value == 0):
        return Lit(0)
    if k == 1:
        return a
    return Lit(a.value * k) if isinstance(a, Lit) else Mul(a, k)


def linear(idx: list[Ix], shape) -> Ix:
    """The C-order flat offset of index vector idx in shape."""
    off: Ix = Lit(0)
    stride = 1
    for i, n in reversed(list(zip(idx, shape))):
        off = add(mul(i, stride), off)
        stride *= n
    return off


# -- scalar expressions ------------------------------------------------------------------------
@dataclass
class Eval:
    value: Value
    at: list[Ix]


@dataclass
class AccGet:
    acc: str
    at: Ix | None = None


@dataclass
class LoadFlat:
    buf: Value
    at: Ix


@dataclass
class Const:
    value: object
    dtype: dt.DType


@dataclass
class Cast:
    x: "Expr"
    dtype: dt.DType


@dataclass
class Tree:
    op: str
    items: list["Expr"]


Expr = Union[Eval, AccGet, LoadFlat, Const, Cast, Tree]


# -- statements --------------------------------------------------------------------------------
@dataclass
class Loop:
    var: str
    extent: Ix
    body: list
    lo: Ix = Lit(0)
    par: str = "serial"        # serial | threads | grid | blocks | block
    vector: int = 0
    unroll: bool = True


@dataclass
class Lanes:
    """Lane `var` of `lanes` in lane group `group` handles flat element `flat` (bound to
    `flat_var`) of `shape`, at index vector `vars`."""
    var: str
    lanes: int
    group: Ix
    inputs: list[Value]        # read at the element's own index, as words
    outputs: list[Value]       # written at the element's own index, as words
    flat_var: str
    flat: Ix
    shape: tuple[int, ...]
    vars: list[str]
    body: list


@dataclass
class Let:
    var: str
    expr: Ix


@dataclass
class Unflatten:
    flat: Ix
    shape: tuple[int, ...]
    vars: list[str]            # one per axis; an axis of size 1 binds "0"


@dataclass
class Acc:
    name: str
    dtype: dt.DType
    op: str                    # sum | max | min | prod
    size: int = 1              # >1: a tile of accumulators, set by Reset (1: starts at identity)
    reassoc: bool = False


@dataclass
class Reset:
    acc: str
    at: Ix | None = None


@dataclass
class Update:
    acc: str
    value: Expr
    at: Ix | None = None


@dataclass
class Store:
    buf: Value
    at: Ix
    value: Expr


@dataclass
class ScatterAdd:
    buf: Value
    at: Ix
    value: Expr


@dataclass
class BlockReduce:
    acc: str


@dataclass
class Leader:
    body: list


@dataclass
class Barrier:
    pass


@dataclass
class Compute:
    values: list[Value]
    body: list


@dataclass
class LoopKernel:
    """One generated function. `grid`/`block`: its CUDA launch; `extent`: on the CPU, the size
    of the loop marked `threads` (what the runtime splits), 1 when there is none."""
    name: str
    target: str                # cpu | gpu
    inputs: list[Value]
    outputs: list[Value]
    body: list
    grid: int = 0
    block: int = 0
    extent: int = 1
    index_bits: int = 64
    aligned: list[Value] = field(default_factory=list)     # read as 16-byte words
    accs: dict[str, Acc] = field(default_factory=dict)

    @property
    def args(self) -> list[Value]:
        return self.inputs + [v for v in self.outputs if v not in self.inputs]


@dataclass
class Scheduled:
    """The loop kernels that run one kernel of the fusion plan, in order, and the scratch
    buffers only they use (partial results of a split reduction)."""
    source: object             # the fusion Kernel
    kernels: list[LoopKernel]
    scratch: list[Value] = field(default_factory=list)
    note: str = ""             # the schedule's decision, in words


IDENTITY = {"sum": 0, "prod": 1}


def identity(op: str, d: dt.DType):
    """The identity of combine `op` in dtype d (max/min: -inf/+inf or the integer bounds)."""
    if op in IDENTITY:
        return IDENTITY[op]
    if d.is_float:
        return float("-inf") if op == "max" else float("inf")
    if d is dt.bool_:
        return op != "max"
    bound = 2 ** (d.bits - 1)
    return -bound if op == "max" else bound - 1


# -- printing ----------------------------------------------------------------------------------
def format_program(scheduled: list[Scheduled], name_of: Callable[[Value], str]) -> str:
    """Readable text of the loop IR of a whole plan."""
    out: list[str] = []
    for s in scheduled:
        k = s.source
        shape = "x".join(map(str, k.shape)) or "scalar"
        out.append(f"{k.name}: {k.kind} [{shape}]" + (f": {s.note}" if s.note else ""))
        for lk in s.kernels:
            out += ["  " + ln for ln in format_kernel(lk, name_of)]
    return "\n".join(out)


def format_kernel(lk: LoopKernel, name_of: Callable[[Value], str]) -> list[str]:
    n = lambda v: "%" + name_of(v)          # noqa: E731
    where = f"grid {lk.grid} x block {lk.block}" if lk.target == "gpu" else \
        f"threads split [0, {lk.extent})"
    lines = [f"kernel {lk.name} ({lk.target}, {where}, i{lk.index_bits} indices)"]
    ins = ", ".join(f"{n(v)} {v.dtype.name}[{','.join(map(str, v.shape))}]" for v in lk.inputs)
    outs = ", ".join(f"{n(v)} {v.dtype.name}[{','.join(map(str, v.shape))}]"
                     for v in lk.outputs)
    lines.append(f"  loads({ins}) stores({outs})")
    if lk.aligned:
        lines.append(f"  16-byte words: {', '.join(n(v) for v in lk.aligned)}")
    ops = inline_ops(lk)
    if ops:
        lines += textwrap.wrap(", ".join(ops), 96, initial_indent="  recomputed, not loaded: ",
                               subsequent_indent="    ")
    lines += _fmt_body(lk.body, 1, n)
    return lines


def _ix(x: Ix, n) -> str:
    """An index expression as text; gathered indices name their values through n."""
    if isinstance(x, Gathered):
        return f"wrap({_fmt_expr(x.value, n)}, {x.n})"
    if isinstance(x, Add):
        return f"{_ix(x.a, n)} + {_ix(x.b, n)}"
    if isinstance(x, (Mul, Div)):
        a = _ix(x.a, n)
        a = f"({a})" if isinstance(x.a, Add) else a
        return f"{a}{'*' if isinstance(x, Mul) else '/'}{x.k}"
    if isinstance(x, Min):
        return f"min({_ix(x.a, n)}, {_ix(x.b, n)})"
    return str(x)


def inline_ops(lk: LoopKernel) -> list[str]:
    """The operations a kernel evaluates inline (every producer between what it stores and the
    buffers it loads), by name, in first-seen order: what fusion chose to recompute rather than
    materialize."""
    values: list[Value] = []
    todo: list = list(lk.body)
    while todo:
        x = todo.pop()
        if isinstance(x, Eval):
            values.append(x.value)
            todo += x.at
        elif isinstance(x, (Cast, Gathered)):
            todo.append(x.x if isinstance(x, Cast) else x.value)
        elif isinstance(x, Tree):
            todo += x.items
        elif isinstance(x, (Add, Min)):
            todo += [x.a, x.b]
        elif isinstance(x, (Mul, Div)):
            todo.append(x.a)
        elif isinstance(x, (Loop, Lanes, Leader, Compute)):
            todo += x.body
        elif isinstance(x, (Store, ScatterAdd, Update)):
            todo.append(x.value)
            todo.append(getattr(x, "at", None))
    loaded = set(lk.inputs)
    found: list = []
    seen: set = set()
    while values:
        v = values.pop()
        if v in seen or v in loaded or v.producer is None:
            continue
        seen.add(v)
        found.append(v.producer)
        values += v.producer.inputs
    if not found:
        return []
    order = {id(ins): i for i, ins in enumerate(found[0].out.graph.instrs)}
    found.sort(key=lambda ins: order.get(id(ins), 0))     # graph order: producers first
    return list(dict.fromkeys(ins.prim.name for ins in found))


def _fmt_expr(e: Expr, n) -> str:
    if isinstance(e, Eval):
        return f"{n(e.value)}[{', '.join(_ix(i, n) for i in e.at)}]"
    if isinstance(e, AccGet):
        return e.acc + ("" if e.at is None else f"[{_ix(e.at, n)}]")
    if isinstance(e, LoadFlat):
        return f"{n(e.buf)}.flat[{_ix(e.at, n)}]"
    if isinstance(e, Const):
        return f"{e.value!r}:{e.dtype.name}"
    if isinstance(e, Cast):
        return f"{e.dtype.name}({_fmt_expr(e.x, n)})"
    return f"{e.op}(" + ", ".join(_fmt_expr(x, n) for x in e.items) + ")"


def _fmt_body(body: list, depth: int, n) -> list[str]:
    pad = "  " * depth
    out: list[str] = []
    for st in body:
        if isinstance(st, Loop):
            ex = st.extent       # [lo, hi) is kept as lo + (hi - lo): show hi
            hi = ex.a if isinstance(ex, Add) and ex.b == mul(st.lo, -1) else add(st.lo, ex)
            how = {"serial": "", "threads": " parallel(cpu threads)", "grid": " parallel(grid)",
                   "blocks": " parallel(a block each)", "block": " parallel(block threads)"}
            vec = (f" vector({st.vector})" if st.vector else "") + \
                ("" if st.unroll else " no-unroll")
            out.append(f"{pad}for {st.var} in [{_ix(st.lo, n)}, {_ix(hi, n)}){how[st.par]}{vec}:")
            out += _fmt_body(st.body, depth + 1, n)
        elif isinstance(st, Lanes):
            out.append(f"{pad}lanes {st.var} in [0, {st.lanes}) (words: "
                       f"{', '.join(n(v) for v in st.inputs + st.outputs)}):")
            out.append(f"{pad}  {st.flat_var} = {_ix(st.flat, n)}")
            out.append(f"{pad}  [{', '.join(st.vars)}] = unflatten({st.flat_var}, "
                       f"[{', '.join(map(str, st.shape))}])")
            out += _fmt_body(st.body, depth + 1, n)
        elif isinstance(st, Let):
            out.append(f"{pad}{st.var} = {_ix(st.expr, n)}")
        elif isinstance(st, Unflatten):
            out.append(f"{pad}[{', '.join(st.vars)}] = unflatten({_ix(st.flat, n)}, "
                       f"[{', '.join(map(str, st.shape))}])")
        elif isinstance(st, Acc):
            size = f"[{st.size}]" if st.size > 1 else ""
            start = "" if st.size > 1 else f" = {identity(st.op, st.dtype)}"
            out.append(f"{pad}acc {st.name}{size}: {st.dtype.name} {st.op}{start}"
                       + (" (reassociable)" if st.reassoc else ""))
        elif isinstance(st, Reset):
            at = "" if st.at is None else f"[{_ix(st.at, n)}]"
            out.append(f"{pad}{st.acc}{at} = identity")
        elif isinstance(st, Update):
            at = "" if st.at is None else f"[{_ix(st.at, n)}]"
            line = f"{pad}{st.acc}{at} <- {_fmt_expr(st.value, n)}"
            if len(line) > 96 and isinstance(st.value, Tree):     # a tree item per line
                items = [_fmt_expr(x, n) for x in st.value.items]
                line = f"{pad}{st.acc}{at} <- {st.value.op}(\n{pad}    " + \
                    f",\n{pad}    ".join(items) + ")"
            out.append(line)
        elif isinstance(st, Store):
            out.append(f"{pad}{n(st.buf)}.flat[{_ix(st.at, n)}] = {_fmt_expr(st.value, n)}")
        elif isinstance(st, ScatterAdd):
            out.append(f"{pad}{n(st.buf)}.flat[{_ix(st.at, n)}] += {_fmt_expr(st.value, n)}")
        elif isinstance(st, BlockReduce):
            out.append(f"{pad}{st.acc} = combine over the block's threads")
        elif isinstance(st, Leader):
            out.append(f"{pad}one thread of the block:")
            out += _fmt_body(st.body, depth + 1, n)
        elif isinstance(st, Barrier):
            out.append(f"{pad}barrier (block)")
        elif isinstance(st, Compute):
            out.append(f"{pad}computing {', '.join(n(v) for v in st.values)} (not loaded):")
            out += _fmt_body(st.body, depth + 1, n)
        else:
            raise TypeError(f"unknown loop IR statement {st!r}")
    return out


def render_unflatten(e, flat: str, shape) -> list[str]:
    """The index vector of flat position `flat` in a C-ordered `shape`, built with an
    emitter's integer operations (codegen.expr.ExprEmitter): what `Unflatten` means."""
    idx, rest, stride = [], flat, 1
    strides = []
    for n in reversed(shape):
        strides.append(stride)
        stride *= n
    strides.reverse()
    for d, (n, s) in enumerate(zip(shape, strides)):
        if n == 1:
            idx.append("0")
            continue
        q = rest if s == 1 else e.idiv(rest, s)
        idx.append(q)
        if s != 1 and d < len(shape) - 1:
            rest = e.iadd(rest, e.imul(q, -s))
    return idx
