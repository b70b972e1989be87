"""The eager autograd engine: an iterative walk over the backward graph (backward_nodes.py)
that runs each node once its gradients are summed; backward(), autograd.grad(), hooks and
queue_callback."""
from __future__ import annotations

import gc
from typing import Sequence

import numpy as np

from ..ir.core import user_location
from ..ir.primitives import P, full_like, zeros_like
from .backward_nodes import AccumulateGrad, Node, PrimNode, _accumulate_leaf, accumulate_node
from .eager import _ERR_VAR, _IGNORE, Arr, SharedAvals, quiet_call
from .forward_ad import FWD
from .grad_buffers import Owned, add_into, slice_into
from .state import STATE, engine_grad_mode
from .tensor_base import TensorBase as Tensor, _RemovableHandle


_SLICE = P.slice
_NDARRAY = np.ndarray


def _walk(roots: list[Node]) -> tuple[list[Node], dict[Node, int]]:
    """Post-order of all nodes reachable from roots, and each node's number of consumers."""
    order: list[Node] = []
    deps: dict[Node, int] = {}
    seen: set[int] = set()
    stack = [(r, False) for r in roots]
    while stack:
        node, done = stack.pop()
        if done:
            order.append(node)
            continue
        if id(node) in seen:
            continue
        seen.add(id(node))
        stack.append((node, True))
        for nxt, _ in node.next_functions:
            if nxt is not None:
                deps[nxt] = deps.get(nxt, 0) + 1
                if id(nxt) not in seen:
                    stack.append((nxt, False))
    return order, deps


def _deps(roots: list[Node]) -> dict[Node, int]:
    """Each node's number of consumers among the nodes reachable from roots (what _walk gives
    without the post-order, which only autograd.grad's pruning needs)."""
    deps: dict[Node, int] = {}
    get = deps.get
    # a node is walked when its first edge enters it in deps (one dict lookup per edge, no
    # set of seen nodes); a root is walked from the start, so an edge into it does not again
    firsts = set(roots)
    stack = list(firsts)
    while stack:
        for nxt, _ in stack.pop().next_functions:
            if nxt is not None:
                c = get(nxt)
                if c is None:
                    deps[nxt] = 1
                    if nxt not in firsts:
                        stack.append(nxt)
                else:
                    deps[nxt] = c + 1
    return deps


def _prune(order: list[Node], target_nodes: set[int]) -> tuple[set[int], set[int]]:
    """(the nodes on a path to a target, the nodes among them to execute), as node ids.

    Like PyTorch's engine, autograd.grad and backward(inputs=...) run, and free, only the nodes
    with a target below them; a target's own node runs only when another target is below it.
    So grad(f, x) then grad(f, z) works when the two paths share no node that saved values."""
    reach: set[int] = set()
    runs: set[int] = set()
    for node in order:                   # post-order: a node's inputs come before it
        if any(n is not None and id(n) in reach for n, _ in node.next_functions):
            runs.add(id(node))
            reach.add(id(node))
        elif id(node) in target_nodes:
            reach.add(id(node))
    return reach, runs


def _apply(node: Node, grads: list, create_graph: bool) -> list:
    """node.apply; while tracing, the IR it emits carries the forward op's file:line (as the
    reverse-mode IR transform does), not the line of the call that started the trace."""
    if node.freed and node.keeps_saved:
        raise RuntimeError(Node._freed_msg)
    if node.fwd_loc is None:
        return node.apply(grads, create_graph)
    graph, loc = node.fwd_loc
    prev = graph.loc_override
    graph.loc_override = loc
    try:
        return node.apply(grads, create_graph)
    finally:
        graph.loc_override = prev


def _tensor(g):
    """A gradient as the Tensor users and non-primitive nodes see."""
    return Tensor(g._data) if type(g) is Arr else g


def _arr(g) -> Arr:
    return g if type(g) is Arr else Arr(g._data)


def _sum(a, b):
    """Two gradients of one value added (never in place: a rule may pass one array on to
    several inputs)."""
    if type(a) is Arr and type(b) is Arr:
        return Arr(quiet_call(np.add, a._data, b._data))
    return _tensor(a) + _tensor(b)


def _run_hooks(hooks, g):
    for h in list(hooks or ()):
        r = h(g)
        if r is not None:
            g = r
    return g


def _make_grad(t: Tensor, g) -> Tensor:
    if g is None:
        if t.numel() != 1:
            raise RuntimeError(f"grad can be implicitly created only for scalar outputs; "
                               f"got an output of shape {list(t.shape)} (at {user_location()}). "
                               f"Pass gradient= (or grad_outputs=) explicitly.")
        if t._traced:
            return full_like(t, 1.0)
        return Tensor(np.ones_like(t._data))     # on t's device
    g = g if isinstance(g, Tensor) else Tensor(np.asarray(g, dtype=t.dtype.np))
    if g.shape != t.shape:
        raise RuntimeError(f"Mismatch in shape: grad_output has shape {list(g.shape)} and "
                           f"output has shape {list(t.shape)}")
    return g


def run_backward(outputs: Sequence[Tensor], grad_outputs, retain_graph: bool,
                 create_graph: bool, inputs: Sequence[Tensor] | None = None,
                 accumulate: bool = True) -> dict:
    """Propagate gradients from `outputs`. With `inputs`, return {id(input): grad} for them
    (and only run the part of the graph that leads to them); with `accumulate`, leaves'
    `.grad` is updated."""
    roots, buffers = [], {}
    for i, t in enumerate(outputs):
        if not t._requires_grad:
            raise RuntimeError(f"element {i} of tensors does not require grad and does not have a "
                               f"grad_fn (at {user_location()})")
        g = _make_grad(t, None if grad_outputs is None else grad_outputs[i])
        node = t.grad_fn if t.grad_fn is not None else accumulate_node(t)
        if node is None:        # (a view requiring grad through its base alone, as torch)
            raise RuntimeError(f"element {i} of tensors does not require grad and does not have "
                               f"a grad_fn (at {user_location()})")
        idx = t._out_idx if t.grad_fn is not None else 0
        roots.append(node)
        buf = buffers.setdefault(node, [None] * node.n_outputs)
        buf[idx] = g if buf[idx] is None else buf[idx] + g
    targets: dict[tuple[int, int], Tensor] = {}
    runs = None                 # the nodes to execute; None: all of them
    if inputs is None:
        deps = _deps(roots)
    else:
        order, deps = _walk(roots)
        for t in inputs:
            node = t.grad_fn if t.grad_fn is not None else accumulate_node(t)
            targets[(id(node), t._out_idx if t.grad_fn is not None else 0)] = t
        reach, runs = _prune(order, {k[0] for k in targets})
        deps = {}
        for node in order:
            if id(node) in runs:
                for nxt, _ in node.next_functions:
                    if nxt is not None and id(nxt) in reach:
                        deps[nxt] = deps.get(nxt, 0) + 1
        roots = [r for r in roots if id(r) in reach]
    captured: dict[int, Tensor] = {}

    ready = [n for n in dict.fromkeys(roots) if deps.get(n, 0) == 0]
    # Without create_graph (and outside traces) nothing is recorded: primitive nodes run their
    # VJP rules straight on arrays (Arr), and gradients become Tensors only where the user can
    # see them (hooks, retain_grad, .grad, autograd.grad's results) or a node needs them.
    # (with forward-AD levels open the rules run on Tensors too: the dual tensors they read
    # give the gradients tangents, as PyTorch's forward_ad does through backward)
    lean = not create_graph and not STATE.traces and not FWD.levels
    # The pass allocates and frees many small objects, all by reference counting (a saved
    # output makes no cycle): a full collection of the whole program's objects that one of
    # those allocations triggers would cost more than the pass itself (PyTorch's engine
    # allocates no Python objects); the collector runs again as usual afterwards.
    pause_gc = lean and gc.isenabled()
    # a plain backward(): no targets, so most nodes take the short branch below
    fast = lean and not targets
    if pause_gc:
        gc.disable()
    _PASSES.append((deps, buffers, accumulate))
    # NumPy's floating-point errors are ignored while nodes of the branch below run in a row
    # (each of their ops ignores them anyway: VJP plans, buffer sums and slices only check the
    # mode then, where switching it per op cost as much as a small ufunc); user code (hooks,
    # custom Functions: the general branch) runs under the user's mode. The switch's token:
    quiet = None
    try:
        with engine_grad_mode(create_graph):
            while ready:
                node = ready.pop()
                if fast and not node.out_hooks and not node.retained and \
                        (apply_arrays := node.apply_arrays) is not None:
                    # a node that runs on arrays (a primitive's, a fused composite's, ...) with
                    # no hooks and no retain_grad: what the general branch below does for it,
                    # without the checks that cannot apply (the bound method looked up once)
                    if quiet is None and _ERR_VAR is not None:
                        quiet = _ERR_VAR.set(_IGNORE)
                    buf = buffers.pop(node, None)
                    g = buf[0] if buf is not None else None
                    nexts = node.next_functions
                    if g is None:           # no gradient reached it: its inputs get none
                        for nxt, _ in nexts:
                            if nxt is not None:
                                deps[nxt] -= 1
                                if deps[nxt] == 0:
                                    ready.append(nxt)
                        continue
                    if node.freed and node.keeps_saved:
                        raise RuntimeError(Node._freed_msg)
                    # the gradient's array: a VJP plan's result as it is, an Owned sum's (the
                    # node's from now on), an Arr's or a Tensor's
                    gd = g if type(g) is _NDARRAY else g._data
                    results = None
                    if type(node) is PrimNode:
                        if node.prim is _SLICE and type(gd) is _NDARRAY and \
                                slice_into(buffers, node, gd):
                            # its gradient added into its region of the input's buffer (a
                            # slice keeps nothing: nothing to release)
                            nxt = nexts[0][0]
                            deps[nxt] -= 1
                            if deps[nxt] == 0:
                                ready.append(nxt)
                            continue
                        # its recorded VJP plan called here (PrimNode.apply_arrays' first
                        # branch without its frame): the results stay arrays, no Arr each
                        avals = node.in_avals
                        if type(avals) is SharedAvals:
                            plan = avals.plans.get(node.need)
                            if plan is not None:
                                results = plan.run(node, gd)
                                if results is not None and node._scalar_arg is not None:
                                    del results[node._scalar_arg]
                    if results is None:
                        results = apply_arrays(g if type(g) is Arr else Arr(gd))
                    if not retain_graph and node.keeps_saved:
                        node.release()      # (a node that keeps nothing can run again anyway)
                    for (nxt, idx), r in zip(nexts, results):
                        if nxt is None:
                            continue
                        if r is not None:
                            b = buffers.get(nxt)
                            if b is None:
                                b = buffers[nxt] = [None] * nxt.n_outputs
                                b[idx] = r
                            elif b[idx] is None:
                                b[idx] = r
                            else:
                                add_into(b, idx, r, _sum)
                        deps[nxt] = left = deps[nxt] - 1
                        if not left:
                            ready.append(nxt)
                    continue
                if quiet is not None:
                    _ERR_VAR.reset(quiet)
                    quiet = None
                grads = buffers.pop(node, None)
                owned = False           # whether grads[0] is a sum only this pass held
                if grads is None:
                    grads = [None] * node.n_outputs
                elif lean:
                    for i, g in enumerate(grads):
                        if type(g) is Owned:
                            grads[i] = Arr(g._data)
                            owned = owned or i == 0
                        elif type(g) is _NDARRAY:   # (a VJP plan's result, see above)
                            grads[i] = Arr(g)
                if node.out_hooks:
                    grads = [_run_hooks(node.out_hooks.get(i), _tensor(g)) if g is not None else g
                             for i, g in enumerate(grads)]
                if node.retained:
                    for i, g in enumerate(grads):
                        ref = node.retained.get(i)
                        t = ref() if ref is not None else None
                        if t is not None and g is not None:
                            g = _tensor(g)
                            t._grad = g if t._grad is None else t._grad + g
                for i, g in enumerate(grads) if targets else ():
                    key = (id(node), i)
                    if key in targets and g is not None:
                        t = targets[key]
                        g = _tensor(g)
                        if isinstance(node, AccumulateGrad):
                            g = _run_hooks(t._hooks, g)
                        captured[id(t)] = g if id(t) not in captured else captured[id(t)] + g
                if isinstance(node, AccumulateGrad):
                    t = node.variable
                    g = grads[0]
                    if g is not None and accumulate:
                        # an Owned sum becomes .grad itself, where another term is copied
                        # (unless a hook saw it: the hook may keep its argument)
                        _accumulate_leaf(t, _run_hooks(t._hooks, _tensor(g)), create_graph,
                                         own=owned and not t._hooks and not targets)
                        for hook in list(node.post_hooks or ()):
                            hook(t)
                    continue
                if runs is not None and id(node) not in runs:
                    continue            # an input of autograd.grad whose own inputs are not wanted
                if grads[0] is None and all(g is None for g in grads):
                    results = [None] * len(node.next_functions)
                else:
                    if lean and node.apply_arrays is not None:
                        if node.freed and node.keeps_saved:
                            raise RuntimeError(Node._freed_msg)
                        results = node.apply_arrays(_arr(grads[0]))
                    else:
                        results = _apply(node, [_tensor(g) for g in grads], create_graph)
                    if not retain_graph:
                        node.release()
                for (nxt, idx), g in zip(node.next_functions, results):
                    if nxt is None or (runs is not None and id(nxt) not in reach):
                        continue
                    if g is not None:
                        buf = buffers.get(nxt)
                        if buf is None:
                            buf = buffers[nxt] = [None] * nxt.n_outputs
                        if buf[idx] is None:
                            buf[idx] = g
                        elif lean:
                            add_into(buf, idx, g, _sum)
                        else:
                            buf[idx] = _sum(buf[idx], g)
                    deps[nxt] -= 1
                    if deps[nxt] == 0:
                        ready.append(nxt)
    finally:
        if quiet is not None:
            _ERR_VAR.reset(quiet)
        _PASSES.pop()
        if pause_gc:
            gc.enable()
    return captured


def backward(tensors: Sequence[Tensor], grad_tensors=None, retain_graph=None,
             create_graph: bool = False, inputs=None) -> None:
    retain = create_graph if retain_graph is None else retain_graph
    if STATE.traces and any(t._traced for t in tensors):
        STATE.traces[-1].backward_ran = True
    if inputs is not None:
        inputs = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
        caps = run_backward(tensors, grad_tensors, retain, create_graph, inputs, accumulate=False)
        for t in inputs:
            if id(t) in caps:
                if t.is_leaf:
                    _accumulate_leaf(t, caps[id(t)], create_graph)
                else:
                    t._grad = caps[id(t)]
        return
    frame: list = []                 # queue_callback's list for this backward pass
    _FINAL_CALLBACKS.append(frame)
    try:
        run_backward(tensors, grad_tensors, retain, create_graph)
    finally:
        _FINAL_CALLBACKS.pop()
    while frame:                     # a callback may queue another, as in PyTorch
        frame.pop(0)()


_FINAL_CALLBACKS: list[list] = []


def queue_callback(fn) -> None:
    """Run fn() once the running backward() pass has finished (PyTorch's
    Variable._execution_engine.queue_callback): DDP finishes its gradient reduction there."""
    if not _FINAL_CALLBACKS:
        raise RuntimeError("queue_callback() can only be called while backward() is running "
                           "(from a hook)")
    _FINAL_CALLBACKS[-1].append(fn)


# the passes of run_backward running (innermost last): (deps, buffers, accumulate), for
# gradient_only_from_running_node
_PASSES: list[tuple] = []


def gradient_only_from_running_node(t: Tensor) -> bool:
    """Whether leaf t's gradient in the innermost pass (one that accumulates into `.grad`)
    comes from the node running now alone: nothing reached t yet and that node's edge is the
    only one left. DDP averages a compiled backward's gradients inside it only then: a term
    from elsewhere (`loss + (w ** 2).sum()`) would be added to the average unaveraged."""
    if not _PASSES:
        return False
    deps, buffers, accumulate = _PASSES[-1]
    node = accumulate_node(t)
    return accumulate and deps.get(node, 0) == 1 and node not in buffers


def in_backward_pass() -> bool:
    """Whether a `backward()` pass that updates leaves' `.grad` is running (not
    `autograd.grad`): DDP averages gradients inside a compiled backward only then."""
    return bool(_FINAL_CALLBACKS)


def grad(outputs, inputs, grad_outputs=None, retain_graph=None, create_graph: bool = False,
         allow_unused: bool = False, materialize_grads: bool = False):
    """Gradients of `outputs` with respect to `inputs`, without touching `.grad`."""
    single = isinstance(inputs, Tensor)
    outputs = [outputs] if isinstance(outputs, Tensor) else list(outputs)
    inputs = [inputs] if single else list(inputs)
    if grad_outputs is not None:
        grad_outputs = [grad_outputs] if isinstance(grad_outputs, Tensor) else list(grad_outputs)
    for t in inputs:
        if not t._requires_grad:
            raise RuntimeError(f"One of the differentiated Tensors does not require grad "
                               f"(at {user_location()})")
    retain = create_graph if retain_graph is None else retain_graph
    caps = run_backward(outputs, grad_outputs, retain, create_graph, inputs, accumulate=False)
    res = []
    for i, t in enumerate(inputs):
        g = caps.get(id(t))
        if g is None:
            if materialize_grads:
                g = zeros_like(t.detach())
            elif not allow_unused:
                raise RuntimeError(f"One of the differentiated Tensors (input {i}, "
                                   f"{t.dtype.name}{list(t.shape)}) appears to not have been used "
                                   f"in the graph. Set allow_unused=True if this is the desired "
                                   f"behavior.")
        res.append(g)
    return tuple(res)



def register_post_accumulate_grad_hook(t: Tensor, hook):
    """PyTorch's Tensor.register_post_accumulate_grad_hook: hook(t) runs after backward() has
    accumulated into the leaf t's `.grad` (it sees the updated `.grad`; its result is ignored).
    Returns a handle with `.remove()`."""
    if not t._requires_grad or t.grad_fn is not None:
        raise RuntimeError("post accumulate grad hooks cannot be registered on non-leaf tensors "
                           "or on tensors that do not require grad")
    node = accumulate_node(t)
    if node is None:            # a view requiring grad through its base alone: no gradient
        return _RemovableHandle([hook], hook)
    t._accum = node             # held strongly from now on: see accumulate_node
    if node.post_hooks is None:
        node.post_hooks = []
    node.post_hooks.append(hook)
    return _RemovableHandle(node.post_hooks, hook)
