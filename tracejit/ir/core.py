"""The typed SSA IR: abstract values, values, instructions and graphs."""
from __future__ import annotations

import math
import os
import sys
import weakref
from typing import Any, Callable, Sequence

import numpy as np

from .dtypes import DType
from .printer import print_graph

_PKG_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# code objects of tracejit (and importlib) seen by user_location, by id (the dict holds each
# one, so its id is never reused), and the short names of the users' files: every traced
# instruction records its location, walking a dozen frames of ours. By id, not by the code
# object: CPython 3.11 hashes a code object afresh each time, over its bytecode and constants
# (~17 us for dispatch._apply_general), and that was most of a first call's tracing time.
_OWN_CODE: dict = {}
_BASENAMES: dict[str, str] = {}


def user_location() -> str:
    """file:line of the innermost stack frame outside the tracejit package."""
    f = sys._getframe(1)
    own = _OWN_CODE
    while f is not None:
        code = f.f_code
        if id(code) not in own:
            fn = code.co_filename
            if not fn.startswith(_PKG_DIR) and "importlib" not in fn:
                name = _BASENAMES.get(fn)
                if name is None:
                    name = _BASENAMES[fn] = os.path.basename(fn)
                return f"{name}:{f.f_lineno}"
            own[id(code)] = code
        f = f.f_back
    return "<unknown>:0"


def user_stacklevel() -> int:
    """warnings.warn's stacklevel, called where this is, that names the user's line: the
    innermost frame outside the tracejit package."""
    f, level = sys._getframe(1), 1
    while f is not None and (f.f_code.co_filename.startswith(_PKG_DIR) or
                             "importlib" in f.f_code.co_filename):
        f, level = f.f_back, level + 1
    return level


class Aval:
    """The static type of a value: a shape and a dtype."""

    __slots__ = ("shape", "dtype")

    def __init__(self, shape: Sequence[int], dtype: DType) -> None:
        self.shape = shape if type(shape) is tuple else tuple(int(d) for d in shape)
        self.dtype = dtype

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Aval) and self.shape == other.shape and self.dtype is other.dtype

    def __hash__(self) -> int:
        return hash((self.shape, self.dtype.name))

    def __str__(self) -> str:
        return f"{self.dtype.name}[{','.join(map(str, self.shape))}]"

    __repr__ = __str__


class Value:
    """An SSA value of a Graph: a graph input or the result of one instruction."""

    __slots__ = ("aval", "graph", "producer", "name", "__weakref__")

    def __init__(self, aval: Aval, graph: "Graph", producer: "Instr | None" = None,
                 name: str | None = None) -> None:
        self.aval = aval
        self.graph = graph
        self.producer = producer
        self.name = name

    @property
    def shape(self) -> tuple[int, ...]:
        return self.aval.shape

    @property
    def dtype(self) -> DType:
        return self.aval.dtype

    @property
    def ndim(self) -> int:
        return len(self.aval.shape)

    def __repr__(self) -> str:
        return f"%{self.name or hex(id(self))[-6:]}: {self.aval}"

    # -- the registry's binding protocol (see primitives.bind) --
    def __tj_bind__(self, prim, args: Sequence[Any], params: dict) -> "Value":
        vals = []
        for a in args:
            if not isinstance(a, Value):
                raise TypeError(f"{prim.name}: cannot mix an IR value with {type(a).__name__}")
            if a.graph is not self.graph:
                raise ValueError(f"{prim.name}: operands come from different graphs")
            vals.append(a)
        return self.graph.emit(prim, vals, params)


class Instr:
    """One instruction: `out = prim(*inputs) {params}`, with the user's source location."""

    __slots__ = ("prim", "inputs", "params", "out", "loc")

    def __init__(self, prim, inputs: list[Value], params: dict, out: Value, loc: str) -> None:
        self.prim = prim
        self.inputs = inputs
        self.params = params
        self.out = out
        self.loc = loc

    def __repr__(self) -> str:
        return f"<Instr {self.prim.name} -> {self.out.aval}>"


class Graph:
    """A function in SSA form: typed inputs, instructions in topological order, outputs."""

    def __init__(self, name: str = "f") -> None:
        self.name = name
        self.inputs: list[Value] = []
        self.instrs: list[Instr] = []
        self.outputs: list[Value] = []
        self.loc_override: str | None = None   # set while replaying instructions elsewhere
        # values no gradient reaches, found while tracing under no_grad (tracer/no_grad_ir.py);
        # weak, so that the values a pass drops from the graph are freed
        self.gradless: "weakref.WeakSet[Value]" = weakref.WeakSet()

    def add_input(self, aval: Aval, name: str | None = None) -> Value:
        v = Value(aval, self, None, name)
        self.inputs.append(v)
        return v

    def emit(self, prim, inputs: list[Value], params: dict, loc: str | None = None) -> Value:
        """Append `prim(*inputs)`; shape/dtype inference raises on a user mistake."""
        params = prim.normalize(params)
        aval = prim.infer([v.aval for v in inputs], params)
        out = Value(aval, self)
        ins = Instr(prim, list(inputs), params, out,
                    loc or self.loc_override or user_location())
        out.producer = ins
        self.instrs.append(ins)
        return out

    def emit_copy(self, ins: Instr, inputs: list[Value]) -> Value:
        """Append a copy of `ins` (of any graph) on `inputs`. On operands of its operands'
        types its parameters (normalized; the dict is shared, as passes replace an
        instruction's params and never change them in place) and result type carry over
        without inference: a rewrite that copies a deep model's graph copies thousands of
        instructions."""
        if len(inputs) != len(ins.inputs):
            return self.emit(ins.prim, inputs, ins.params, ins.loc)
        for a, b in zip(inputs, ins.inputs):
            if a.aval is not b.aval and a.aval != b.aval:   # (copies share their Aval)
                return self.emit(ins.prim, inputs, ins.params, ins.loc)
        out = Value(ins.out.aval, self)
        new = Instr(ins.prim, list(inputs), ins.params, out,
                    ins.loc or self.loc_override or user_location())
        out.producer = new
        self.instrs.append(new)
        return out

    def __repr__(self) -> str:
        return print_graph(self)

    def as_text(self) -> str:
        return print_graph(self)

    def users(self) -> dict[Value, list[Instr]]:
        uses: dict[Value, list[Instr]] = {}
        for ins in self.instrs:
            for v in ins.inputs:
                uses.setdefault(v, []).append(ins)
        return uses

    @property
    def in_avals(self) -> list[Aval]:
        return [v.aval for v in self.inputs]


def expand(g: Graph, rules: dict[str, Callable[[list[Value], dict], Value]]) -> Graph:
    """g with each instruction whose primitive has a rule replaced by what the rule emits from
    the new inputs and the params (at the instruction's own file:line), the others copied; g
    itself when no instruction has a rule, so that the IR dumps keep showing the originals.
    How the backends lower composite primitives (conv2d, argmax) before fusion."""
    if not any(ins.prim.name in rules for ins in g.instrs):
        return g
    new = Graph(g.name)
    env = {v: new.add_input(v.aval, v.name) for v in g.inputs}
    for ins in g.instrs:
        args = [env[v] for v in ins.inputs]
        rule = rules.get(ins.prim.name)
        if rule is None:
            env[ins.out] = new.emit_copy(ins, args)
            continue
        new.loc_override = ins.loc
        env[ins.out] = rule(args, ins.params)
        new.loc_override = None
    new.outputs = [env[v] for v in g.outputs]
    return new
