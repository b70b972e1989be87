"""The backward graph that ops record: Node (PyTorch's grad_fn), PrimNode (one primitive's VJP
rule), AccumulateGrad (a leaf's .grad), and the tensors nodes save with their versions. Every
node's `apply` runs VJP rules on Tensors, so with create_graph=True the backward pass itself is
recorded (higher-order gradients), and on traced tensors it emits IR. The walk over the graph
is autograd.py's."""
from __future__ import annotations

import weakref
from typing import Sequence

import numpy as np

from ..ir import dtypes as dt
from ..ir.core import Aval, Value
from . import vjp_plans
from .eager import Arr, SharedAvals, quiet_call
from .node_names import node_name, scalar_overload
from .forward_ad import FWD, any_dual
from .state import STATE, set_grad_enabled
from .tensor_base import TensorBase as Tensor


_new = object.__new__


class SavedTensor:
    """A tensor saved for backward, with the version it had, checked when it is unpacked."""

    __slots__ = ("tensor", "version")

    def __init__(self, t: Tensor) -> None:
        self.tensor = t
        vc = t._vc                  # (no counter yet: version 0, see TensorBase._version)
        self.version = vc[0] if vc is not None else 0

    def unpack(self, node: "Node") -> Tensor:
        return check_saved(self.tensor, self.version, node)

    def data(self, node: "Node"):
        """The saved array (for the array backward), version-checked as unpack."""
        return check_saved(self.tensor, self.version, node)._data


def check_saved(t: Tensor, version: int, node: "Node") -> Tensor:
    """t, saved for node's backward at `version`: torch's error if it changed in place since."""
    vc = t._vc                      # (no counter yet: version 0, see TensorBase._version)
    now = vc[0] if vc is not None else 0
    if now != version:
        _modified(t._data, now, version, node)
    return t


class SavedOutput:
    """A node's own output saved for its backward: the array and its version counter, not the
    Tensor, whose grad_fn is the node (saving it would make a reference cycle that keeps the
    whole graph alive until the garbage collector runs). Unpacked, it is a Tensor again whose
    grad_fn is the node, so create_graph differentiates through it. Made by `saved_output`."""

    __slots__ = ("array", "counter", "version")

    def data(self, node: "Node"):
        if self.counter[0] != self.version:
            _modified(self.array, self.counter[0], self.version, node)
        return self.array

    def unpack(self, node: "Node") -> Tensor:
        t = Tensor(self.data(node))
        t._version = self.counter
        t.grad_fn, t._requires_grad, t._out_idx = node, True, 0
        return t


def saved_output(t: Tensor) -> SavedOutput:
    """SavedOutput(t) without a class call's __init__ (one per node that saves its output)."""
    s = _new(SavedOutput)
    s.array = t._data
    vc = s.counter = t._version
    s.version = vc[0]
    return s


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

    # apply_arrays(g: Arr) -> list: the node's backward in a pass that records nothing, for
    # the gradient of its one output as an array; None for nodes whose `apply` needs Tensors
    # (user code: custom Functions, hooks), which the engine then gives Tensors
    apply_arrays = None

    def release(self) -> None:
        self.freed = True


_NO_EDGE = (None, 0)
_NEED_1, _NO_NEED_1 = (True,), (False,)       # a unary op's `need` patterns
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
    inputs their shape and dtype. Made by `prim_node` (there is no __init__).

    `saved` holds, per input, the input tensor itself where the rule reads it (None
    elsewhere), and `versions` the version each saved tensor had when the node was recorded
    (None when nothing is saved): a tensor saved with no version counter yet was at 0. The
    version is checked when the value is read (`saved_data`), as torch's SavedVariable. A
    SavedTensor object per saved input was one more object per operand to allocate, count
    for the garbage collector and free."""

    __slots__ = ("prim", "params", "in_avals", "need", "saved", "versions", "saved_out",
                 "keeps_saved", "_name", "_scalar_arg", "fwd_loc")

    @classmethod
    def record(cls, prim, params, args, out: Tensor, in_avals: tuple | None = None) -> None:
        out.grad_fn = prim_node(prim, params, args, out, in_avals)
        out._requires_grad = True
        out._out_idx = 0

    def saved_data(self, i: int):
        """Input i's saved array, version-checked (the rule reads it)."""
        return check_saved(self.saved[i], self.versions[i], self)._data

    def saved_tensor(self, i: int) -> Tensor:
        """Input i's saved tensor, version-checked as saved_data."""
        return check_saved(self.saved[i], self.versions[i], self)

    def scalar_operand(self, i: int) -> None:
        """Operand i was a Python number. Where PyTorch has a Scalar overload for it (5 - t,
        t ** 2, 2 ** t), the node takes that overload's name and has no edge for the number."""
        name = scalar_overload(self.prim.name, i)
        if name is None:
            return
        self._name = name
        self._scalar_arg = i
        nf = self.next_functions
        self.next_functions = nf[:i] + nf[i + 1:]

    def _avals(self) -> list[Aval]:
        return list(self.in_avals)

    def name(self) -> str:
        if self._name is None:
            self._name = node_name(self.prim.name, self.params, self._avals(), self.need)
        return self._name

    def apply(self, grads, create_graph):
        ins = [self.saved_tensor(i) if s is not None else av
               for i, (s, av) in enumerate(zip(self.saved, self.in_avals))]
        out = self.saved_out.unpack(self) if self.saved_out is not None else None
        return self._results(self.prim.vjp(grads[0], ins, out, self.params, self.need))

    def apply_arrays(self, g: Arr) -> list:
        """The VJP rule run directly on arrays (a backward that records nothing): through
        its plan where the eager path's shared Avals hold one (vjp_plans.py)."""
        avals = self.in_avals
        if type(avals) is SharedAvals:
            # (None where an input needs no gradient; the recorded plan's function called
            # here directly, vjp_plans.apply records one or finds there is none)
            plan = avals.plans.get(self.need)
            gd = g._data
            res = plan.run(self, gd) if plan is not None else vjp_plans.apply(self, gd)
            if res is not None:         # (arrays: the engine's fast branch takes them so)
                if self._scalar_arg is not None:
                    del res[self._scalar_arg]
                return [None if r is None else Arr(r) for r in res]
        need = self.need
        ins = [Arr(self.saved_data(i)) if s is not None else av
               for i, (s, av) in enumerate(zip(self.saved, self.in_avals))]
        so = self.saved_out
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


def prim_node(prim, params, args, out: Tensor, in_avals: tuple | None = None) -> PrimNode:
    """The PrimNode of `out = prim(*args, **params)`: its edges, `need`, what the rule reads.
    Built with object.__new__ and its slots set here: a class call running a Python __init__
    cost ~2,000 instructions more per node, and an eager op's node is most of its recording.
    `in_avals`: the operands' Avals, which the eager path shares between applications."""
    node = _new(PrimNode)
    n = len(args)
    if n == 2:              # most ops: the loop below, unrolled (no list appends)
        a, b = args
        ra, rb = a._requires_grad, b._requires_grad
        ea = eb = _NO_EDGE
        if ra:
            ga = a.grad_fn
            ea = (ga, a._out_idx) if ga is not None else leaf_edge(a)
        if rb:
            gb = b.grad_fn
            eb = (gb, b._out_idx) if gb is not None else leaf_edge(b)
        node.next_functions = (ea, eb)
        by_prim = _SAVES2[ra][rb]
        sv = by_prim.get(prim)
        if sv is None:      # (one `need` tuple per pattern is kept: fewer objects to track)
            sv = by_prim[prim] = _saves_entry(prim, (bool(ra), bool(rb)))
    elif n == 1:            # a unary op, a view (tanh, x.T, a gate slice): the same
        a = args[0]
        if a._requires_grad:
            ga = a.grad_fn
            node.next_functions = ((ga, a._out_idx) if ga is not None else leaf_edge(a),)
            by_prim = _SAVES1_NEED
        else:
            node.next_functions = (_NO_EDGE,)
            by_prim = _SAVES1_NO_NEED
        sv = by_prim.get(prim)
        if sv is None:
            sv = by_prim[prim] = _saves_entry(prim, _NEED_1 if a._requires_grad else _NO_NEED_1)
    else:
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
        node.next_functions = tuple(edges)
        need = tuple(need)
        sv = _SAVES.get((prim, need))
        if sv is None:
            sv = _SAVES[(prim, need)] = _saves_entry(prim, need)
    node.need, saves, save_out, keeps = sv
    node.freed = False
    node.out_hooks = None
    node.retained = None
    node.prim = prim
    node.params = params
    # every input's Aval, for the rule (inputs it does not save) and the node's name: the
    # eager path passes the tuple its inference cache shares between applications
    node.in_avals = in_avals if in_avals is not None else _avals_of(args)
    if not saves:
        node.saved = _NONES[n] if n < 8 else (None,) * n
        node.versions = None
    elif n == 2:            # (most ops: no list comprehension's call)
        a, b = args
        va = a._vc
        vb = b._vc
        if len(saves) == 2:
            node.saved = args if type(args) is tuple else (a, b)
            node.versions = _ZEROS2 if va is None and vb is None else \
                (va[0] if va is not None else 0, vb[0] if vb is not None else 0)
        elif 0 in saves:
            node.saved = (a, None)
            node.versions = (va[0] if va is not None else 0, 0)
        else:
            node.saved = (None, b)
            node.versions = (0, vb[0] if vb is not None else 0)
    else:
        node.saved = tuple([a if i in saves else None for i, a in enumerate(args)])
        node.versions = tuple([a._vc[0] if i in saves and a._vc is not None else 0
                               for i, a in enumerate(args)])
    if type(out._data) is Value:
        node.fwd_loc = (out._data.graph, out._data.producer.loc)
        # traced outputs are short-lived: the trace's Tensor itself is kept
        node.saved_out = SavedTensor(out) if save_out else None
    else:
        node.fwd_loc = None
        # (with dual tensors live, the Tensor itself, which carries the output's tangent)
        node.saved_out = None if not save_out else \
            SavedTensor(out) if FWD.levels else saved_output(out)
    # a node that keeps nothing alive can run again after backward, as in PyTorch
    node.keeps_saved = keeps
    node._name = None
    node._scalar_arg = None
    return node


# prim -> its _SAVES entry, per `need` pattern of one or two operands: _SAVES2[ra][rb] for
# whether the first and the second need a gradient (a dict keyed by the primitive alone: a
# (prim, need) key was a tuple built, hashed and compared per node)
_SAVES1_NEED: dict = {}
_SAVES1_NO_NEED: dict = {}
_SAVES2 = (({}, {}), ({}, {}))


def leaf_edge(t: Tensor) -> tuple:
    """The edge to a leaf's AccumulateGrad: its live node found here (a parameter read at
    every step of a loop), accumulate_node otherwise."""
    a = t._accum
    if type(a) is _WEAKREF:
        node = a()
        if node is not None:
            return (node, 0)
    return (accumulate_node(t), 0)


_WEAKREF = weakref.ref
_ZEROS2 = (0, 0)           # the versions of two operands without counters (most): shared


def _saves_entry(prim, need: tuple) -> tuple:
    """(need, inputs the VJP reads, whether it reads the output, whether the node keeps
    anything alive) for prim and the `need` pattern."""
    saves, save_out = prim.saved_for(need)
    return need, saves, save_out, bool(saves) or save_out


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


class _Gone:
    pass


# the _accum of a view that requires grad through its base alone (made before the base's
# requires_grad_(): view_grad.py): a reference that reads None, so the hot path below takes
# it as a dead one; such a view has no AccumulateGrad, so the edges of the ops that read it
# lead nowhere (torch's (None, 0)) and it gets no gradient
UNTRACKED = weakref.ref(_Gone())


def accumulate_node(t: Tensor) -> AccumulateGrad | None:
    """t's AccumulateGrad node (None for an UNTRACKED view). As in PyTorch, the node holds the
    tensor and the tensor only a weak reference to the node: a strong one both ways was a
    reference cycle, which made every leaf of every graph (and its arrays) garbage for the
    cycle collector instead of freed by reference counting. A node with post-accumulate hooks
    is held strongly (its hooks must outlive the graphs), as is one a trace's stand-in leaf
    shares (trace.grad_leaf)."""
    a = t._accum
    if a is not None:
        node = a() if type(a) is weakref.ref else a
        if node is not None:
            return node
        if a is UNTRACKED:
            return None
    node = AccumulateGrad(t)
    t._accum = weakref.ref(node)
    return node


def _accumulate_leaf(t: Tensor, g: Tensor, create_graph: bool, own: bool = False) -> None:
    """g added to the leaf t's `.grad`. `own`: g's array is the engine's own sum, which no
    one else references (grad_buffers.Owned), so a `.grad` that is None takes it as it is;
    any other g is copied, as it may be a rule's result another gradient shares."""
    if g.shape != t.shape:
        raise RuntimeError(f"gradient of shape {list(g.shape)} does not match leaf of shape "
                           f"{list(t.shape)}")
    captured = t._captured()
    if captured:                     # inside a trace: see grad_slots.py
        STATE.traces[-1].grad_slots.note(t)
    if t._grad is None:
        # a traced value is immutable: a Tensor of its own is enough (in-place ops on it
        # rebind that Tensor only)
        t._grad = g if create_graph else \
            Tensor(g._data if g._traced or own else g._data.copy())
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
    elif getattr(t._grad, "_view", None) is not None or \
            not getattr(t._grad._data.flags, "writeable", True):
        with set_grad_enabled(False):   # a view (of a flat gradient buffer) or a lazy copy:
            t._grad.add_(g)             # the in-place op writes through to the base
    else:
        # (inf is a value: no floating-point warning, as every eager op)
        quiet_call(np.add, t._grad._data, g._data, out=t._grad._data, casting="unsafe")


class AliasNode(Node):
    """Identity with a node of its own: a handle that a transform differentiates with respect
    to (functional._fresh), or a nested trace's view of an enclosing trace's tensor
    (TraceContext.outer_leaf), connected to the tensor it stands for."""

    keeps_saved = False

    def name(self) -> str:
        return "AliasBackward0"

    def apply(self, grads, create_graph):
        return [grads[0]]
