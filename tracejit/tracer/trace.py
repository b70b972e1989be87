"""Tracing a Python function into a Graph."""
from __future__ import annotations

import inspect
import warnings
from typing import Any, Callable, Sequence

import numpy as np

from ..ir import dtypes as dt
from ..ir.core import Aval, Graph, Value, user_location, user_stacklevel
from ..ir.primitives import P
from ..ir.printer import INLINE_LIMIT
from ..devices import CPU, is_gpu_array
from . import checks
from .backward_nodes import UNTRACKED, AliasNode, accumulate_node
from .attr_slots import take_slots
from .grad_slots import GradSlots, slot_guards_changed
from .pytree import tree_flatten, tree_unflatten
from .state import ATTR_EPOCH, STATE, special_mode
from .tensor_base import TensorBase as Tensor
from .const_guards import const_bindings, consts_changed
from .trace_guards import attr_guards_changed, bindings_changed, capture_bindings, guard_changed


def leaf_aval(x: Any) -> tuple[Aval, bool]:
    """The abstract value of an argument leaf, and whether it is a weak scalar: Python and
    NumPy scalars both (as eagerly, and as torch takes them), NumPy 0-d arrays are not."""
    if isinstance(x, Tensor):
        x._concrete("passing a tensor to a compiled function", guard=False)
        return Aval(x.shape, x.dtype), False
    if isinstance(x, bool):
        return Aval((), dt.bool_), True
    if isinstance(x, (int, np.signedinteger)):
        return Aval((), dt.i64), True
    if isinstance(x, (float, np.floating, np.bool_)):     # (a NumPy bool: a float to torch)
        return Aval((), dt.f64), True
    a = x if is_gpu_array(x) else np.asarray(x)      # a CuPy array stays where it is
    d = dt.from_numpy(a.dtype)
    if d is None:
        raise TypeError(f"unsupported array dtype {a.dtype} for a compiled function argument")
    return Aval(a.shape, d), False


_UNREAD = object()


class TraceContext:
    """An active trace: the graph being built and the eager tensors it captured.

    Every eager tensor from outside the trace that an op reads is a capture: an extra graph
    input that each call reads afresh (so in-place updates are seen and captures that require
    grad get gradients). NumPy arrays met while tracing are captured the same way, by reference.
    A capture's value read into Python (`.item()`, `.numpy()`, `bool()`) is a guard: the trace
    depends on that value, so a call that finds it changed traces again. An in-place update of
    a capture (an optimizer's `p.sub_(...)` under no_grad) is a write: later reads in the trace
    see the new value, which is an extra graph output stored into the tensor after each call.
    A capture that requires grad is read through a traced leaf of its own (`grad_leaf`), so
    `loss.backward()` inside the trace differentiates the graph built so far and accumulates
    into the capture's `.grad` (see grad_slots.py)."""

    def __init__(self, name: str, device=CPU) -> None:
        self.graph = Graph(name)
        self.device = device                  # what traced tensors report as their .device
        self.captures: list[Any] = []        # captured objects, in graph-input order
        self._cap_index: dict[int, Value] = {}
        self.rng: tuple[Value, Value] | None = None   # hidden (seed, offset) inputs
        self.n_random = 0                    # random ops so far: the next one's stream
        self._arrays: dict[int, Tensor] = {}  # id(user ndarray) -> the tensor wrapping it
        self.guards: list[tuple[Tensor, Any]] = []   # (capture, the value read from it)
        self._guarded: set[int] = set()
        self.writes: dict[int, tuple[Tensor, Value]] = {}   # id -> (capture, its new value)
        self.n_writes: dict[int, int] = {}   # id -> in-place ops on it (its version's steps)
        # ids of captures written by an op that recorded autograd history (not under no_grad,
        # not through .data or detach()): after a call with grad on, such a capture takes the
        # new value's history, as the eager in-place op gives it (runtime/captures.py)
        self.history_writes: set[int] = set()
        # id(capture) -> its new value as a traced tensor with the autograd history of the op
        # that wrote it (a value requiring grad on the tape: a tj.grad handle, a captured
        # parameter); later reads take it, so a tj.grad or backward() inside the trace reaches
        # the written value through the capture (it was read without history: a zero
        # gradient, compiled fuzzer seed 70343)
        self._tapes: dict[int, Tensor] = {}
        self.grad_slots = GradSlots()
        self._leaves: dict[int, Tensor] = {}  # id(capture) -> its traced leaf for autograd
        self.backward_ran = False            # .backward() ran on a traced tensor
        self.born: list = []                 # weakrefs of the tensors made while tracing
        self.attr_guards: list[tuple] = []   # (read, label, value seen, by identity)
        self.transform: str | None = None    # "vmap": tracing one example for tj.vmap
        self.batched: set = set()            # (vmap) the inputs that carry the mapped axis
        self._attr_guarded: set[tuple] = set()
        self.checks: list[tuple[Value, tuple]] = []   # (bad index count, (message, class))
        self.checked: set[tuple[int, int]] = set()   # (id(index value), axis length)
        self.arg_writes: list[tuple[int, Value]] = []   # (flat argument position, new value)
        self.attr_stores: list[tuple] = []   # module attributes set to traced tensors (attr_slots)
        # run with this context when the function returned (nn's guards of module attributes)
        self.finishers: dict[str, Callable[["TraceContext"], None]] = {}
        self.outer_off = False               # traced for a caller under no_grad (__enter__)
        # id(traced argument) -> the element strides torch gives the caller's tensor, a view
        # that is not C-contiguous: its contiguous() and reshape() copy as torch's (views.py);
        # `arg_layout` finds them (views.arg_layout, given by tj.compile)
        self.arg_layouts: dict[int, tuple] = {}
        self.arg_layout: Callable | None = None
        # ids of the tracers of 0-d NumPy array arguments: strong in promotion as eagerly,
        # where an op with a NumPy array promotes as NumPy (operands.result_dtype)
        self.array_args: set[int] = set()

    def __enter__(self) -> "TraceContext":
        special_mode(1)
        STATE.traces.append(self)
        # the caller's no_grad is not the traced function's: its ops are no stop_gradient
        # barriers (tracer/no_grad_ir.py), or a graph first traced under no_grad would have
        # no gradient when later called with grad on. A function that turns grad mode on
        # itself is traced apart for callers under no_grad (`outer_off`): there the ops it
        # runs in the caller's mode are barriers, those under its enable_grad are not
        self._user_off, STATE.user_off = STATE.user_off, self.outer_off
        return self

    def __exit__(self, *exc) -> bool:
        STATE.traces.pop()
        STATE.user_off = self._user_off
        special_mode(-1)
        return False

    def capture(self, t: Tensor) -> Value:
        """Tensors made during the trace are constants; others are lifted to extra inputs that
        each call reads afresh, so updating a captured tensor never leaves a stale value."""
        arr = t._data
        if t._born_in is self and not isinstance(arr, Value):   # (a Value: of an enclosing
            #                                                        trace, see tj.vmap)
            if is_gpu_array(arr):
                arr = arr.get()          # IR constants live on the host
            if arr.size > INLINE_LIMIT and np.all(arr == arr.reshape(-1)[0]):
                c = self.graph.emit(P.constant, [], {"value": arr.reshape(-1)[:1].reshape(())})
                return self.graph.emit(P.broadcast, [c], {"shape": arr.shape})
            return self.graph.emit(P.constant, [], {"value": arr})
        v = self._cap_index.get(id(t))
        if v is None:
            v = self.graph.add_input(Aval(arr.shape, t.dtype), f"cap{len(self.captures)}")
            self._cap_index[id(t)] = v
            self.captures.append(t)
        return v

    def lift_array(self, arr: np.ndarray) -> Tensor:
        """A user's NumPy array met while tracing: a tensor sharing its memory, not born in
        the trace, so that ops capture it as an input (never a copy that could go stale)."""
        t = self._arrays.get(id(arr))
        if t is None:
            t = Tensor(arr)
            t._born_in = None
            self._arrays[id(arr)] = t     # also keeps arr alive, so its id stays unique
        return t

    def write(self, t: Tensor, v: Value, read_as: Value | None = None,
              history: bool = False, tape: Tensor | None = None) -> None:
        """An in-place update of capture `t` to `v` (see the class doc); later reads in the
        trace see `read_as` if given (v's value with another gradient: no_grad_ir.py).
        `history`: the op recorded autograd history, which `t` then takes (see __init__).
        `tape`: the traced tensor of value `v` with that history, which reads then take."""
        self.writes[id(t)] = (t, v)
        self._keep_tape(t, v if read_as is None else read_as, tape)
        if history:
            self.history_writes.add(id(t))
        self._cap_index[id(t)] = v if read_as is None else read_as
        self.n_writes[id(t)] = self.n_writes.get(id(t), 0) + 1
        # views of t made in the trace share its version counter: what backward saved of
        # them is stale now, as eagerly (it read the new value: a NaN gradient from amax's
        # tie mask); undone when the trace ends (restore_versions), as the call that stores
        # the new value moves the counter itself (runtime/captures.py)
        t._version[0] += 1
        leaf = self._leaves.get(id(t))
        if leaf is not None:        # what backward saved of the old value is now stale, as
            leaf._version[0] += 1   # eagerly: backward reports the in-place change

    def restore_versions(self) -> None:
        """Undo write()'s moves of the captures' version counters (see write)."""
        for t, _ in self.writes.values():
            t._version[0] -= self.n_writes.get(id(t), 0)

    def alias(self, t: Tensor, v: Value, tape: Tensor | None = None) -> None:
        """Reads of `t`, an outside view of a capture that was updated in place, see `v` (its
        new value, derived from the capture's) from here on (see tracer/views.py); `tape`
        as for write()."""
        self._cap_index[id(t)] = v
        self._keep_tape(t, v, tape)

    def _keep_tape(self, t: Tensor, v: Value, tape: Tensor | None) -> None:
        if tape is not None and tape._requires_grad and tape._data is v:
            self._tapes[id(t)] = tape
        else:
            self._tapes.pop(id(t), None)

    def tape_read(self, t: Tensor, v: Value) -> Tensor | None:
        """The tensor through which ops read capture `t` (value `v`) after a write with
        autograd history (see write), or None."""
        tape = self._tapes.get(id(t))
        return tape if tape is not None and tape._data is v else None

    def outer_leaf(self, t: Tensor, v: Value) -> Tensor:
        """The tensor through which ops of this (nested, tj.vmap) trace read `t`, a tensor of
        an enclosing trace that requires grad (value `v` here): a transform inside the nested
        trace (vmap(grad(f))) differentiates with respect to `t` through it."""
        leaf = self._leaves.get(id(t))
        if leaf is None or leaf._data is not v:
            leaf = Tensor(v, _weak=t._weak)
            leaf.grad_fn, leaf._requires_grad = AliasNode([t]), True
            self._leaves[id(t)] = leaf
        return leaf

    def grad_leaf(self, t: Tensor, v: Value) -> Tensor:
        """The traced tensor through which ops read capture `t` (value `v`) when `t` requires
        grad: a leaf sharing `t`'s AccumulateGrad node, so backward fills `t.grad`."""
        leaf = self._leaves.get(id(t))
        if leaf is None or leaf._data is not v:
            leaf = Tensor(v, _weak=t._weak)
            leaf._requires_grad = True
            leaf._accum = accumulate_node(t) or UNTRACKED     # (None: view_grad.py)
            self._leaves[id(t)] = leaf
        return leaf

    def read_ids(self) -> dict[int, Value]:
        """ids of the outside tensors whose values the graph reads (or writes)."""
        return self._cap_index

    def guard_read(self, t: Tensor) -> None:
        """`t`'s value was read into Python while tracing: remember it (see the class doc)."""
        if id(t) in self.writes:
            raise RuntimeError(
                f"reading the value of a captured tensor {t.dtype.name}{list(t.shape)} that the "
                f"compiled function updated in place needs a concrete value, but its new value "
                f"is traced (at {user_location()}); use tensor ops (tj.where) instead")
        if id(t) not in self._guarded:
            self._guarded.add(id(t))
            a = t._data
            self.guards.append((t, np.array(a.get() if is_gpu_array(a) else a, copy=True)))

    def guard_attr(self, obj: Any, name: str, identity: bool = False) -> None:
        """The trace depends on `obj.name` (a module's `training` flag, or with `identity` the
        very object there: a parameter, buffer or submodule): a call that finds another value
        there does not reuse it. `obj` must bump state.ATTR_EPOCH when its attributes change
        (nn.Module does): calls check the guards only after such a change."""
        self.guard_value((id(obj), name), lambda: getattr(obj, name, None),
                         f"{type(obj).__name__}.{name}", identity)

    def guard_value(self, key: Any, read: Callable[[], Any], label: str,
                    identity: bool = False, seen: Any = _UNREAD) -> None:
        """The general form of guard_attr: the trace depends on what `read()` returns (same
        epoch rule), or on `seen` (what it returned when the trace read it, before the trace
        changed it); with `identity`, sequences compare item by item by identity."""
        if key not in self._attr_guarded:
            self._attr_guarded.add(key)
            self.attr_guards.append((read, label, read() if seen is _UNREAD else seen,
                                     identity))

    def random_stream(self) -> tuple[Value, Value, int]:
        """For a random op: the graph's hidden seed and offset inputs (added on first use)
        and the op's stream number, in trace order."""
        if self.rng is None:
            self.rng = (self.graph.add_input(Aval((), dt.i64), "rng_seed"),
                        self.graph.add_input(Aval((), dt.i64), "rng_offset"))
        self.n_random += 1
        return self.rng[0], self.rng[1], self.n_random - 1


class Traced:
    """The result of tracing: the graph, how to rebuild outputs, and what was captured."""

    def __init__(self, graph: Graph, out_tree, captures: list, guards: list | None = None,
                 n_random: int = 0, *, bindings: list | None = None,
                 writes: list | None = None, write_counts: list | None = None,
                 grad_guards: list | None = None, grad_sets: list | None = None,
                 backward_ran: bool = False, escapes: list | None = None,
                 attr_guards: list | None = None, checks: list | None = None,
                 arg_writes: list | None = None, consts: list | None = None,
                 slots: list | None = None) -> None:
        self.n_random = n_random           # random ops: the offset advances by this per call
        self.graph = graph                 # inputs: the flat arguments, then the captures,
        #                                    then the hidden rng seed and offset if n_random
        self.out_tree = out_tree
        self.captures = captures
        self.guards = guards or []         # see TraceContext.guard_read
        self.bindings = bindings or []     # see capture_bindings
        self.consts = consts or []         # Python values baked in (see const_guards.py)
        self.writes = writes or []         # captures whose new values follow the user's outputs
        self.write_counts = write_counts or [1] * len(self.writes)   # in-place ops on each
        self.grad_guards = grad_guards or []   # see grad_slots.py: `.grad` slots assumed,
        self.grad_sets = grad_sets or []       # and set after each call (values: last outputs)
        self.n_grad_outs = sum(kind == "new" for _, kind, _ in self.grad_sets)
        self.backward_ran = backward_ran   # results are not differentiable by eager autograd
        self.escapes = escapes or []       # see find_escapes: their values are the last outputs
        self.slots = slots or []           # module attributes set after each call: attr_slots
        self.attr_guards = attr_guards or []   # see TraceContext.guard_attr
        self.checks = checks or []         # (message, class) each; their code is the last output
        self.attr_epoch = -1               # the epoch its attr_guards last held at
        self.arg_writes = arg_writes or []   # flat argument positions updated in place
        # per write: an op that recorded history wrote it (TraceContext.history_writes)
        self.write_history = [False] * len(self.writes)
        # the function turned grad mode on (enable_grad): its graph depends on the caller's
        # grad mode, and `outer_off` says which (True: traced for a caller under no_grad)
        self.grad_keyed = False
        self.outer_off = False

    @property
    def n_extra(self) -> int:
        """Graph outputs after the user's: the writes, the new `.grad`s, the escapes, the
        attribute slots, the arguments updated in place, and the checks' code (checks.py)."""
        return len(self.writes) + self.n_grad_outs + len(self.escapes) + len(self.slots) \
            + len(self.arg_writes) + bool(self.checks)

    def stale(self) -> str | None:
        """Why this trace no longer describes the function (its captures were rebound or a
        value it read changed), or None. Captures' shapes and dtypes are the caller's check."""
        return (bindings_changed(self.bindings) if self.bindings else None) or \
            (consts_changed(self.consts) if self.consts else None) or \
            (guard_changed(self.guards) if self.guards else None) or \
            (slot_guards_changed(self.grad_guards) if self.grad_guards else None) or \
            (self._attrs_changed() if self.attr_guards else None)

    def _attrs_changed(self) -> str | None:
        """attr_guards_changed, read only after some guarded object changed (ATTR_EPOCH)."""
        if self.attr_epoch == ATTR_EPOCH[0]:
            return None
        why = attr_guards_changed(self.attr_guards)
        if why is None:
            self.attr_epoch = ATTR_EPOCH[0]
        return why


def _leaf_paths(x: Any, base: str) -> list[str]:
    """Names of the leaves of a pytree: base, base.0, base.key, ... (in flatten order)."""
    if isinstance(x, (tuple, list)):
        return [p for i, c in enumerate(x) for p in _leaf_paths(c, f"{base}.{i}")]
    if isinstance(x, dict):
        return [p for k, c in x.items() for p in _leaf_paths(c, f"{base}.{k}")]
    return [] if x is None else [base]


def arg_names(fn: Callable, args: Sequence, kwargs: dict) -> list[str]:
    """Readable names of the flat arguments, for the IR and for retrace messages."""
    try:
        params = list(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        params = []
    names = []
    for i, a in enumerate(args):
        names += _leaf_paths(a, params[i] if i < len(params) else f"arg{i}")
    for k, v in kwargs.items():
        names += _leaf_paths(v, k)
    return names


def _consts(fn: Callable, captures: list) -> list:
    """const_bindings for a user's function; tracejit's own compiled helpers (the optimizers'
    fused updates) never rebind their module constants, and are called in hot loops."""
    inner = fn
    while hasattr(inner, "__wrapped__"):
        inner = inner.__wrapped__
    module = getattr(inner, "__module__", None) or type(inner).__module__ or ""
    if module.startswith("tracejit."):
        return []
    random_names: list = []
    found = const_bindings(fn, captures, random_names)
    if random_names:
        warnings.warn(f"{getattr(inner, '__qualname__', type(inner).__name__)} reaches Python's "
                      f"or NumPy's random numbers ({', '.join(sorted(set(random_names)))}): "
                      f"a compiled function draws them once, when traced, and every call reuses "
                      f"them; use tj.rand/tj.randn/tj.randint (a new draw each call)",
                      stacklevel=user_stacklevel())
    return found


def trace(fn: Callable, args: Sequence, kwargs: dict, static: dict[int | str, Any] | None = None,
          name: str | None = None, device=CPU, transform: str | None = None,
          outer_off: bool = False, arg_layout: Callable | None = None) -> Traced:
    """Trace fn(*args, **kwargs); entries of `static` (by position or name) are passed as is.
    With `outer_off`, ops run in the caller's grad mode are constants to reverse mode (a
    caller under no_grad; see TraceContext.__enter__). `arg_layout`: see TraceContext."""
    static = static or {}
    dyn_args = [a for i, a in enumerate(args) if i not in static]
    dyn_kwargs = {k: v for k, v in kwargs.items() if k not in static}
    flat, in_tree = tree_flatten((dyn_args, dyn_kwargs))
    names = arg_names(fn, dyn_args, dyn_kwargs)
    ctx = TraceContext(name or getattr(fn, "__name__", "f"), device)
    ctx.transform = transform
    ctx.outer_off = outer_off
    ctx.arg_layout = arg_layout
    grad_on = STATE.grad_on
    try:
        out_tree, outs = _run(ctx, fn, args, kwargs, static, flat, in_tree, names)
        for finish in ctx.finishers.values():
            finish(ctx)
    except BaseException:
        ctx.grad_slots.restore()        # no traced value may stay in an outside `.grad`
        raise
    finally:
        ctx.restore_versions()
    grad_guards, grad_sets, grad_outs = ctx.grad_slots.finish(ctx)
    escapes, slots = find_escapes(ctx)
    writes = list(ctx.writes.values())
    with ctx:
        code = checks.finish(ctx)
    ctx.graph.outputs = outs + [v for _, v in writes] + grad_outs + [t._data for t in escapes] \
        + [v for v, _ in slots] + [v for _, v in ctx.arg_writes] + ([code] if code is not None else [])
    if ctx.rng is not None:       # the hidden inputs go last, after the captures
        ctx.graph.inputs = [v for v in ctx.graph.inputs if v not in ctx.rng] + list(ctx.rng)
    traced = Traced(ctx.graph, out_tree, ctx.captures, ctx.guards, ctx.n_random,
                  bindings=capture_bindings(fn, ctx.captures),
                  consts=_consts(fn, ctx.captures),
                  writes=[t for t, _ in writes],
                  write_counts=[ctx.n_writes.get(id(t), 1) for t, _ in writes],
                  grad_guards=grad_guards, grad_sets=grad_sets, backward_ran=ctx.backward_ran,
                  escapes=escapes, attr_guards=ctx.attr_guards,
                  checks=[m for _, m in ctx.checks], arg_writes=[k for k, _ in ctx.arg_writes],
                  slots=[where for _, where in slots])
    traced.grad_keyed = STATE.grad_on != grad_on
    traced.outer_off = outer_off
    traced.write_history = [id(t) in ctx.history_writes for t, _ in writes]
    return traced


def find_escapes(ctx: TraceContext) -> tuple[list[Tensor], list]:
    """Traced tensors made during the trace that outlive it: stored into outside state (an
    optimizer creating its state on its first step, a hook keeping an activation, a global).
    A cached graph would never update them again, so the call that traced them stores their
    values into them as eager tensors and the next call traces again (then they are captures
    like any outside tensor; see runtime/compile.py). Found without a garbage collection: the
    trace's own references are dropped and the autograd tape's cycles (tensor -> grad_fn ->
    saved output -> tensor) cut, so what is still alive is held from outside. Those held only
    by module attributes are slots instead (attr_slots.py): (escapes, slots)."""
    ctx._leaves.clear()
    refs, ctx.born = ctx.born, []
    for r in refs:
        t = r()
        # (eager constants' tape holds no traced tensor; a handle on a value of an enclosing
        # trace, made by a transform inside tj.vmap, keeps its tape in that trace)
        if t is not None and t._traced and t._data.graph is ctx.graph:
            t.grad_fn = None
            t._accum = None
    t = None
    slots = take_slots(ctx) if ctx.attr_stores else []
    found = []
    for r in refs:
        t = r()
        if t is not None and t._traced and t._born_in is ctx and t._data.graph is ctx.graph:
            found.append(t)
    return found, slots


def _run(ctx: TraceContext, fn: Callable, args, kwargs, static, flat, in_tree, names):
    """Call fn on traced arguments inside ctx; (the output tree, the output values)."""
    with ctx:
        tracers = []
        for leaf, nm in zip(flat, names):
            aval, weak = leaf_aval(leaf)
            tracers.append(Tensor(ctx.graph.add_input(aval, nm.replace("<", "").replace(">", "")),
                                  _weak=weak))
            if isinstance(leaf, np.ndarray) and not leaf.ndim:
                ctx.array_args.add(id(tracers[-1]))
            if ctx.arg_layout is not None and isinstance(leaf, Tensor) and \
                    leaf._view is not None:
                strides = ctx.arg_layout(leaf)          # (also in the call's cache key)
                if strides is not None:
                    ctx.arg_layouts[id(tracers[-1])] = strides
        t_args, t_kwargs = tree_unflatten(in_tree, tracers)
        it = iter(t_args)
        call_args = [static[i] if i in static else next(it) for i in range(len(args))]
        call_kwargs = {k: static.get(k, t_kwargs.get(k)) for k in kwargs}
        before = [t._data for t in tracers]
        out = fn(*call_args, **call_kwargs)
        # arguments updated in place (x.mul_(2), x[0] = 1): their new values are written back
        # into the caller's tensors or arrays after each call, as torch.compile does
        ctx.arg_writes = [(k, t._data) for k, (t, v, leaf) in enumerate(zip(tracers, before, flat))
                          if t._data is not v and isinstance(t._data, Value)
                          and isinstance(leaf, (Tensor, np.ndarray))]
        out_flat, out_tree = tree_flatten(out)
        outs = []
        for o in out_flat:
            if not isinstance(o, Tensor):
                from .ops import as_tensor
                o = as_tensor(o, like=tracers[0] if tracers else None) if tracers else \
                    Tensor(np.asarray(o))
            if not o._traced:
                o = Tensor(ctx.capture(o))
            outs.append(o._data)
    return out_tree, outs
