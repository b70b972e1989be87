"""Fusion: partition a Graph into kernels (the kernel IR both backends lower).

The model: every value is a function of its index vector. Elementwise ops and view ops
(broadcast, transpose, slice, reshape, pad, concatenate, gather, ...: whatever declares an
index map in the registry, see ir/index_maps.py) compose such functions, so
chains of them fuse into the loop of whichever kernel consumes them, and each input is read
once per output element. A value becomes a *buffer* (written to memory) only when it must:
graph inputs and outputs, results of reductions, matmuls and scatter-adds, matmul operands
that are not views of buffers, and very large expressions shared between kernels.

Kernels: `loop` (elementwise, possibly several outputs of one shape sharing all their
intermediate values), `reduce` (a reduction that evaluates its producer expression inline),
`scatter` (scatter-add, sequential), `scan` (cumsum/cumprod: a sequential loop along the
axis per row, evaluating its producer inline), `matmul` (an extern BLAS call), `extern` (a
primitive of kind "extern", such as argsort, that the runtime runs through its NumPy/CuPy
implementation on materialized operands). Loop kernels of the same
shape at the same dependency level merge into one, which can never create a cycle.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import networkx as nx

from ..ir.core import Graph, Instr, Value
from ..ir.prims_gamma import NAMES as GAMMA
from ..ir.prims_libm import NAMES as LIBM
from ..ir.printer import value_names
from .fusion_cost import MIN_ELEMENTS, materialize_by_cost

SHARED_EXPR_LIMIT = 64     # a shared expression bigger than this is materialized once
# scalar ops worth computing once when a loop reads their result: transcendental ones (cheap
# arithmetic stays in the loop, where LLVM hoists it and reading a buffer would cost more)
TRANSCENDENTAL = frozenset({"pow", "exp", "log", "sin", "cos", "tanh", "erf", "erfc", *LIBM,
                            *GAMMA})


@dataclass
class Kernel:
    kind: str        # "loop" | "reduce" | "scatter" | "matmul" | "rows" | "scan" | "extern"
    outputs: list[Value]
    shape: tuple[int, ...]          # the loop shape (reduce: its input's shape)
    inputs: list[Value] = field(default_factory=list)
    ops: list[Instr] = field(default_factory=list)
    name: str = ""
    stages: list["Kernel"] = field(default_factory=list)   # rows: the kernels run per row
    outer: int = 0                  # rows: how many leading axes index a row

    @property
    def instr(self) -> Instr | None:
        """The single instruction of a reduce/scatter/matmul kernel."""
        return self.outputs[0].producer if self.kind != "loop" else None


@dataclass
class Plan:
    graph: Graph
    kernels: list[Kernel]
    constants: list[Value]          # array constants passed as buffers

    def describe(self) -> str:
        names = value_names(self.graph)
        n = lambda v: "%" + names.get(v, "?")            # noqa: E731
        lines = []
        for k in self.kernels:
            shape = "x".join(map(str, k.shape)) or "scalar"
            opnames = [i.prim.name for i in k.ops]
            ops = ",".join(dict.fromkeys(opnames) if k.kind == "rows" else opnames)
            how = {"matmul": "extern BLAS", "extern": "extern NumPy/CuPy"}.get(k.kind, "generated")
            extra = ""
            if k.kind == "reduce":
                extra = f" {k.instr.prim.name} axes={list(k.instr.params['axes'])}"
            if k.kind == "scan":
                p = k.instr.params
                extra = f" {k.instr.prim.name} axis={p['axis']}" + " reverse" * p["reverse"]
            if k.kind == "rows":
                extra = " stages(" + ", ".join(
                    f"{st.instr.prim.name}" if st.kind == "reduce" else "loop"
                    for st in k.stages) + f") over {k.outer} outer axes"
            lines.append(f"{k.name}: {k.kind}{extra} [{shape}] ops({ops}) "
                         f"in({', '.join(map(n, k.inputs))}) out({', '.join(map(n, k.outputs))}) "
                         f"{how}")
        return "\n".join(lines)


def _is_fusible(ins: Instr) -> bool:
    # view and index ops declare an index map in the registry: a kernel evaluates them inline
    return ins.prim.kind in ("elementwise", "constant", "random") or \
        ins.prim.index_map is not None


def _expr_ops(v: Value, buffers: set[Value], seen: set[Value], out: list[Instr],
              root: bool = False) -> None:
    """The instructions an expression for v evaluates (stops at buffers other than the root
    itself), producers first."""
    stack = [(v, False)]
    while stack:
        x, done = stack.pop()
        if done:
            out.append(x.producer)
            continue
        if x in seen or x.producer is None or (x in buffers and not (root and x is v)):
            continue
        seen.add(x)
        stack.append((x, True))
        for i in x.producer.inputs:
            stack.append((i, False))


def _expr_exceeds(v: Value, buffers: set[Value], limit: int) -> bool:
    """Whether the expression for v (as _expr_ops(v, buffers, set(), ops, root=True) lists it)
    has more than `limit` instructions. The walk stops there: every value of a deep model's
    residual stream is shared, and walking each one's whole expression was quadratic."""
    seen: set[Value] = set()
    stack = [v]
    while stack:
        x = stack.pop()
        if x in seen or x.producer is None or (x in buffers and x is not v):
            continue
        seen.add(x)             # each value seen is one instruction of the expression
        if len(seen) > limit:
            return True
        stack += x.producer.inputs
    return False


def _kernel_inputs(k: Kernel, buffers: set[Value]) -> list[Value]:
    ins = []
    for op in k.ops:
        for v in op.inputs:
            if v in buffers and v not in ins:
                ins.append(v)
    return ins


def plan(g: Graph) -> Plan:
    uses: dict[Value, list[Instr]] = {}
    for ins in g.instrs:
        for v in ins.inputs:
            uses.setdefault(v, []).append(ins)

    # hard buffers stop fusion: kernels read them from memory
    hard: set[Value] = set(g.inputs)
    constants: list[Value] = []
    for ins in g.instrs:
        name, out = ins.prim.name, ins.out
        if name == "constant" and out.aval.size > 1:
            hard.add(out)
            constants.append(out)
        elif not _is_fusible(ins):
            hard.add(out)
            if name == "matmul":
                for v in ins.inputs:
                    if not _is_buffer_view(v, hard):
                        hard.add(_view_base(v))
            elif ins.prim.kind == "extern":     # NumPy/CuPy read its operands from memory
                hard.update(ins.inputs)
    # expressions shared by several kernels are recomputed, unless they are big. An expression
    # is counted up to the large shared values the cost model below decides on its own: counted
    # through them, a transformer's residual stream (each layer's input, the sum of all earlier
    # layers' outputs) crossed the limit every few layers, at places that shift with depth, so
    # layers doing the same work fused differently (an 8-layer nanoGPT compiled 45 distinct
    # kernels, a 4-layer one 37)
    by_cost = {ins.out for ins in g.instrs
               if ins.out not in hard and _is_fusible(ins) and ins.prim.kind != "constant"
               and ins.out.aval.size >= MIN_ELEMENTS and len(uses.get(ins.out, ())) >= 2}
    stops = hard | by_cost
    for ins in g.instrs:
        v = ins.out
        if v in hard or len(uses.get(v, ())) < 2:
            continue
        if _expr_exceeds(v, stops, SHARED_EXPR_LIMIT):
            hard.add(v)
            stops.add(v)
    # large values read by several kernels: materialized where that moves fewer bytes
    materialize_by_cost(g, hard, uses, _is_fusible, TRANSCENDENTAL)
    # a 0-d expression with transcendental work that a larger loop reads is computed once, in
    # a scalar kernel, not per element (pow(beta, step) of an optimizer step inside a compiled
    # training step made that loop several times slower)
    for ins in g.instrs:
        v = ins.inputs[0] if ins.prim.name == "broadcast" else None
        if v is not None and v.ndim == 0 and v not in hard and ins.out.aval.size > 1:
            ops: list[Instr] = []
            _expr_ops(v, hard, set(), ops)
            if any(op.prim.name in TRANSCENDENTAL for op in ops):
                hard.add(v)
    # graph outputs computed by loops are written, but consumers still fuse through them
    buffers = hard | set(g.outputs)

    # one kernel per buffer written by code
    kernels: list[Kernel] = []
    producer_kernel: dict[Value, Kernel] = {}
    for ins in g.instrs:
        v = ins.out
        if v not in buffers or v in constants:
            continue
        kind = {"reduce": "reduce", "matmul": "matmul", "scan": "scan",
                "extern": "extern"}.get(ins.prim.kind, "loop")
        if ins.prim.name == "scatter_add":
            kind = "scatter"
        shape = ins.inputs[0].shape if kind == "reduce" else v.shape
        k = Kernel(kind, [v], shape)
        if kind == "loop":
            _expr_ops(v, hard, set(), k.ops, root=True)
        else:
            seen: set[Value] = set()
            for i in ins.inputs:
                _expr_ops(i, hard, seen, k.ops)
            k.ops.append(ins)
        kernels.append(k)
        producer_kernel[v] = k

    for k in kernels:
        k.inputs = _kernel_inputs(k, hard)

    # dependency levels; merge loop kernels of one shape and level
    level: dict[int, int] = {}
    for k in kernels:         # creation order is topological (graph order)
        deps = [level[id(producer_kernel[v])] for v in k.inputs if v in producer_kernel]
        # a scalar loop of inputs alone comes first, so that the loops reading it still merge
        # with their siblings
        level[id(k)] = 1 + max(deps) if deps else int(k.kind != "loop" or k.shape != ())
    merged: list[Kernel] = []
    groups: dict[tuple, Kernel] = {}
    for k in kernels:
        if k.kind != "loop":
            merged.append(k)
            continue
        key = (level[id(k)], k.shape)
        if key in groups:
            m = groups[key]
            m.outputs += k.outputs
            m.ops += [op for op in k.ops if op not in m.ops]
            m.inputs += [v for v in k.inputs if v not in m.inputs]
            for v in k.outputs:
                producer_kernel[v] = m
        else:
            groups[key] = k
            merged.append(k)

    dag = nx.DiGraph()
    for k in merged:
        dag.add_node(id(k))
        for v in k.inputs:
            if v in producer_kernel and producer_kernel[v] is not k:
                dag.add_edge(id(producer_kernel[v]), id(k))
    if not nx.is_directed_acyclic_graph(dag):     # fusion must never create a cycle
        raise AssertionError("fusion created a cycle between kernels")
    by_id = {id(k): k for k in merged}
    # ties broken by creation order (a dict, not merged.index: that made this sort quadratic,
    # 80 ms of an 8-layer nanoGPT's first call)
    position = {id(k): n for n, k in enumerate(merged)}
    order = [by_id[i] for i in nx.lexicographical_topological_sort(dag, key=position.__getitem__)]
    order = _row_groups(order)
    for n, k in enumerate(order):
        k.name = f"k{n}"
    return Plan(g, order, constants)


# -- row-wise fusion ------------------------------------------------------------------------------
def _row_shape(k: Kernel) -> tuple[int, ...] | None:
    """The row axes of a reduction over trailing axes (softmax, layer_norm, logsumexp)."""
    if k.kind != "reduce":
        return None
    axes, n = k.instr.params["axes"], len(k.shape)
    j = n - len(axes)
    return k.shape[:j] if j >= 1 and tuple(axes) == tuple(range(j, n)) else None


def _keeps_rows(op: Instr, dep: set[Value], rows: tuple[int, ...]) -> bool:
    """Whether op reads its operands in `dep` at the same row it writes."""
    j = len(rows)
    if tuple(op.out.shape[:j]) != rows:
        return False
    if any(tuple(i.shape[:j]) != rows for i in op.inputs if i in dep):
        return False
    # the rest is the op's own row rule, declared beside it in the registry
    return op.prim.keeps_rows(j, [tuple(i.shape) for i in op.inputs], tuple(op.out.shape),
                              [i in dep for i in op.inputs], op.params)


def _row_local(k: Kernel, group_bufs: set[Value], rows: tuple[int, ...]) -> bool:
    """Whether kernel k reads what the group wrote only at the row it is working on."""
    dep = set(group_bufs)
    for op in k.ops:                       # producers first
        if any(i in dep for i in op.inputs):
            if not _keeps_rows(op, dep, rows):
                return False
            dep.add(op.out)
    return True


def _row_groups(order: list[Kernel]) -> list[Kernel]:
    """Merge consecutive kernels that walk the same rows into one "rows" kernel: per row, the
    reductions and elementwise stages run one after another while the row is in cache."""
    out: list[Kernel] = []
    group: list[Kernel] = []
    rows: tuple[int, ...] = ()

    def close():
        if len(group) > 1:
            ins, outs, ops = [], [], []
            for k in group:
                ins += [v for v in k.inputs if v not in ins]
                outs += k.outputs
                ops += k.ops
            out.append(Kernel("rows", outs, rows + group[0].shape[len(rows):], ins, ops,
                              stages=list(group), outer=len(rows)))
        else:
            out.extend(group)
        group.clear()

    for k in order:
        if group:
            fits = k.kind in ("loop", "reduce") and tuple(k.shape[:len(rows)]) == rows and \
                (k.kind == "loop" or _row_shape(k) == rows)
            if fits and _row_local(k, {v for g in group for v in g.outputs}, rows):
                group.append(k)
                continue
            close()
        r = _row_shape(k)
        if r is not None:
            group.append(k)
            rows = r
        else:
            out.append(k)
    close()
    return out


def _buffer_view(v: Value, buffers) -> tuple[Value, list[tuple[str, dict]]] | None:
    """v as (the buffer it views, [(op name, params), ...] applied in order), or None when v is
    not a view BLAS/cuBLAS take without a copy: a buffer, or transposes of the last two axes and
    batch broadcasts of one or of a reshape of one (buffers are contiguous, so their reshapes
    are views). The one place that decides it: fusion materializes a matmul operand that is not
    such a view, and both backends read their operands through `operand_view`."""
    ops = []
    while v not in buffers:
        p = v.producer
        if p is not None and p.prim.name == "reshape":
            if p.inputs[0] not in buffers:
                return None
        elif p is None or p.prim.name not in ("transpose", "broadcast"):
            return None
        elif p.prim.name == "transpose":
            perm = p.params["perm"]
            if list(perm[:-2]) != list(range(len(perm) - 2)):
                return None
        ops.append((p.prim.name, p.params))
        v = p.inputs[0]
    return v, ops[::-1]


def _is_buffer_view(v: Value, buffers: set[Value]) -> bool:
    return _buffer_view(v, buffers) is not None


def _view_base(v: Value) -> Value:
    """The value under a matmul operand's free views (transposes of the last two axes and
    broadcasts, then one reshape): materializing it, not v, leaves the views to BLAS, so no
    kernel writes a transposed copy of a GEMM operand."""
    while v.producer is not None and v.producer.prim.name in ("transpose", "broadcast"):
        p = v.producer
        if p.prim.name == "transpose":
            perm = p.params["perm"]
            if list(perm[:-2]) != list(range(len(perm) - 2)):
                break
        v = p.inputs[0]
    if v.producer is not None and v.producer.prim.name == "reshape":
        v = v.producer.inputs[0]
    return v


def operand_view(v: Value, buffers) -> tuple[Value, list[tuple[str, dict]]]:
    """A matmul operand of a planned graph as (the buffer it views, its views in order)."""
    view = _buffer_view(v, buffers)
    if view is None:            # plan() materializes every operand that is not a view
        raise AssertionError(f"matmul operand {v} is not a view of a buffer")
    return view
