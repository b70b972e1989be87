"""The one registry of primitives and the binding that applies them.

A primitive is declared once with everything a stage needs: shape/dtype inference, its NumPy
implementation, its VJP rule and (for elementwise ops) its scalar expression. `bind(prim,
*args)` applies a primitive to whatever the arguments are: objects with a `__tj_bind__` method
(IR values, tracer Tensors) handle the application themselves; plain arrays run the NumPy
implementation. VJP rules call the helpers at the bottom of this file, so one rule serves the
eager engine, the eager engine with create_graph=True and the IR transform alike.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from . import dtypes as dt
from .core import Aval, Value, user_location


def op_error(name: str, msg: str, cls: type = ValueError) -> Exception:
    """An exception naming the op, the problem and the user's own file:line."""
    return cls(f"{name}: {msg} (at {user_location()})")


# kinds: "elementwise", "reduce", "shape", "index", "matmul", "constant", "random", "scan",
# "extern" (not generated: backends call the NumPy/CuPy implementation, see prims_sort.py)
class Primitive:
    def __init__(self, name: str, kind: str, infer: Callable, impl: Callable, *,
                 vjp: Callable | None = None, jvp: Callable | None = None,
                 saves: Sequence[int] | Callable = (),
                 save_out: bool | Callable = False,
                 scalar: Callable | None = None, params: dict[str, str] | None = None,
                 arity: int | None = None,
                 batch: Callable | None = None, bounds: Callable | None = None,
                 index_map: Callable | None = None, rows: Callable | None = None) -> None:
        self.name = name
        # index primitives: (input avals, params) -> (the index operand, the length of the
        # axis it indexes); a compiled program checks those indices (tracer/trace.py's checks)
        self.bounds = bounds
        self.kind = kind
        self.infer_rule = infer
        self.impl = impl
        self.vjp = vjp                      # (g, ins, out, params, need) -> list[cotangent|None]
        # (tangents, ins, out, params) -> tangent of out, or None for a zero tangent; each
        # entry of `tangents` is None where that operand's tangent is zero (never materialized)
        self.jvp = jvp
        # What the VJP rule reads, so the eager engine keeps exactly that alive (and checks it
        # for in-place changes): the inputs `saves` names and, with `save_out`, the output.
        # Either may be a function of `need` (which operands want a gradient): x / 2 needs
        # only the divisor, as in PyTorch, so changing the quotient in place stays legal.
        self.saves = saves if callable(saves) else tuple(saves)
        self.save_out = save_out
        self.scalar = scalar                # (sb, *scalars, **params) -> scalar, elementwise only
        # view and index ops: which operand element each output element is, and whether the op
        # keeps rows (see ir/index_maps.py); a fused kernel evaluates them, any backend alike
        self.index_map = index_map          # (ix, idx, site, **params) -> index_maps.Access
        self.rows = rows                    # (j, in_shapes, out_shape, dep, **params) -> bool
        # name -> "ints" | "int" | "float" | "dtype" | "array" | "bool"
        self.param_types = params or {}
        self.arity = arity
        # the batching rule (vmap): (prim, axis, args, batched, params) -> (out, out_batched):
        # a batched operand carries the vmapped axis first (axis 0) and `axis` is a
        # batching.BatchAxis (the axis size and the randomness mode); see ir/batching.py
        self.batch = batch

    def __repr__(self) -> str:
        return f"<prim {self.name}>"

    def normalize(self, params: dict) -> dict:
        if not params:
            return params
        out = {}
        for k, v in params.items():
            t = self.param_types.get(k)
            if t is None:
                raise TypeError(f"{self.name}: unknown parameter {k!r}")
            if t == "ints":
                if type(v) is not tuple or not all(type(i) is int for i in v):
                    v = tuple(int(i) for i in v)
            elif t == "int":
                v = int(v)
            elif t == "bool":
                v = bool(v)
            elif t == "float":
                v = float(v)
            elif t == "dtype":
                v = dt.as_dtype(v)
            elif t == "array":
                v = np.asarray(v)
            out[k] = v
        return out

    def infer(self, avals: list[Aval], params: dict) -> Aval:
        if self.arity is not None and len(avals) != self.arity:
            raise op_error(self.name, f"takes {self.arity} operands, got {len(avals)}", TypeError)
        return self.infer_rule(self.name, avals, **params)

    def saved_for(self, need: Sequence[bool]) -> tuple[tuple[int, ...], bool]:
        """(the inputs the VJP rule reads, whether it reads the output) for this `need`."""
        saves = self.saves(need) if callable(self.saves) else self.saves
        save_out = self.save_out(need) if callable(self.save_out) else self.save_out
        return tuple(saves), bool(save_out)

    def keeps_rows(self, j: int, in_shapes: Sequence[tuple[int, ...]], out_shape: tuple[int, ...],
                   dep: Sequence[bool], params: dict) -> bool:
        """Whether this op reads its operands marked in `dep` at the same first j axes (the
        row) it writes: always for elementwise ops, per the declared `rows` rule otherwise, and
        conservatively not for an op that declares none."""
        if self.kind == "elementwise":
            return True
        return self.rows is not None and bool(self.rows(j, in_shapes, out_shape, dep, **params))



class _Registry:
    """Attribute access to every primitive: `P.add`, `P.sum`, ..."""

    def __init__(self) -> None:
        self._prims: dict[str, Primitive] = {}

    def register(self, prim: Primitive) -> Primitive:
        if prim.name in self._prims:
            raise ValueError(f"primitive {prim.name} declared twice")
        self._prims[prim.name] = prim
        setattr(self, prim.name, prim)
        return prim

    def get(self, name: str) -> Primitive:
        try:
            return self._prims[name]
        except KeyError:
            raise ValueError(f"unknown primitive {name!r}") from None

    def __iter__(self):
        return iter(self._prims.values())

    def __contains__(self, name: str) -> bool:
        return name in self._prims


P = _Registry()


def bind(prim: Primitive, *args: Any, **params: Any) -> Any:
    """Apply `prim` to `args`: the first argument that knows how (`__tj_bind__`) handles it."""
    for a in args:
        h = getattr(a, "__tj_bind__", None)
        if h is not None:
            return h(prim, args, params)
    params = prim.normalize(params)
    prim.infer([Aval(np.shape(a), dt.as_dtype(np.asarray(a).dtype)) for a in args], params)
    with np.errstate(all="ignore"):
        return np.asarray(prim.impl(*args, **params))


def const_like(like: Any, value: Any) -> Any:
    """A constant array in the same world as `like` (a Tensor, an IR value or an array)."""
    if isinstance(like, Value):
        return like.graph.emit(P.constant, [], {"value": np.asarray(value)})
    h = getattr(like, "__tj_const__", None)
    return h(np.asarray(value)) if h is not None else np.asarray(value)


# ---------------------------------------------------------------------------------------------
# Helpers VJP rules and composites are written in. Operands must already agree in shape and
# dtype, except that a Python number is splat to the other operand's type.

def _splat(x: Any, v: float) -> Any:
    # an operand that can fill an array of its own shape directly (the eager engine's arrays,
    # tracer.eager.Arr) does: no constant and broadcast applied through the registry
    h = getattr(x, "__tj_full__", None)
    if h is not None:
        return h(v)
    return broadcast(const_like(x, np.array(v, dtype=x.dtype.np)), x.shape)


def _binary(name: str):
    prim: list = []          # the primitive, looked up on first use (registered later)

    def f(a, b):
        if not hasattr(a, "shape"):
            a = _splat(b, a)
        if not hasattr(b, "shape"):
            b = _splat(a, b)
        if not prim:
            prim.append(P.get(name))
        return bind(prim[0], a, b)
    f.__name__ = name
    return f


add, sub, mul, div, pow_ = (_binary(n) for n in ("add", "sub", "mul", "div", "pow"))
maximum, minimum = _binary("maximum"), _binary("minimum")
lt, le, gt, ge, eq, ne = (_binary(n) for n in ("lt", "le", "gt", "ge", "eq", "ne"))


def neg(x): return bind(P.neg, x)
def exp(x): return bind(P.exp, x)
def log(x): return bind(P.log, x)
def sin(x): return bind(P.sin, x)
def cos(x): return bind(P.cos, x)
def tanh(x): return bind(P.tanh, x)
def sqrt(x): return bind(P.sqrt, x)
def sign(x): return bind(P.sign, x)
def cast(x, dtype): return x if x.dtype is dt.as_dtype(dtype) else bind(P.cast, x, dtype=dtype)


def where(c, a, b):
    if not hasattr(a, "shape"):
        a = _splat(b, a)
    if not hasattr(b, "shape"):
        b = _splat(a, b)
    return bind(P.where, c, a, b)


def reduce_sum(x, axes): return bind(P.sum, x, axes=tuple(axes))
def reshape(x, shape): return x if tuple(x.shape) == tuple(shape) else bind(P.reshape, x, shape=shape)
def transpose(x, perm): return bind(P.transpose, x, perm=perm)


def broadcast(x, shape):
    return x if tuple(x.shape) == tuple(shape) else bind(P.broadcast, x, shape=shape)


def zeros_like(x): return _splat(x, 0)


def tangent_sum(*terms):
    """The sum of the tangent terms that are not None (a symbolic zero); None if all are."""
    out = None
    for t in terms:
        if t is not None:
            out = t if out is None else add(out, t)
    return out


def tangent_or_zeros(t, like):
    """A JVP rule's tangent `t`, materialized as zeros shaped like `like` where it is None."""
    return zeros_like(like) if t is None else t


def full_like(x, v): return _splat(x, v)


def matmul(a, b): return bind(P.matmul, a, b)


def swap_last(x):
    n = len(x.shape)
    # (a tuple: hashable params take the eager engine's inference cache directly)
    return transpose(x, tuple(range(n - 2)) + (n - 1, n - 2))


def sum_to_shape(g, shape: tuple[int, ...]):
    """Undo a NumPy broadcast of `shape` to g.shape by summing (the VJP of broadcasting)."""
    shape = tuple(shape)
    if tuple(g.shape) == shape:
        return g
    lead = len(g.shape) - len(shape)
    axes = list(range(lead)) + [lead + i for i, d in enumerate(shape)
                                if d == 1 and g.shape[lead + i] != 1]
    return reshape(reduce_sum(g, axes), shape)
