"""A picture of a fusion plan: Graphviz DOT text (`.lower(...).dot()`, `TRACEJIT_DUMP=dot`).

Each kernel is a cluster of the ops it evaluates. An op that several kernels recompute is
drawn once in each of them, so every op node lies in exactly one cluster. Graph inputs and
array constants are boxes outside the clusters; graph outputs have a double border;
materialized buffers (written by one kernel, read by another) are filled yellow. Extern calls
(BLAS / cuBLAS GEMMs, NumPy / CuPy for sorts) are grey dashed clusters, apart from generated
code. Edges follow the data: inside a kernel from op to op, between kernels from the op that
writes a buffer to the ops that read it."""
from __future__ import annotations

from ..ir.core import Value
from ..ir.printer import value_names
from .fusion import Kernel, Plan

EXTERN = {"llvm": {"matmul": "extern BLAS", "extern": "extern NumPy"},
          "cuda": {"matmul": "extern cuBLAS", "extern": "extern CuPy"}}
INPUT_STYLE = 'shape=box, style=filled, fillcolor="#dbe9f6"'
CONST_STYLE = 'shape=box, style="dashed"'
BUFFER_STYLE = 'style=filled, fillcolor="#fff2b3"'
OUTPUT_STYLE = 'peripheries=2, style="filled,bold", fillcolor="#d9f2d9"'
# cluster attributes are statements (`;`), node attributes a list (`,`)
EXTERN_CLUSTER = 'style="filled,dashed"; fillcolor="#eeeeee"; color="#777777";'
GENERATED_CLUSTER = 'style=rounded; color="#4a6fa5";'


def _q(s: str) -> str:
    """A DOT double-quoted string."""
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _aval(v: Value) -> str:
    return f"{v.dtype.name}[{','.join(map(str, v.shape))}]"


def _kernel_label(k: Kernel, target: str) -> str:
    shape = "x".join(map(str, k.shape)) or "scalar"
    how = EXTERN.get(target, EXTERN["llvm"]).get(k.kind)
    what = k.kind
    if k.kind in ("reduce", "scan"):
        what += " " + k.instr.prim.name
    return f"{k.name}: {what} [{shape}]" + (f" ({how})" if how else "")


def plan_dot(plan: Plan, target: str = "llvm") -> str:
    """The plan as Graphviz DOT text; `target` ("llvm" or "cuda") names the extern libraries."""
    g = plan.graph
    names = value_names(g)
    name = lambda v: "%" + names.get(v, "?")          # noqa: E731
    outputs = set(g.outputs)
    writes: dict[Value, str] = {}     # a buffer -> the node of the op that writes it
    for k in plan.kernels:
        for v in k.outputs:
            writes[v] = f"{k.name}:{names.get(v, '?')}"
    lines = [f"digraph {_q(g.name)} {{", "  rankdir=TB;", "  compound=true;",
             '  node [fontname="Helvetica", fontsize=10, shape=ellipse];',
             '  edge [color="#555555"];']
    sources: dict[Value, str] = {}
    for v in g.inputs:
        node = f"in:{names.get(v, '?')}"
        sources[v] = node
        style = INPUT_STYLE + (", peripheries=2" if v in outputs else "")
        lines.append(f"  {_q(node)} [label={_q(f'{name(v)}  {_aval(v)}')}, {style}, "
                     f"tooltip=\"input\"];")
    for v in plan.constants:
        node = f"const:{names.get(v, '?')}"
        sources[v] = node
        lines.append(f"  {_q(node)} [label={_q(f'constant {name(v)}  {_aval(v)}')}, "
                     f"{CONST_STYLE}];")
    edges: dict[tuple[str, str], None] = {}      # in order, once each
    for k in plan.kernels:
        extern = k.kind in ("matmul", "extern")
        lines.append(f"  subgraph {_q('cluster_' + k.name)} {{")
        lines.append(f"    label={_q(_kernel_label(k, target))}; fontname=\"Helvetica\"; "
                     f"fontsize=11; {EXTERN_CLUSTER if extern else GENERATED_CLUSTER}")
        local: dict[Value, str] = {}
        for op in k.ops:
            v = op.out
            if v in local:
                continue
            node = local[v] = f"{k.name}:{names.get(v, '?')}"
            style = []
            if extern:
                style.append("shape=component")
            if v in k.outputs and v in outputs:
                style.append(OUTPUT_STYLE)
            elif v in k.outputs:
                style.append(BUFFER_STYLE)
            label = f"{op.prim.name}\n{name(v)}  {_aval(v)}"
            lines.append(f"    {_q(node)} [label={_q(label)}"
                         + "".join(", " + s for s in style) + "];")
            for x in op.inputs:
                src = local.get(x) if x not in k.inputs or x not in writes else None
                src = src or writes.get(x) or sources.get(x)
                if src is None:           # read from memory but written by no kernel
                    src = f"in:{names.get(x, '?')}"
                if src != node:
                    edges[(src, node)] = None
        lines.append("  }")
    for a, b in edges:
        lines.append(f"  {_q(a)} -> {_q(b)};")
    lines.append("}")
    return "\n".join(lines)
