"""The trace cache of the plain (uncompiled) transforms: tj.jvp, tj.linearize, tj.jacfwd,
tj.jacrev, tj.hessian and tj.vmap of Python functions.

Each of them traces the function into a graph and transforms that graph; the result is kept
per (transform, function, the arguments' structure, shapes, dtypes and devices, the autocast
state, and whatever else the transform's key names), and a later call with the same key
replays the kept graphs instead of tracing again. The rules are tj.compile's (see
runtime/compile.py), so a trace is reused only while it still describes the function:

- captured tensors are read afresh by every call (in-place updates are seen), but a closure
  variable or global the function names that now holds another object, a captured tensor
  whose shape or dtype changed, a value the trace read into Python (`.item()`, `bool()`)
  that changed, or a module attribute the trace read that was rebound, all trace again;
- as in tj.compile, a closure variable or global that the function's own code names and
  that holds a Python number, string, None, a tuple of those, or a NumPy array the trace did
  not capture (an index array, whose values the trace holds) is guarded by value, so
  `scale = 3.0` or `idx[:] = ...` between two calls traces again; so do those that the helper
  functions of its module it names (closure or global, followed iteratively) read, and a
  rebound helper or tensor there (const_guards.py); a list is guarded by identity only (a
  function may append to one as a side effect), so its contents stay constants, as do
  attributes of plain objects (`self.scale`);
- as with jax.jit and tj.compile, the function's Python side effects (print, appending to a
  list) happen while it is traced, that is on the first call of each key, not on every call.

Calls inside an enclosing trace (tj.compile, an outer transform) are not cached: the
enclosing trace records the transform once anyway. Functions are held weakly."""
from __future__ import annotations

import types
import weakref
from typing import Any, Callable

from ..ir.core import Graph
from .autocast import autocast_key
from .state import STATE
from .const_guards import const_bindings, const_key, consts_changed, frozen  # noqa: F401
from .tensor_base import TensorBase
from .trace_guards import attr_guards_changed, bindings_changed, capture_bindings, guard_changed

MAX_KEYS = 16          # traces kept per (transform, function); the oldest goes first

_CACHE: "weakref.WeakKeyDictionary[Any, dict]" = weakref.WeakKeyDictionary()
_STRONG: dict = {}     # callables that cannot be weakly referenced: by id, with the object


class Entry(types.SimpleNamespace):
    """A kept trace: its `guards` (a Guards) and the graphs and facts the transform keeps."""


class Guards:
    """What a trace assumed beyond its key: the objects the function names (closure variables,
    globals), the captured tensors' shapes and dtypes, values read into Python, and module
    attributes read (see tracer/trace.py's TraceContext)."""

    __slots__ = ("bindings", "guards", "attr_guards", "captures", "cap_avals", "consts")

    def __init__(self, fn: Callable, ctx, captures: list, cap_avals: list) -> None:
        self.bindings = capture_bindings(fn, captures)
        self.consts = const_bindings(fn, captures)
        self.guards = list(ctx.guards)
        self.attr_guards = list(ctx.attr_guards)
        self.captures = captures
        self.cap_avals = cap_avals

    def stale(self) -> str | None:
        for t, (shape, dtype) in zip(self.captures, self.cap_avals):
            if t._traced or tuple(t.shape) != tuple(shape) or t.dtype is not dtype:
                return "a captured tensor changed shape or dtype"
        return (consts_changed(self.consts) if self.consts else None) or \
            (bindings_changed(self.bindings) if self.bindings else None) or \
            (guard_changed(self.guards) if self.guards else None) or \
            (attr_guards_changed(self.attr_guards) if self.attr_guards else None)


def cacheable() -> bool:
    """Outside any trace (see the module doc)."""
    return not STATE.traces


def _owner(fn: Callable) -> tuple[Any, tuple]:
    """(the object the cache is held by, what else identifies fn): a bound method is made
    afresh by each attribute lookup, so it is its function and its instance's identity."""
    if isinstance(fn, types.MethodType):
        return fn.__func__, (id(fn.__self__),)
    return fn, ()


def _table(owner: Any, create: bool) -> dict | None:
    try:
        t = _CACHE.get(owner)
        if t is None and create:
            t = _CACHE[owner] = {}
        return t
    except TypeError:                  # not weakly referenceable: kept alive by the cache
        e = _STRONG.get(id(owner))
        if e is None or e[0] is not owner:
            if not create:
                return None
            e = _STRONG[id(owner)] = (owner, {})
        return e[1]


def lookup(kind: str, fn: Callable, key: tuple) -> Any:
    """The entry kept for `kind` of fn under key (with the autocast state), if its guards still
    hold; None otherwise. An entry is any object with a `guards` attribute (a Guards)."""
    owner, extra = _owner(fn)
    table = _table(owner, create=False)
    if table is None:
        return None
    full = (kind, extra, autocast_key(), key)
    entry = table.get(full)
    if entry is None:
        return None
    if isinstance(fn, types.MethodType) and entry.instance() is not fn.__self__:
        table.pop(full, None)           # an instance with a reused id
        return None
    if entry.guards.stale() is not None:
        table.pop(full, None)           # (another thread may have dropped it already)
        return None
    return entry


def store(kind: str, fn: Callable, key: tuple, entry: Any) -> None:
    owner, extra = _owner(fn)
    table = _table(owner, create=True)
    if isinstance(fn, types.MethodType):
        entry.instance = weakref.ref(fn.__self__) if _weakrefable(fn.__self__) else \
            (lambda s=fn.__self__: s)
    if len(table) >= MAX_KEYS:
        oldest = list(table)[:1]        # (one call: another thread may change the table)
        if oldest:
            table.pop(oldest[0], None)
    table[(kind, extra, autocast_key(), key)] = entry


def _weakrefable(x: Any) -> bool:
    try:
        weakref.ref(x)
        return True
    except TypeError:
        return False


def leaf_key(x: Any) -> tuple:
    """A tensor leaf's part of a key: shape, dtype, weak scalar or not, device."""
    return (tuple(x.shape), x.dtype, x._weak, str(x.device))


def capture_avals(graph: Graph, first: int, captures: list) -> list:
    """The (shape, dtype) the graph's capture inputs (from input `first` on) were traced at."""
    return [(v.shape, v.dtype) for v in graph.inputs[first:first + len(captures)]]


def clear() -> None:
    """Drop every kept trace (tj.clear_cache)."""
    _CACHE.clear()
    _STRONG.clear()


__all__ = ["Entry", "Guards", "frozen", "const_key", "cacheable", "lookup", "store", "leaf_key",
           "capture_avals", "clear"]
