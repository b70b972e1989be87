"""The eager autograd engine: backward nodes recorded by ops, and an iterative walk over
them. Every node's `apply` runs VJP rules on Tensors, so with create_graph=True the backward
pass itself is recorded (higher-order gradients), and on traced tensors it emits IR."""
from __future__ import annotations

import gc
import weakref
from typing import Sequence

import numpy as np

from ..ir import dtypes as dt
from ..ir.core import Aval, Value, user_location
from .eager import Arr, quiet_call
from .node_names import node_name, scalar_overload
from .forward_ad import FWD, any_dual
from .state import STATE, set_grad_enabled
from .tensor_base import TensorBase as Tensor, _RemovableHandle


class SavedTensor:
    """A tensor saved for backward, with the version it had, checked when it is unpacked."""

    __slots__ = ("tensor", "version")

    def __init__(self, t: Tensor) -> None:
        self.tensor = t
        vc = t._vc                  # (no counter yet: version 0, see TensorBase._version)
        self.version = vc[0] if vc is not None else 0

    def unpack(self, node: "Node") -> Tensor:
        t = self.tensor
        now = t._vc[0] if t._vc is not None else 0
        if now != self.version:
            _modified(t._data, now, self.version, node)
        return t

    def data(self, node: "Node"):
        """The saved array (for the array backward), version-checked as unpack."""
        t = self.tensor
        now = t._vc[0] if t._vc is not None else 0
        if now != self.version:
            _modified(t._data, now, self.version, node)
        return t._data


class SavedOutput:
    """A node's own output saved for its backward: the array and its version counter, not the
    Tensor, whose grad_fn is the node (saving it would make a reference cycle that keeps the
    whole graph alive until the garbage collector runs). Unpacked, it is a Tensor again whose
    grad_fn is the node, so create_graph differentiates through it."""

    __slots__ = ("array", "counter", "version")

    def __init__(self, t: Tensor) -> None:
        self.array = t._data
        self.counter = t._version
        self.version = t._version[0]

    def data(self, node: "Node"):
        if self.counter[0] != self.version:
            _modified(self.array, self.counter[0], self.version, node)
        return self.array

    def unpack(self, node: "Node") -> Tensor:
        t = Tensor(self.data(node))
        t._version = self.counter
        t.grad_fn, t._requires_grad, t._out_idx = node, True, 0
        return t


def _modified(array, now: int, saved: int, node: "Node") -> None:
    dtype = dt.NP_TO_DTYPE.get(array.dtype, array.dtype)
    name = getattr(dtype, "name", str(dtype))
    raise RuntimeError(
        f"one of the variables needed for gradient computation has been modified by an "
        f"inplace operation: [{name}{list(array.shape)}] is at version {now}; expected "
        f"version {saved} instead. It was saved by {node.name()}.")


class Node:
    """A backward function of the graph (PyTorch's grad_fn)."""

    __slots__ = ("next_functions", "freed", "out_hooks", "retained", "__weakref__")

    n_outputs = 1
    fwd_loc: tuple | None = None     # (graph, file:line) of a traced forward op
    # whether apply reads values saved in forward, so that running it again after they were
    # freed is an error (the engine checks, before apply)
    keeps_saved = True
    _freed_msg = ("Trying to backward through the graph a second time (or directly access saved "
                  "tensors after they have already been freed). Saved intermediate values of the "
                  "graph are freed when you call .backward() or autograd.grad(). Specify "
                  "retain_graph=True if you need to backward through the graph a second time or "
                  "if you need to access saved tensors after calling backward.")

    def __init__(self, inputs: Sequence) -> None:
        edges = []
        for t in inputs:
            if isinstance(t, Tensor) and t._requires_grad:
                edges.append((t.grad_fn, t._out_idx) if t.grad_fn is not None
                             else (accumulate_node(t), 0))
            else:
                edges.append(_NO_EDGE)
        self.next_functions = tuple(edges)
        self.freed = False
        self.out_hooks: dict[int, list] | None = None   # tensor hooks per output index
        self.retained: dict[int, object] | None = None  # weakrefs of retain_grad tensors

    def name(self) -> str:
        return type(self).__name__

    def __repr__(self) -> str:
        return f"<{self.name()} object>"

    def apply(self, grads: list, create_graph: bool) -> list:
        raise NotImplementedError

    def release(self) -> None:
        self.freed = True


_NO_EDGE = (None, 0)
_NONES = [(None,) * n for n in range(8)]      # shared "nothing saved" tuples
_SAVES: dict = {}          # (prim, need) -> (inputs its VJP reads, whether it reads the output)


def _np_dtype(d) -> dt.DType:
    return d if type(d) is dt.DType else dt.NP_TO_DTYPE[d]


# ((shape, dtype) per input) -> that tuple of Avals, shared by the nodes of the general path
# (traced or GPU operands); bounded like eager's inference cache
_AVALS: dict = {}


def _avals_of(args) -> tuple:
    key = tuple([(a._data.shape, a._data.dtype) for a in args])
    hit = _AVALS.get(key)
    if hit is None:
        if len(_AVALS) >= 4096:
            _AVALS.clear()
        hit = _AVALS[key] = tuple([Aval(sh, _np_dtype(d)) for sh, d in key])
    return hit


class PrimNode(Node):
    """The backward of one primitive application: runs the primitive's VJP rule. It keeps
    only what the rule reads (prim.saves / prim.save_out for this `need`), and for the other
    inputs their shape and dtype."""

    __slots__ = ("prim", "params", "in_avals", "need", "saved", "saved_out", "keeps_saved",
                 "_name", "_scalar_arg", "fwd_loc")

    def __init__(self, prim, params, args, out: Tensor, in_avals: tuple | None = None) -> None:
        edges = []
        need = []
        for t in args:
            if t._requires_grad:
                gf = t.grad_fn
                edges.append((gf, t._out_idx) if gf is not None else (accumulate_node(t), 0))
                need.append(True)
            else:
                edges.append(_NO_EDGE)
                need.append(False)
        self.next_functions = tuple(edges)
        self.freed = False
        self.out_hooks = None
        self.retained = None
        self.prim, self.params = prim, params
        need = tuple(need)
        sv = _SAVES.get((prim, need))
        if sv is None:          # (one `need` tuple per pattern is kept: fewer objects to track)
            sv = _SAVES[(prim, need)] = (need, *prim.saved_for(need))
        self.need, saves, save_out = sv
        # every input's Aval, for the rule (inputs it does not save) and the node's name: the
        # eager path passes the tuple its inference cache shares between applications
        self.in_avals = in_avals if in_avals is not None else _avals_of(args)
        traced = type(out._data) is Value
        self.fwd_loc = (out._data.graph, out._data.producer.loc) if traced else None
        self.saved = tuple([SavedTensor(a) if i in saves else None for i, a in enumerate(args)]) \
            if saves else _NONES[len(args)] if len(args) < 8 else (None,) * len(args)
        if not save_out:
            self.saved_out = None
        else:   # traced outputs are short-lived: the trace's Tensor itself is kept
            # (with dual tensors live, the Tensor itself, which carries the output's tangent)
            self.saved_out = SavedTensor(out) if traced or FWD.levels else SavedOutput(out)
        # a node that keeps nothing alive can run again after backward, as in PyTorch
        self.keeps_saved = bool(saves) or save_out
        self._name = None
        self._scalar_arg: int | None = None

    @classmethod
    def record(cls, prim, params, args, out: Tensor, in_avals: tuple | None = None) -> None:
        out.grad_fn = cls(prim, params, args, out, in_avals)
        out._requires_grad = True
        out._out_idx = 0

    def scalar_operand(self, i: int) -> None:
        """Operand i was a Python number. Where PyTorch has a Scalar overload for it (5 - t,
        t ** 2, 2 ** t), the node takes that overload's name and has no edge for the number."""
        name = scalar_overload(self.prim.name, i)
        if name is None:
            return
        self._name = name
        self._scalar_arg = i
        self.next_functions = tuple(e for k, e in enumerate(self.next_functions) if k != i)

    def _avals(self) -> list[Aval]:
        return list(self.in_avals)

    def name(self) -> str:
        if self._name is None:
            self._name = node_name(self.prim.name, self.params, self._avals(), self.need)
        return self._name

    def apply(self, grads, create_graph):
        ins = [s.unpack(self) if s is not None else av
               for s, av in zip(self.saved, self.in_avals)]
        out = self.saved_out.unpack(self) if self.saved_out is not None else None
        return self._results(self.prim.vjp(grads[0], ins, out, self.params, self.need))

    def apply_arrays(self, g: Arr) -> list:
        """The VJP rule run directly on arrays (a backward that records nothing)."""
        ins = [Arr(s.data(self)) if s is not None else av
               for s, av in zip(self.saved, self.in_avals)]
        so = self.saved_out
        need = self.need
        res = self.prim.vjp(g, ins, Arr(so.data(self)) if so is not None else None,
                            self.params, need)
        res = [r if n else None for r, n in zip(res, need)]
        if self._scalar_arg is not None:
            del res[self._scalar_arg]
        return res

    def _results(self, res) -> list:
        res = [r if n else None for r, n in zip(res, self.need)]
        if self._scalar_arg is not None:
            del res[self._scalar_arg]
        return res

    def release(self) -> None:
        self.freed = True
        n = len(self.saved)
        self.saved = _NONES[n] if n < 8 else (None,) * n
        self.saved_out = None


class AccumulateGrad(Node):
    keeps_saved = False

    def __init__(self, variable: Tensor) -> None:
        super().__init__(())
        self.variable = variable
        # register_post_accumulate_grad_hook: fn(tensor) after .grad is updated (DDP's
        # "this gradient is ready" signal)
        self.post_hooks: list | None = None

    def apply(self, grads, create_graph):
        return []


def accumulate_node(t: Tensor) -> AccumulateGrad:
    """t's AccumulateGrad node. As in PyTorch, the node holds the tensor and the tensor only a
    weak reference to the node: a strong one both ways was a reference cycle, which made every
    leaf of every graph (and its arrays) garbage for the cycle collector instead of freed by
    reference counting. A node with post-accumulate hooks is held strongly (its hooks must
    outlive the graphs), as is one a trace's stand-in leaf shares (trace.grad_leaf)."""
    a = t._accum
    if a is not None:
        node = a() if type(a) is weakref.ref else a
        if node is not None:
            return node
    node = AccumulateGrad(t)
    t._accum = weakref.ref(node)
    return node


def _accumulate_leaf(t: Tensor, g: Tensor, create_graph: bool) -> None:
    if g.shape != t.shape:
        raise RuntimeError(f"gradient of shape {list(g.shape)} does not match leaf of shape "
                           f"{list(t.shape)}")
    captured = t._captured()
    if captured:                     # inside a trace: see grad_slots.py
        STATE.traces[-1].grad_slots.note(t)
    if t._grad is None:
        # a traced value is immutable: a Tensor of its own is enough (in-place ops on it
        # rebind that Tensor only)
        t._grad = g if create_graph else Tensor(g._data if g._traced else g._data.copy())
        if captured:
            STATE.traces[-1].grad_slots.assigned(t)
    elif g._traced and not create_graph and t._grad._captured():
        with set_grad_enabled(False):  # the existing .grad updated in place, as eagerly: a
            t._grad.add_(g)            # write of that tensor, stored after each call
    elif create_graph or t._grad._traced or g._traced:
        t._grad = t._grad + g
    elif FWD.levels and any_dual([g]):
        with set_grad_enabled(False):   # in place, as PyTorch: .grad takes the sum's tangent
            t._grad.add_(g)
    else:
        np.add(t._grad._data, g._data, out=t._grad._data, casting="unsafe")


# -- the engine ---------------------------------------------------------------------------------
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
    seen = set(roots)
    stack = list(seen)
    while stack:
        for nxt, _ in stack.pop().next_functions:
            if nxt is not None:
                deps[nxt] = deps.get(nxt, 0) + 1
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append(nxt)
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
            from ..ir.primitives import full_like
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
    try:
        with set_grad_enabled(create_graph):
            while ready:
                node = ready.pop()
                if fast and type(node) is PrimNode and not node.out_hooks and not node.retained:
                    # a primitive's node with no hooks and no retain_grad: what the general
                    # branch below does for it, without the checks that cannot apply
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
                    results = node.apply_arrays(g if type(g) is Arr else Arr(g._data))
                    if not retain_graph:
                        node.release()
                    for (nxt, idx), r in zip(nexts, results):
                        if nxt is None:
                            continue
                        if r is not None:
                            b = buffers.get(nxt)
                            if b is None:
                                b = buffers[nxt] = [None] * nxt.n_outputs
                            b[idx] = r if b[idx] is None else _sum(b[idx], r)
                        deps[nxt] -= 1
                        if deps[nxt] == 0:
                            ready.append(nxt)
                    continue
                grads = buffers.pop(node, None) or [None] * node.n_outputs
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
                        _accumulate_leaf(t, _run_hooks(t._hooks, _tensor(g)), create_graph)
                        for hook in list(node.post_hooks or ()):
                            hook(t)
                    continue
                if runs is not None and id(node) not in runs:
                    continue            # an input of autograd.grad whose own inputs are not wanted
                if grads[0] is None and all(g is None for g in grads):
                    results = [None] * len(node.next_functions)
                else:
                    if lean and type(node) is PrimNode:
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
                        buf[idx] = g if buf[idx] is None else _sum(buf[idx], g)
                    deps[nxt] -= 1
                    if deps[nxt] == 0:
                        ready.append(nxt)
    finally:
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
                from ..ir.primitives import zeros_like
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
    node = t._accum = accumulate_node(t)      # held strongly from now on: see accumulate_node
    if node.post_hooks is None:
        node.post_hooks = []
    node.post_hooks.append(hook)
    return _RemovableHandle(node.post_hooks, hook)
