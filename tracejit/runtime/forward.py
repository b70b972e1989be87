"""Forward mode of compiled functions: `tj.jvp` and `tj.linearize` of a `tj.compile`d function
compile the graph that `ir.forward.jvp_graph` builds from the function's own trace (printed by
TRACEJIT_DUMP=jvp), cached per signature like any compiled function.

- `JvpCompiledFunction`: (primals, tangents) -> (outputs, output tangents), one graph.
- `LinearizedParts`: the same graph cut by `ir.forward.linear_split` into a primal part
  (primals -> outputs + residuals), run once by linearize, and a tangent part (residuals +
  tangents -> output tangents), run by each call of the returned f_jvp.

The base function's static arguments stay static: they travel as one hashable static
argument of these functions. A base whose trace updates outside tensors in place or sets
`.grad`s has no pure derivative to compile: that is an error."""
from __future__ import annotations

import weakref
from typing import Any, Callable

from ..debug import dump
from ..ir.forward import jvp_graph, linear_split
from ..ir.core import Graph, user_location
from ..ir.printer import print_graph
from ..tracer import forward as tforward
from ..tracer.pytree import tree_flatten, tree_unflatten
from ..tracer.function import TRACED_APPLIES
from ..tracer.trace import Traced
from ..devices import Device, CPU
from .compile import CompiledFunction

_JVP: "weakref.WeakKeyDictionary[CompiledFunction, JvpCompiledFunction]" = \
    weakref.WeakKeyDictionary()
_LIN: "weakref.WeakKeyDictionary[CompiledFunction, LinearizedParts]" = \
    weakref.WeakKeyDictionary()


def _split_static(base: CompiledFunction, primals: tuple) -> tuple[tuple, tuple]:
    """(the dynamic primals, ((position, value), ...) of the static ones)."""
    static = base._static(primals, {})
    dyn = tuple(p for i, p in enumerate(primals) if i not in static)
    return dyn, tuple(sorted(static.items()))


def _merge_static(dyn, static: tuple) -> tuple[list, dict]:
    st = dict(static)
    it = iter(dyn)
    n = len(dyn) + len(st)
    return [st[i] if i in st else next(it) for i in range(n)], st


def _base_trace(base: CompiledFunction, dyn, static: tuple, device: Device) -> Traced:
    primals, st = _merge_static(dyn, static)
    traced = base._trace(primals, {}, st, device)
    if getattr(traced, "joint_build", None) is not None:
        traced.joint_build()        # (a gradient's trace: its graph built, runtime/grad_trace)
    if traced.writes or traced.grad_sets or traced.escapes or traced.arg_writes or traced.slots:
        raise RuntimeError(f"jvp of {base.name}: the function updates its arguments or tensors "
                           f"from outside it in place, sets .grad or stores new tensors outside "
                           f"(at "
                           f"{user_location()}); forward mode needs a function without side "
                           f"effects")
    return traced


def _tangent_tree(out_tree, avals) -> Any:
    """The output tree with a leaf for each float output and None for the others."""
    marks = [True if a.dtype.is_float else None for a in avals]
    return tree_flatten(tree_unflatten(out_tree, marks))[1]


def _jvp_of(traced: Traced, n_primal: int, name: str) -> tuple[Graph, int, int]:
    """The JVP graph of a base trace: (graph, user outputs, float user outputs). Its inputs are
    the primal leaves, their tangents, the captures and the random seed/offset; its outputs
    the user's outputs, their tangents, then the base's extra outputs (checks)."""
    g = traced.graph
    n_user = len(g.outputs) - traced.n_extra
    for v in g.outputs[n_user:]:
        if v.dtype.is_float:            # (only the int code of runtime checks is left here)
            raise RuntimeError(f"{name}: unexpected extra float output {v.aval}")
    j = jvp_graph(g, range(n_primal), name)
    n_all = len(g.outputs)
    prim_in, rest = j.inputs[:n_primal], j.inputs[n_primal:len(g.inputs)]
    j.inputs = prim_in + j.inputs[len(g.inputs):] + rest
    outs, touts = j.outputs[:n_all], j.outputs[n_all:]
    j.outputs = outs[:n_user] + touts + outs[n_user:]
    dump("jvp", name, lambda: print_graph(j))
    return j, n_user, len(touts)


class JvpCompiledFunction(CompiledFunction):
    """jvp of a compiled function (see the module doc); called as (primals, tangents)."""

    def __init__(self, base: CompiledFunction) -> None:
        def py(dyn, tangents, static):
            primals, _ = _merge_static(dyn, static)
            return tforward.jvp(base.fn, tuple(primals), tuple(tangents))
        py.__name__ = f"jvp_{base.name}"
        super().__init__(py, (2,), (), base.device, backend=base.backend_name, mode=base.mode)
        self.base = base

    def call(self, primals, tangents):
        dyn, static = _split_static(self.base, tuple(primals))
        st = dict(static)
        tangents = tuple(t for i, t in enumerate(tangents) if i not in st)
        return self(dyn, tangents, static)

    def _trace(self, args, kwargs, static, device: Device = CPU) -> Traced:
        dyn, tangents, st = args
        applies = TRACED_APPLIES[0]
        traced = _base_trace(self.base, dyn, st, device)
        if TRACED_APPLIES[0] != applies:
            # custom Functions: the plain tj.jvp traced inside this trace runs their jvp
            # staticmethods on dual tensors (tracer/forward.py)
            return super()._trace(args, kwargs, static, device)
        n_primal = len(tree_flatten(dyn)[0])
        j, n_user, _ = _jvp_of(traced, n_primal, self.name)
        user_avals = [v.aval for v in traced.graph.outputs[:n_user]]
        out_tree = ("tuple", (traced.out_tree, _tangent_tree(traced.out_tree, user_avals)))
        return Traced(j, out_tree, traced.captures, traced.guards, traced.n_random,
                      bindings=traced.bindings, consts=traced.consts,
                      attr_guards=traced.attr_guards,
                      checks=traced.checks)


class LinearizedParts:
    """The primal and tangent parts of the JVP graph of a compiled function, each a compiled
    function of its own (see the module doc)."""

    def __init__(self, base: CompiledFunction) -> None:
        self.base = base
        self.primal = _PrimalPart(self)
        self.tangent = _TangentPart(self)

    def split(self, dyn, static, device: Device) -> tuple[Traced, Graph, Graph, int, int]:
        applies = TRACED_APPLIES[0]
        traced = _base_trace(self.base, dyn, static, device)
        if TRACED_APPLIES[0] != applies:
            raise NotImplementedError(
                f"tj.linearize of the compiled {self.base.name}, which applies a custom "
                f"autograd.Function, is not supported (at {user_location()}); call tj.linearize "
                f"on the Python function, or tj.jvp on the compiled one")
        n_primal = len(tree_flatten(dyn)[0])
        j, n_user, n_tan = _jvp_of(traced, n_primal, f"linearize_{self.base.name}")
        n_in = len(j.inputs)
        # linear_split wants primal inputs first, then the tangents; outputs: the primal
        # outputs (checks included), then the tangents
        tans = j.inputs[n_primal:2 * n_primal]
        j.inputs = j.inputs[:n_primal] + j.inputs[2 * n_primal:] + tans
        outs = j.outputs
        j.outputs = outs[:n_user] + outs[n_user + n_tan:] + outs[n_user:n_user + n_tan]
        n_out = len(j.outputs) - n_tan
        primal_g, tangent_g, n_res = linear_split(j, n_in - n_primal, n_out)
        return traced, primal_g, tangent_g, n_res, n_user


class _PrimalPart(CompiledFunction):
    """(primals) -> (outputs, residuals)."""

    def __init__(self, parts: LinearizedParts) -> None:
        def py(dyn, static):
            raise RuntimeError(f"linearize of {parts.base.name} cannot run inside a trace; "
                               f"call tj.linearize on the Python function there")
        py.__name__ = f"linearize_{parts.base.name}"
        super().__init__(py, (1,), (), parts.base.device, backend=parts.base.backend_name,
                         mode=parts.base.mode)
        self.parts = parts

    def _trace(self, args, kwargs, static, device: Device = CPU) -> Traced:
        dyn, st = args
        traced, primal_g, _, n_res, n_user = self.parts.split(dyn, st, device)
        n_checks = len(primal_g.outputs) - n_res - n_user
        # outputs: the user's, the residuals, then the checks code (an extra, last)
        outs = primal_g.outputs
        primal_g.outputs = outs[:n_user] + outs[n_user + n_checks:] + outs[n_user:n_user + n_checks]
        out_tree = ("tuple", (traced.out_tree, ("list", (("leaf",),) * n_res)))
        return Traced(primal_g, out_tree, traced.captures, traced.guards, traced.n_random,
                      bindings=traced.bindings, consts=traced.consts,
                      attr_guards=traced.attr_guards,
                      checks=traced.checks)


class _TangentPart(CompiledFunction):
    """(residuals, tangents) -> output tangents. The base is traced again with the tangents
    standing in for the primals (they have the primals' shapes and dtypes), which gives the
    same graph and so the same cut."""

    def __init__(self, parts: LinearizedParts) -> None:
        def py(residuals, tangents, static):
            raise RuntimeError(f"linearize of {parts.base.name} cannot run inside a trace")
        py.__name__ = f"linearize_{parts.base.name}_jvp"
        super().__init__(py, (2,), (), parts.base.device, backend=parts.base.backend_name,
                         mode=parts.base.mode)
        self.parts = parts

    def _trace(self, args, kwargs, static, device: Device = CPU) -> Traced:
        residuals, tangents, st = args
        traced, _, tangent_g, n_res, n_user = self.parts.split(tangents, st, device)
        user_avals = [v.aval for v in traced.graph.outputs[:n_user]]
        return Traced(tangent_g, _tangent_tree(traced.out_tree, user_avals), [])


def compiled_jvp(fn: CompiledFunction, primals, tangents) -> tuple[Any, Any]:
    """tj.jvp of a compiled function."""
    tforward.check_tangents("jvp", primals, tangents)
    f = _JVP.get(fn)
    if f is None:
        f = _JVP[fn] = JvpCompiledFunction(fn)
    return f.call(tuple(primals), tuple(tangents))


def compiled_linearize(fn: CompiledFunction, *primals) -> tuple[Any, Callable]:
    """tj.linearize of a compiled function."""
    tforward.check_primals("linearize", primals)
    parts = _LIN.get(fn)
    if parts is None:
        parts = _LIN[fn] = LinearizedParts(fn)
    dyn, static = _split_static(fn, tuple(primals))
    out, residuals = parts.primal(dyn, static)
    st = dict(static)

    def f_jvp(*tangents):
        tforward.check_tangents("linearize", primals, tangents)
        tans = tuple(t for i, t in enumerate(tangents) if i not in st)
        return parts.tangent(list(residuals), tans, static)
    f_jvp.__name__ = f"linearize_{fn.name}_jvp"
    return out, f_jvp


__all__ = ["JvpCompiledFunction", "LinearizedParts", "compiled_jvp", "compiled_linearize"]
