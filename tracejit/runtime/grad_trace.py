"""The traced graph of grad / value_and_grad of a compiled function (what
`tj.grad(tj.compile(f))` compiles): the function is traced once, its reverse mode is built by
the IR transform (ir.autodiff.vjp_graph), and the graph's outputs are reordered into the
structure the transform returns (gradients, value, aux), followed by the traced function's
in-place updates.

The reverse-mode graph is built only when something needs its instructions. The traced graph
is first an empty shell with the joint graph's inputs and output types (all a call needs to
bind arguments and results), and a JointBuild that fills it in place. The executable's disk
cache (runtime/exe_cache.py) keys it by the primal graph's exact text and the transform (what
is differentiated, how the outputs are ordered), which decide the joint graph, so a new
process whose cache holds the executable skips the transform and its optimization too."""
from __future__ import annotations

import threading
from typing import Callable

from ..devices import Device
from ..ir.autodiff import vjp_graph
from ..ir.core import Graph, Value
from ..ir.printer import print_graph
from ..tracer import functional
from ..tracer.pytree import tree_flatten, tree_unflatten
from ..tracer.trace import Traced, trace
from ..debug import dump
from . import exe_cache
from .backend import PendingPasses


class JointBuild:
    """Builds the joint graph of a traced primal graph into `shell` (an empty graph with the
    joint graph's inputs and placeholder outputs of its output types), once, thread safe."""

    def __init__(self, primal: Graph, wrt: list[int], order: list[int], shell: Graph) -> None:
        self.primal, self.wrt, self.order, self.shell = primal, wrt, order, shell
        self._lock = threading.Lock()
        self.built = False

    def key_text(self) -> str | None:
        """An exact text of the joint graph this builds (None: the primal has none): the
        primal graph's text (runtime/exe_cache.graph_text) and the transform's spec."""
        text = exe_cache.graph_text(self.primal)
        if text is None:
            return None
        return f"vjp seed_first {self.shell.name!r} wrt={self.wrt} order={self.order}\n{text}"

    def __call__(self, graph: Graph | None = None) -> Graph:
        shell = self.shell
        assert graph is None or graph is shell
        if not self.built:
            with self._lock:
                if not self.built:
                    avals = [(v.shape, v.dtype) for v in shell.outputs]
                    j = vjp_graph(self.primal, self.wrt, shell.name, seed_first=True, into=shell)
                    j.outputs = [j.outputs[k] for k in self.order]
                    if [(v.shape, v.dtype) for v in j.outputs] != avals:
                        raise RuntimeError(f"{shell.name}: internal error: the reverse-mode "
                                           f"graph's outputs are not of the types expected")
                    self.built = True
        return shell


def pending_passes(traced: Traced, standard: Callable[[Graph], Graph]) -> PendingPasses:
    """The passes a traced graph still needs: `standard` (optimization, verification), after
    building its joint graph first when it is a trace_grad shell."""
    build = getattr(traced, "joint_build", None)
    if build is None:
        return PendingPasses(traced.graph, standard)
    return PendingPasses(traced.graph, lambda g: standard(build(g)), text=build.key_text)


def trace_grad(fn: Callable, args, kwargs, static, name: str, device: Device, kind: str,
               argnums, has_aux: bool) -> Traced:
    """The graph of `kind` ("grad" or "value_and_grad") of fn w.r.t. positional `argnums`,
    traced at these arguments; `name` names the compiled function in errors."""
    base = trace(fn, args, kwargs, static, name, device)
    g = base.graph
    nums = functional._argnums(argnums, len(args), name)
    dyn_pos = [i for i in range(len(args)) if i not in static]
    if any(i in static for i in nums):
        raise ValueError(f"{name}: cannot differentiate with respect to a static argument")
    # flat input ranges of each positional argument
    starts, off = {}, 0
    for i in dyn_pos:
        n = len(tree_flatten(args[i])[0])
        starts[i] = (off, n, tree_flatten(args[i])[1])
        off += n
    wrt = [j for i in nums for j in range(starts[i][0], starts[i][0] + starts[i][1])]
    for j in wrt:
        if not g.inputs[j].dtype.is_float:
            raise TypeError(f"{name}: differentiated arguments must be floating point, "
                            f"got {g.inputs[j].aval}")
    n_user = len(g.outputs) - base.n_extra     # then in-place updates and new .grads
    out_leaves = g.outputs[:n_user]
    loss = out_leaves[0] if out_leaves else None
    if loss is None or loss.aval.size != 1 or not loss.dtype.is_float or \
            (not has_aux and len(out_leaves) != 1):
        raise TypeError(f"{name}: the function must return a scalar float Tensor"
                        + (" (and aux)" if has_aux else "")
                        + f", got {[str(v.aval) for v in out_leaves]}")
    n_out = len(g.outputs)
    it = iter(range(len(wrt)))
    grad_trees = [tree_unflatten(starts[i][2], [("g", next(it)) for _ in range(starts[i][1])])
                  for i in nums]
    gtree = grad_trees[0] if isinstance(argnums, int) else tuple(grad_trees)
    value = ("v", 0)
    if has_aux:
        aux = tree_unflatten(base.out_tree, [("v", k) for k in range(n_user)])[1]
        value = (value, aux)
    struct = (gtree if kind == "grad" else (value, gtree))
    if kind == "grad" and has_aux:
        struct = (gtree, value[1])
    leaves, out_tree = tree_flatten(struct, leaf=lambda x: isinstance(x, tuple) and
                                    len(x) == 2 and x[0] in ("g", "v"))
    # the joint graph's outputs (the primal's, then the gradients) in the transform's order,
    # then the traced function's in-place updates
    order = [n_out + k if tag == "g" else k for tag, k in leaves] + list(range(n_user, n_out))
    shell = Graph(name)
    for v in g.inputs:
        shell.add_input(v.aval, v.name)
    avals = [v.aval for v in g.outputs] + [g.inputs[j].aval for j in wrt]
    shell.outputs = [Value(avals[k], shell) for k in order]
    build = JointBuild(g, wrt, order, shell)
    dump("grad", name, lambda: print_graph(build()))
    traced = Traced(shell, out_tree, base.captures, base.guards, base.n_random,
                  bindings=base.bindings, consts=base.consts, writes=base.writes,
                  write_counts=base.write_counts, grad_guards=base.grad_guards,
                  grad_sets=base.grad_sets, backward_ran=base.backward_ran,
                  escapes=base.escapes, attr_guards=base.attr_guards, checks=base.checks,
                  arg_writes=base.arg_writes, slots=base.slots)
    traced.joint_build = build
    return traced
