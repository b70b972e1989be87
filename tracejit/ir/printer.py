"""The stable text form of a Graph (parsed back by parser.py)."""
from __future__ import annotations

import base64
import re

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:          # (annotations only: core imports this module to print graphs)
    from .core import Graph, Value

# constants with more elements print as base64 of their bytes; the tracer also turns a uniform
# capture larger than this into a splat (a scalar constant and a broadcast)
INLINE_LIMIT = 16


def format_scalar(v) -> str:
    if isinstance(v, (bool, np.bool_)):
        return "true" if v else "false"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    f = float(v)
    if f != f:
        return "nan"
    if f in (float("inf"), float("-inf")):
        return "inf" if f > 0 else "-inf"
    return repr(f)


def format_array(a: np.ndarray) -> str:
    if a.size > INLINE_LIMIT:
        return "b64:" + base64.b64encode(np.ascontiguousarray(a).tobytes()).decode()

    def rec(x):
        if x.ndim == 0:
            return format_scalar(x[()])
        return "[" + ", ".join(rec(y) for y in x) + "]"
    return rec(a)


def format_param(v) -> str:
    if isinstance(v, tuple):
        return "[" + ",".join(str(i) for i in v) + "]"
    if isinstance(v, np.ndarray):
        return format_array(v)
    if isinstance(v, bool):
        return "true" if v else "false"
    if hasattr(v, "np") and hasattr(v, "kind"):      # a DType
        return v.name
    return str(v)


_NAME_OK = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*$")


def value_names(g: Graph) -> dict[Value, str]:
    names: dict[Value, str] = {}
    used = set()
    for i, v in enumerate(g.inputs):
        n = v.name if v.name and _NAME_OK.match(v.name) and v.name not in used else f"arg{i}"
        while n in used:
            n += "_"
        used.add(n)
        names[v] = n
    for i, ins in enumerate(g.instrs):
        names[ins.out] = str(i)
    return names


def print_graph(g: Graph, with_locs: bool = True) -> str:
    names = value_names(g)

    def ref(v: Value) -> str:
        return "%" + names.get(v, "<undefined>")
    args = ", ".join(f"{ref(v)}: {v.aval}" for v in g.inputs)
    outs = ", ".join(str(v.aval) for v in g.outputs)
    lines = [f"graph @{g.name}({args}) -> ({outs}) {{"]
    for ins in g.instrs:
        text = f"  {ref(ins.out)} = {ins.prim.name}"
        if ins.inputs:
            text += " " + ", ".join(ref(v) for v in ins.inputs)
        if ins.params:
            text += " {" + ", ".join(f"{k}={format_param(v)}" for k, v in ins.params.items()) + "}"
        text = f"{text:<44} : {ins.out.aval}"
        if with_locs and ins.loc:
            text = f"{text:<64} # {ins.loc}"
        lines.append(text)
    lines.append("  return " + ", ".join(ref(v) for v in g.outputs))
    lines.append("}")
    return "\n".join(lines)
