"""The traced graph of grad / value_and_grad of a compiled function (what
`tj.grad(tj.compile(f))` compiles): the function is traced once, its reverse mode is built by
the IR transform (ir.autodiff.vjp_graph), and the graph's outputs are reordered into the
structure the transform returns (gradients, value, aux), followed by the traced function's
in-place updates."""
from __future__ import annotations

from typing import Callable

from ..devices import Device
from ..ir.autodiff import vjp_graph
from ..ir.printer import print_graph
from ..tracer import functional
from ..tracer.pytree import tree_flatten, tree_unflatten
from ..tracer.trace import Traced, trace
from ..debug import dump


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
    joint = vjp_graph(g, wrt, name, seed_first=True)
    dump("grad", name, lambda: print_graph(joint))
    n_out = len(g.outputs)
    grads = joint.outputs[n_out:]
    it = iter(range(len(grads)))
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
    order = []
    leaves, out_tree = tree_flatten(struct, leaf=lambda x: isinstance(x, tuple) and
                                    len(x) == 2 and x[0] in ("g", "v"))
    for tag, k in leaves:
        order.append(joint.outputs[n_out + k] if tag == "g" else joint.outputs[k])
    joint.outputs = order + joint.outputs[n_user:n_out]
    return Traced(joint, out_tree, base.captures, base.guards, base.n_random,
                  bindings=base.bindings, writes=base.writes,
                  write_counts=base.write_counts, grad_guards=base.grad_guards,
                  grad_sets=base.grad_sets, backward_ran=base.backward_ran,
                  escapes=base.escapes, attr_guards=base.attr_guards, checks=base.checks,
                  arg_writes=base.arg_writes)
