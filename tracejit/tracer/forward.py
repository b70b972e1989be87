"""Forward-mode transforms of Python functions: jvp and linearize, and what the Jacobians
(tracer/jacobians.py: jacfwd, jacrev) share with them.

Each one traces the function into a graph (`trace_pure`), applies an IR transform
(`ir.forward.jvp_graph` and `linear_split`) and runs the resulting graphs by replaying them on
the caller's tensors. Replaying binds every instruction through the registry, so the run is
eager NumPy outside a trace (and recorded on the eager tape when the arguments require grad:
`grad` of a `jvp` works), and emits IR inside an enclosing trace (`tj.compile` of a function
that calls `tj.jvp` works, and so does `jacfwd(jacrev(f))`: the gradient inside is traced like
any op). A function that applies custom autograd.Functions is traced on dual tensors instead,
so that their jvp staticmethods take part (see trace_pure).

The traced and transformed graphs are kept per function and argument signature (`cached`,
tracer/transform_cache.py, with tj.compile's guard rules), so a later call replays them
without tracing again: as under tj.compile, the function's Python side effects happen when it
is traced. What the function reads from outside (eager tensors, or traced values of an
enclosing trace) enters the graph as an extra input and is replayed as the same tensor, so
gradients reach it. Python control flow on values inside the function raises the tracer's
usual error: the function is traced, as under tj.compile."""
from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from ..debug import dump
from ..devices import CPU
from ..ir.core import Aval, Graph, user_location
from ..ir.replay import replay
from ..ir.forward import jvp_graph, linear_split
from ..ir.passes import optimize
from ..ir.primitives import zeros_like
from ..ir.printer import print_graph
from . import forward_ad, ops
from .pytree import tree_flatten, tree_unflatten
from .rng import default_generator
from .state import STATE
from .tensor_base import TensorBase as Tensor
from .trace import TraceContext
from . import transform_cache as tcache
from .function import TRACED_APPLIES

class Pure:
    """A traced function: its graph (inputs: the flat arguments, then what it read from
    outside, then the random seed and offset if it draws random numbers), the output
    structure, and the outside tensors in graph-input order."""

    def __init__(self, graph: Graph, out_tree, captures: list, n_random: int, device,
                 guards: "tcache.Guards | None" = None) -> None:
        self.graph, self.out_tree, self.captures = graph, out_tree, captures
        self.n_random, self.device = n_random, device
        self.guards = guards        # what a cached trace must still find (transform_cache)
        self.custom = 0             # custom Functions applied (their jvp: see trace_pure)
        self.jvp: Graph | None = None   # traced on dual tensors: the JVP graph itself

    def extra_inputs(self) -> list[Tensor]:
        """The tensors for the graph's inputs after the arguments, for one run."""
        extra = list(self.captures)
        if self.n_random:
            ctx = STATE.traces[-1] if STATE.traces else None
            if ctx is None:
                extra += [Tensor(a) for a in default_generator(self.device)
                          .hidden_inputs(self.n_random)]
            else:       # inside a trace: this graph's streams are the next ones of that trace
                seed, offset, base = ctx.random_stream()
                for _ in range(self.n_random - 1):
                    ctx.random_stream()
                off = Tensor(offset)
                extra += [Tensor(seed), off + base if base else off]
        return extra


def _device_of(flat: list) -> Any:
    for x in flat:
        if isinstance(x, Tensor):
            return x.device
    return STATE.traces[-1].device if STATE.traces else CPU


def trace_pure(fn: Callable, args: Sequence[Tensor], in_tree, name: str,
               dual_wrt: Sequence[int] | None = None) -> Pure:
    """Trace fn(*tree_unflatten(in_tree, args)) into a graph of its own (see the module doc).

    With `dual_wrt` (flat argument positions) fn runs on dual tensors (forward_ad) whose
    tangents are graph inputs too, so the graph (`pure.jvp`) is fn's JVP in jvp_graph's
    layout: inputs the arguments, the captures, the random seed/offset, then the tangents;
    outputs fn's, then one tangent per float output. A custom Function's jvp staticmethod
    takes part that way, which the IR transform of the plain trace cannot see."""
    device = _device_of(list(args))
    ctx = TraceContext(name, device)
    touts: list = []
    applies = TRACED_APPLIES[0]
    try:
        with ctx:
            tracers = [Tensor(ctx.graph.add_input(Aval(a.shape, a.dtype), f"x{i}"),
                              _weak=a._weak) for i, a in enumerate(args)]
            tangents = [ctx.graph.add_input(Aval(args[k].shape, args[k].dtype), f"t{k}")
                        for k in dual_wrt or ()]
            level = forward_ad.enter_dual_level() if dual_wrt is not None else None
            try:
                call = list(tracers)
                for k, t in zip(dual_wrt or (), tangents):
                    call[k] = forward_ad.make_dual(tracers[k], Tensor(t), level=level)
                out = fn(*tree_unflatten(in_tree, call))
                out_flat, out_tree = tree_flatten(out)
                outs = []
                for o in out_flat:
                    o = o if isinstance(o, Tensor) else ops.as_tensor(o)
                    outs.append(_value_in(ctx, o))
                    if level is not None and o.dtype.is_float:
                        t = forward_ad.unpack_dual(o, level=level).tangent
                        touts.append(_value_in(ctx, t if t is not None
                                               else zeros_like(o.detach())))
            finally:
                if level is not None:
                    forward_ad.exit_dual_level(level=level)
    finally:
        ctx.grad_slots.restore()       # a traced value must not stay in an outside `.grad`
    if ctx.writes:
        raise RuntimeError(f"{name}: the function updates a tensor from outside it in place "
                           f"(at {user_location()}); jvp, linearize, jacfwd, jacrev and "
                           f"hessian need a function without such side effects (return the new "
                           f"value instead)")
    g = ctx.graph
    g.outputs = outs + touts
    tan_in = g.inputs[len(args):len(args) + len(tangents)]
    g.inputs = [v for v in g.inputs if v not in tan_in]
    if ctx.rng is not None:
        g.inputs = [v for v in g.inputs if v not in ctx.rng] + list(ctx.rng)
    g.inputs += tan_in
    caps = list(ctx.captures)
    guards = tcache.Guards(fn, ctx, caps, tcache.capture_avals(g, len(args), caps))
    if dual_wrt is None:
        pure = Pure(g, out_tree, caps, ctx.n_random, device, guards)
        pure.custom = TRACED_APPLIES[0] - applies
    else:                   # .graph: the primal inputs and outputs only (their counts)
        primal = Graph(name)
        primal.inputs, primal.outputs = g.inputs[:len(g.inputs) - len(tan_in)], outs
        pure = Pure(primal, out_tree, caps, ctx.n_random, device, guards)
        pure.jvp = optimize(g)
    _release(ctx)
    return pure


def _value_in(ctx: TraceContext, t: Tensor):
    """t's value in ctx's graph (an outside tensor is captured)."""
    return t._data if t._traced and t._data.graph is ctx.graph else ctx.capture(t)


def cached(kind: str, fn: Callable, args: list[Tensor], in_tree, name: str,
           build: Callable[[Pure], dict], extra_key: tuple = (),
           dual_wrt: Sequence[int] | None = None) -> tcache.Entry:
    """The kept trace of `kind` of fn for these flat arguments (see transform_cache), or a new
    one: fn traced (`entry.pure`) and `build(pure)`'s graphs (the entry's other fields). A
    forward-mode transform (with `dual_wrt`) of a function that applies custom Functions
    traces it again on dual tensors (see trace_pure)."""
    key = (in_tree, tuple(tcache.leaf_key(a) for a in args)) + extra_key
    use = tcache.cacheable()
    if use:
        entry = tcache.lookup(kind, fn, key)
        if entry is not None:
            return entry
    pure = trace_pure(fn, args, in_tree, name)
    if dual_wrt is not None and pure.custom:
        pure = trace_pure(fn, args, in_tree, name, list(dual_wrt))
    entry = tcache.Entry(guards=pure.guards, pure=pure, memo={}, **build(pure))
    if use:
        tcache.store(kind, fn, key, entry)
    return entry


def _release(ctx: TraceContext) -> None:
    """Drop what a finished nested trace holds of outside tensors: its tensors point back at
    it (their _born_in), so it lives in a reference cycle until a garbage collection, and an
    enclosing compiled function would take the outside tensors it holds for escapes."""
    ctx.captures.clear()
    ctx._cap_index.clear()
    ctx._leaves.clear()
    ctx._arrays.clear()
    ctx.guards.clear()
    ctx.writes.clear()


def _leaf_tensor(x: Any, what: str) -> Tensor:
    if isinstance(x, Tensor):
        return x
    try:
        return ops.as_tensor(x)
    except TypeError:
        raise TypeError(f"{what}: expected Tensors, NumPy arrays or numbers, got "
                        f"{type(x).__name__} (at {user_location()})") from None


def _check_tangent(name: str, i: int, p: Tensor, t: Tensor) -> Tensor:
    if not p.dtype.is_float:
        raise TypeError(f"{name}: primal {i} is {p.dtype.name}{list(p.shape)}; only "
                        f"floating-point primals have tangents (at {user_location()})")
    if t.shape != p.shape or t.dtype is not p.dtype:
        raise ValueError(f"{name}: tangent {i} is {t.dtype.name}{list(t.shape)} but its primal "
                         f"is {p.dtype.name}{list(p.shape)}; a tangent must have its primal's "
                         f"shape and dtype (at {user_location()})")
    return t


def _flat_primals(name: str, primals) -> tuple[list[Tensor], Any]:
    if not isinstance(primals, (tuple, list)):
        raise TypeError(f"{name}: primals must be a tuple or list of arguments, got "
                        f"{type(primals).__name__} (at {user_location()})")
    flat, tree = tree_flatten(tuple(primals))
    return [_leaf_tensor(x, name) for x in flat], tree


def _tangent_tree(out_tree, outs: list, touts: list):
    """The output tangents in the outputs' structure: None for integer and bool outputs."""
    it = iter(touts)
    return tree_unflatten(out_tree, [next(it) if o.dtype.is_float else None for o in outs])


def _run(graph: Graph, args: list[Tensor]) -> list[Tensor]:
    outs = replay(graph, args)
    return [o if isinstance(o, Tensor) else Tensor(np.asarray(o)) for o in outs]


def _run_primal(graph: Graph, pure: Pure,
                args: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
    """The primal (or forward) part of a transformed trace run on the flat arguments:
    (the function's outputs, the residuals kept for its linear part)."""
    res = _run(graph, args + pure.extra_inputs())
    n_out = len(pure.graph.outputs)
    return res[:n_out], res[n_out:]


def _transformed(pure: Pure, wrt: Sequence[int], name: str) -> Graph:
    j = pure.jvp if pure.jvp is not None else jvp_graph(pure.graph, wrt, name)
    dump("jvp", name, lambda: print_graph(j))
    return j


def check_primals(name: str, primals) -> list[Tensor]:
    """The flat primals as Tensors, after checking that each one is floating point."""
    flat, _ = _flat_primals(name, primals)
    for i, p in enumerate(flat):
        if not p.dtype.is_float:
            raise TypeError(f"{name}: primal {i} is {p.dtype.name}{list(p.shape)}; only "
                            f"floating-point primals have tangents (at {user_location()})")
    return flat


def check_tangents(name: str, primals, tangents) -> list[Tensor]:
    """The flat tangents as Tensors, after checking them against the primals: the same
    structure, and each one the shape and dtype of its (floating-point) primal."""
    flat_p, tree_p = _flat_primals(name, primals)
    if not isinstance(tangents, (tuple, list)):
        raise TypeError(f"{name}: tangents must be a tuple or list like primals, got "
                        f"{type(tangents).__name__} (at {user_location()})")
    flat_t, tree_t = tree_flatten(tuple(tangents))
    if tree_t != tree_p:
        raise ValueError(f"{name}: tangents must have the structure of primals ({len(flat_p)} "
                         f"leaves), got {len(flat_t)} leaves in another structure "
                         f"(at {user_location()})")
    return [_check_tangent(name, i, p, _leaf_tensor(t, name))
            for i, (p, t) in enumerate(zip(flat_p, flat_t))]


def jvp(fn: Callable, primals, tangents) -> tuple[Any, Any]:
    """(fn(*primals), the derivative of fn at primals in the direction tangents), as JAX's
    jax.jvp and torch.func.jvp: tangents has the structure of primals; the output tangent has
    the structure of the output (None for integer and bool outputs)."""
    name = f"jvp_{getattr(fn, '__name__', 'f')}"
    flat_p, tree_p = _flat_primals("jvp", primals)
    flat_t = check_tangents("jvp", primals, tangents)
    wrt = range(len(flat_p))
    e = cached("jvp", fn, flat_p, tree_p, name,
               lambda pure: {"j": _transformed(pure, wrt, name)}, dual_wrt=wrt)
    pure = e.pure
    res = _run(e.j, flat_p + pure.extra_inputs() + flat_t)
    n = len(pure.graph.outputs)
    outs = res[:n]
    return tree_unflatten(pure.out_tree, outs), _tangent_tree(pure.out_tree, outs, res[n:])


def linearize(fn: Callable, *primals) -> tuple[Any, Callable]:
    """(fn(*primals), f_jvp) where f_jvp(*tangents) is the derivative at primals applied to
    tangents. fn runs once here; f_jvp runs only the part of the JVP linear in the tangents,
    on the values (residuals) this call saved."""
    name = f"linearize_{getattr(fn, '__name__', 'f')}"
    flat_p, tree_p = _flat_primals("linearize", primals)
    check_primals("linearize", primals)
    wrt = range(len(flat_p))
    e = cached("linearize", fn, flat_p, tree_p, name,
               lambda pure: _linear_parts(pure, wrt, name), dual_wrt=wrt)
    pure, tangent_g = e.pure, e.tangent_g
    outs, residuals = _run_primal(e.primal_g, pure, flat_p)
    out_tree = pure.out_tree

    def f_jvp(*tangents):
        flat_t = check_tangents("linearize", primals, tangents)
        return _tangent_tree(out_tree, outs, _run(tangent_g, residuals + flat_t))
    f_jvp.__name__ = f"{name}_jvp"
    return tree_unflatten(out_tree, outs), f_jvp


def _linear_parts(pure: Pure, wrt, name: str) -> dict:
    """The JVP graph of a trace cut into its primal part and its part linear in the tangents."""
    j = _transformed(pure, wrt, name)
    primal_g, tangent_g, _ = linear_split(j, len(pure.graph.inputs), len(pure.graph.outputs))
    return {"primal_g": primal_g, "tangent_g": tangent_g}


def _argnums(argnums, n: int, what: str = "") -> tuple[int, ...]:
    nums = (argnums,) if isinstance(argnums, int) else tuple(argnums)
    for a in nums:
        if not -n <= a < n:
            raise ValueError(f"{what}{': ' if what else ''}argnums {argnums} out of range for "
                             f"{n} positional arguments (at {user_location()})")
    nums = tuple(a % n for a in nums)
    if len(set(nums)) != len(nums):     # one result per argnum: torch.func refuses repeats
        raise ValueError(f"{what}{': ' if what else ''}argnums elements must be unique, got "
                         f"{argnums} (at {user_location()})")
    return nums


__all__ = ["Pure", "trace_pure", "cached", "check_primals", "check_tangents", "jvp", "linearize"]
