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
balanced tree of one combine).

Index expressions (`Var`, `Lit`, `Add`, `Mul`, `Div`, `Min`, `Gathered`) are written by one walk,
`render_index`, through a backend's `IndexTable`; the text dump of a whole plan is in
codegen.loop_text."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Protocol, Union

from ..ir import dtypes as dt
from ..ir.core import Value


# -- index expressions -------------------------------------------------------------------------
class _IxText:
    """Index expressions print as the loop-IR dump writes them (codegen.loop_text)."""

    def __str__(self) -> str:
        return index_text(self, lambda v: "%" + (v.name or "?"))     # type: ignore[arg-type]


@dataclass(frozen=True)
class Var(_IxText):
    name: str


@dataclass(frozen=True)
class Lit(_IxText):
    value: int


@dataclass(frozen=True)
class Add(_IxText):
    a: "Ix"
    b: "Ix"


@dataclass(frozen=True)
class Mul(_IxText):
    a: "Ix"
    k: int


@dataclass(frozen=True)
class Div(_IxText):
    a: "Ix"
    k: int


@dataclass(frozen=True)
class Min(_IxText):
    a: "Ix"
    b: "Ix"


@dataclass(frozen=True)
class Gathered(_IxText):
    """An index read from memory (a gather's or scatter's index operand): negative counts from
    the end, and it is clamped into [0, n) so that no index reaches outside the buffer."""
    value: "Expr"
    n: int


Ix = Union[Var, Lit, Add, Mul, Div, Min, Gathered]
# On the CPU, the share of the parallel loop [0, extent) that one thread runs
BEGIN, END = Var("begin"), Var("end")


class IndexTable(Protocol):
    """How one backend writes each kind of index expression, given the node and its operands
    already written. `render_index` walks the tree; a new backend supplies only this table."""

    def var(self, x: Var) -> str: ...

    def lit(self, x: Lit) -> str: ...

    def add(self, x: Add, a: str, b: str) -> str: ...

    def mul(self, x: Mul, a: str) -> str: ...

    def div(self, x: Div, a: str) -> str: ...

    def min(self, x: Min, a: str, b: str) -> str: ...

    def gathered(self, x: Gathered) -> str: ...


def _operands(x: Ix) -> tuple:
    if isinstance(x, (Add, Min)):
        return (x.a, x.b)
    if isinstance(x, (Mul, Div)):
        return (x.a,)
    return ()


def render_index(x: Ix, t: IndexTable) -> str:
    """Index expression x written by table t, operands before the node that uses them (an
    explicit stack, so the order of emitted instructions is the order of a post-order walk)."""
    done: dict[int, str] = {}
    stack: list = [x]
    while stack:
        node = stack[-1]
        if id(node) in done:
            stack.pop()
            continue
        pending = [o for o in _operands(node) if id(o) not in done]
        if pending:
            stack += reversed(pending)      # the left operand is written first
            continue
        stack.pop()
        ops = [done[id(o)] for o in _operands(node)]
        if isinstance(node, Var):
            done[id(node)] = t.var(node)
        elif isinstance(node, Lit):
            done[id(node)] = t.lit(node)
        elif isinstance(node, Add):
            done[id(node)] = t.add(node, *ops)
        elif isinstance(node, Mul):
            done[id(node)] = t.mul(node, *ops)
        elif isinstance(node, Div):
            done[id(node)] = t.div(node, *ops)
        elif isinstance(node, Min):
            done[id(node)] = t.min(node, *ops)
        elif isinstance(node, Gathered):
            done[id(node)] = t.gathered(node)
        else:
            raise TypeError(f"unknown loop IR index expression {node!r}")
    return done[id(x)]


class _TextTable:
    """The loop-IR dump's spelling of index expressions; gathered indices name their values
    through `name`."""

    def __init__(self, name: Callable[[Value], str]) -> None:
        self.name = name

    def var(self, x: Var) -> str:
        return x.name

    def lit(self, x: Lit) -> str:
        return str(x.value)

    def add(self, x: Add, a: str, b: str) -> str:
        return f"{a} + {b}"

    def mul(self, x: Mul, a: str) -> str:
        return f"({a})*{x.k}" if isinstance(x.a, Add) else f"{a}*{x.k}"

    def div(self, x: Div, a: str) -> str:
        return f"({a})/{x.k}" if isinstance(x.a, Add) else f"{a}/{x.k}"

    def min(self, x: Min, a: str, b: str) -> str:
        return f"min({a}, {b})"

    def gathered(self, x: Gathered) -> str:
        return f"wrap({expr_text(x.value, self.name)}, {x.n})"


def index_text(x: Ix, name: Callable[[Value], str]) -> str:
    """An index expression as text; gathered indices name their values through `name`."""
    return render_index(x, _TextTable(name))


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


def expr_text(e: Expr, name: Callable[[Value], str]) -> str:
    """A scalar expression as the loop-IR dump writes it."""
    if isinstance(e, Eval):
        return f"{name(e.value)}[{', '.join(index_text(i, name) for i in e.at)}]"
    if isinstance(e, AccGet):
        return e.acc + ("" if e.at is None else f"[{index_text(e.at, name)}]")
    if isinstance(e, LoadFlat):
        return f"{name(e.buf)}.flat[{index_text(e.at, name)}]"
    if isinstance(e, Const):
        return f"{e.value!r}:{e.dtype.name}"
    if isinstance(e, Cast):
        return f"{e.dtype.name}({expr_text(e.x, name)})"
    return f"{e.op}(" + ", ".join(expr_text(x, name) for x in e.items) + ")"


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
    if not d.signed:                    # uint8
        return 0 if op == "max" else 2 ** d.bits - 1
    bound = 2 ** (d.bits - 1)
    return -bound if op == "max" else bound - 1


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


class StatementRenderer:
    """What the LLVM and CUDA renderers share: each statement goes to its `st_<Type>` method,
    and index expressions are written through `index_table` with `env` naming the variables in
    scope (a subclass sets index_table, env and its emitter `e`)."""

    index_table: IndexTable
    env: dict[str, str]

    def ix(self, x: Ix) -> str:
        return render_index(x, self.index_table)

    def body(self, stmts: list) -> None:
        for st in stmts:
            getattr(self, "st_" + type(st).__name__)(st)

    def st_Let(self, st: Let) -> None:
        self.env[st.var] = self.ix(st.expr)

    def st_Unflatten(self, st: Unflatten) -> None:
        for var, i in zip(st.vars, render_unflatten(self.e, self.ix(st.flat), st.shape)):
            self.env[var] = i
