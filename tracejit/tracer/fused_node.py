"""The one backward node of an eager fused composite (fused.py): FusedNode and fused_node,
which builds it without __init__. Its backward runs the composite's plan's backward graph on
the residuals; under create_graph it records (recomputing the composite, or running the plan's
out_vjp on the saved output)."""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from ..ir.core import Value
from .autograd import grad as autograd_grad
from .backward_nodes import _NO_EDGE, Node, _modified, check_saved, leaf_edge
from .eager import Arr
from .grad_handles import handle
from .state import enable_grad
from .tensor_base import TensorBase as Tensor, wrap_array


def _root(a):
    b = a.base
    return a if b is None else b


class FusedNode(Node):
    """The one backward node of a fused composite: runs its plan's backward graph on the
    residuals (recomputes and differentiates the composite under create_graph). Made by
    `fused_node` (there is no __init__), as PrimNode: it keeps the input tensors themselves
    (`tensors`) and the versions they had (`versions`), checked where a value is read, not a
    SavedTensor per input; `checked` names the inputs (and the output, -1) whose memory a
    residual shares, and the output's version counter is read only when it is one of them."""

    __slots__ = ("_name", "fn", "args", "kwargs", "tensors", "versions", "residuals", "plan",
                 "checked", "out_counter", "out_version")

    def saved_tensor(self, i: int) -> Tensor:
        """Input i, version-checked (an in-place change since the call is an error)."""
        return check_saved(self.tensors[i], self.versions[i], self)

    @staticmethod
    def _aliased(tensors, residuals, out) -> tuple:
        """The inputs (their indices) and the output (-1) whose memory some residual shares:
        an in-place change to them would change what backward reads, so they are checked."""
        found = set()
        roots = None
        for r in residuals:
            if type(r) is np.ndarray:
                if r.base is None and all(r is not t._data for t in tensors) and r is not out._data:
                    continue                  # a fresh array of the forward's own
                if roots is None:
                    roots = [_root(t._data) if type(t._data) is np.ndarray else None
                             for t in tensors] + [_root(out._data)]
                rr = _root(r)
                found.update(i for i, x in enumerate(roots) if x is rr)
            else:                             # a device array: check every input, conservatively
                found.update(range(len(tensors) + 1))
        return tuple(sorted(i if i < len(tensors) else -1 for i in found))

    def name(self) -> str:
        return self._name

    def apply(self, grads, create_graph):
        g = grads[0]
        if create_graph or g is None or isinstance(g._data, Value):
            if self.plan.out_saved and g is not None and not isinstance(g._data, Value):
                return self._from_output(g)
            return self._recompute(grads, create_graph)
        self._check()
        gd = g._data
        if gd.dtype != self.plan.out_meta[1]:
            gd = gd.astype(self.plan.out_meta[1])
        res = self.plan.run_bwd(list(self.residuals) + [gd])
        it = iter(res)      # (requires_grad as at the call: the graph's and edges' order)
        wrap = Arr if type(g) is Arr else Tensor    # (Arr: a pass that records nothing)
        return [wrap(next(it)) if w else None for w in self.plan.wants]

    def _check(self) -> None:
        """Raise if an input or the output whose memory a residual shares changed in place."""
        for i in self.checked:
            if i < 0:
                if self.out_counter[0] != self.out_version:
                    shape, dtype = self.plan.out_meta
                    _modified(np.broadcast_to(np.zeros((), dtype), shape), self.out_counter[0],
                              self.out_version, self)
            else:
                self.saved_tensor(i)

    def _from_output(self, g: Tensor) -> list:
        """create_graph: the plan's out_vjp run with recording on the saved output, as a
        tensor whose grad_fn is this node (as PyTorch unpacks a saved result), so that the
        gradient is differentiable again through the output and the cotangent."""
        self._check()
        y = wrap_array(self.residuals[0])
        y._requires_grad, y.grad_fn, y._vc = True, self, self.out_counter
        with enable_grad():
            return [self.plan.out_vjp(y, g)]

    def apply_arrays(self, g: Arr) -> list:
        """The backward in a pass that records nothing: the plan's on the Arr's array (apply's
        array branch, without its list and tests)."""
        if type(g._data) is Value:
            return self.apply([g], False)
        if self.checked:
            self._check()
        plan = self.plan
        gd = g._data
        if gd.dtype != plan.out_meta[1]:
            gd = gd.astype(plan.out_meta[1])
        res = plan.run_bwd([*self.residuals, gd])
        if len(plan.wants) == 1:        # (one input, requiring grad: sigmoid, softmax, ...)
            return [Arr(res[0])]
        it = iter(res)
        return [Arr(next(it)) if w else None for w in plan.wants]

    def _recompute(self, grads, create_graph):
        """Run the composite again on the inputs, recording, and differentiate that: a
        gradient that is differentiable again (create_graph) or traced."""
        # (handles: the inner grad must not run the inputs' hooks or retain_grad, see there)
        saved = iter([handle(t) if t._requires_grad else t
                      for t in (self.saved_tensor(i) for i in range(len(self.tensors)))])
        args = [next(saved) if isinstance(a, Tensor) else a for a in self.args]
        kwargs = {k: next(saved) if isinstance(v, Tensor) else v for k, v in self.kwargs.items()}
        ins = [a for a in (*args, *kwargs.values()) if isinstance(a, Tensor)]
        with enable_grad():
            out = self.fn(*args, **kwargs)
        wrt = [t for t in ins if t._requires_grad]
        gs = iter(autograd_grad([out], wrt, [grads[0]], retain_graph=True,
                                create_graph=create_graph, allow_unused=True))
        return [next(gs) if t._requires_grad else None for t in ins]

    def release(self) -> None:
        self.freed = True
        self.residuals = self.tensors = self.args = self.kwargs = None


_new = object.__new__
_ZEROS = [(0,) * n for n in range(8)]      # the versions of inputs without counters: shared
_OUT_ONLY = (-1,)


def fused_node(name: str, fn: Callable, args: tuple, kwargs: dict, tensors: list[Tensor],
               residuals, plan: Any, out: Tensor, copied: bool = False) -> FusedNode:
    """The FusedNode of `out`, a fused call of `fn`. Built with object.__new__ and its slots
    set here: a class call running __init__, a SavedTensor per input and the output's version
    counter made for every call were most of a small fused op's recording."""
    node = _new(FusedNode)
    n = len(tensors)
    if n == 1:                  # (sigmoid(x), tanh(x): the loop below for one tensor)
        t = tensors[0]
        if t._requires_grad:
            gf = t.grad_fn
            node.next_functions = ((gf, t._out_idx) if gf is not None else leaf_edge(t),)
        else:
            node.next_functions = (_NO_EDGE,)
        vc = t._vc
        node.versions = (vc[0],) if vc is not None and vc[0] else _ZEROS[1]
    else:
        edges = []
        vers = None
        for k, t in enumerate(tensors):
            if t._requires_grad:
                gf = t.grad_fn
                edges.append((gf, t._out_idx) if gf is not None else leaf_edge(t))
            else:
                edges.append(_NO_EDGE)
            vc = t._vc
            if vc is not None and vc[0]:
                if vers is None:
                    vers = [0] * n
                vers[k] = vc[0]
        node.next_functions = tuple(edges)
        node.versions = tuple(vers) if vers is not None else _ZEROS[n] if n < 8 else (0,) * n
    node.tensors = tensors
    node.freed = False
    node.out_hooks = node.retained = None
    node._name = name
    node.fn, node.args, node.kwargs = fn, args, kwargs
    node.residuals = residuals
    node.plan = plan
    if plan.out_saved:
        # the one residual is the output, a new tensor: only its version is checked, from 0
        node.checked = _OUT_ONLY
        vc = out._vc = [0]
        node.out_counter, node.out_version = vc, 0
        return node
    if plan.compiled:
        # compiled outputs are new arrays; residuals that are inputs are the input arrays
        # (see maybe_compile), and a value both output and residual is one array
        y = out._data
        checked = plan.checked_inputs[bool(copied)]
        for r in residuals:
            if r is y:
                checked += (-1,)
                break
    else:
        checked = FusedNode._aliased(tensors, residuals, out)
    node.checked = checked
    if -1 in checked:              # (the output is checked: its counter, made now)
        vc = out._version
        node.out_counter, node.out_version = vc, vc[0]
    else:
        node.out_counter = node.out_version = None
    return node
