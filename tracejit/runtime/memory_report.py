"""What `.lower(...).memory` shows besides the executable's own memory plan: the residuals a
call with gradients saves between its forward and backward executables (which values, how
many bytes, and why: the backward operations that read each one)."""
from __future__ import annotations

import math
from typing import Sequence

from ..codegen.memplan import fmt_bytes
from ..ir.autodiff import split, vjp_graph
from ..ir.partition import cut_enabled
from ..ir.core import Graph, Value
from ..ir.printer import value_names


def _nbytes(v: Value) -> int:
    return math.prod(v.shape) * v.dtype.np.itemsize


def residual_report(graph: Graph, wrt: Sequence[int] | None = None) -> str:
    """The residuals the forward saves for the backward when `graph` is differentiated with
    respect to inputs `wrt` (default: every float input), split as a compiled call with
    gradients splits it (runtime/compile.py _compile_grad)."""
    if wrt is None:
        wrt = [i for i, v in enumerate(graph.inputs) if v.dtype.is_float]
    wrt = list(wrt)
    in_names = value_names(graph)
    which = ", ".join("%" + in_names[graph.inputs[i]] for i in wrt) or "nothing"
    if not wrt or not any(v.dtype.is_float for v in graph.outputs):
        return f"saved for backward (gradients of {which}): nothing to differentiate"
    n_out = len(graph.outputs)
    joint = vjp_graph(graph, wrt, graph.name + "_vjp")
    fwd, bwd, n_res = split(joint, len(graph.inputs), n_out, recompute=cut_enabled())
    saved = fwd.outputs[n_out:n_out + n_res]
    total = sum(_nbytes(v) for v in saved)
    lines = [f"saved for backward (gradients of {which}): {n_res} residuals, "
             f"{fmt_bytes(total)}"]
    fnames = value_names(fwd)
    readers: dict[Value, list[str]] = {}
    for ins in bwd.instrs:
        for v in ins.inputs:
            names = readers.setdefault(v, [])
            if ins.prim.name not in names:
                names.append(ins.prim.name)
    for i, (fv, bv) in enumerate(zip(saved, bwd.inputs[:n_res])):
        if fv.producer is None:
            made = f"input %{fnames[fv]}"
        else:
            made = f"{fv.producer.prim.name} in the forward at {fv.producer.loc}"
        why = list(readers.get(bv, []))
        if bv in bwd.outputs:
            why.append("a gradient (returned as is)")
        lines.append(f"  r{i} {fv.aval} {_nbytes(fv)} B: {made}; the backward reads it in "
                     f"{', '.join(why) or 'nothing'}")
    return "\n".join(lines)


__all__ = ["residual_report"]
