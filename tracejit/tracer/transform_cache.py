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
- unlike tj.compile, whose Python numbers, lists and index arrays are documented constants
  of the trace, a plain transform is called like eager code: a closure variable or global
  that the function's own code names and that holds a Python number, string, None, a tuple
  of those, or a NumPy array the trace did not capture (an index array, whose values the
  trace holds) is guarded by value, so `scale = 3.0` or `idx[:] = ...` between two calls
  traces again; so do those that the helper functions of its module it names (closure or
  global, followed iteratively) read, and a rebound helper or tensor there; a list is
  guarded by identity only (a function may append to one as a side effect), so its
  contents stay constants, as do attributes of plain objects (`self.scale`);
- as with jax.jit and tj.compile, the function's Python side effects (print, appending to a
  list) happen while it is traced, that is on the first call of each key, not on every call.

Calls inside an enclosing trace (tj.compile, an outer transform) are not cached: the
enclosing trace records the transform once anyway. Functions are held weakly."""
from __future__ import annotations

import hashlib
import types
import weakref
from typing import Any, Callable

import numpy as np

from ..ir.core import Graph
from .autocast import autocast_key
from .state import STATE
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


_CONSTS = (bool, int, float, complex, str, bytes, type(None), np.generic)


def const_key(x: Any) -> tuple:
    """A Python constant's identity as a trace sees it: its type and value, floats by their
    bits (0.0 == -0.0 would reuse a trace holding the other zero: 1/(x*s) changes sign)."""
    if isinstance(x, float):
        return (type(x), x.hex())
    if isinstance(x, complex):
        return (type(x), x.real.hex(), x.imag.hex())
    if isinstance(x, np.generic):
        return (type(x), x.tobytes())
    return (type(x), x)


def _global_names(code: types.CodeType) -> set[str]:
    """The names fn's code (and the lambdas/comprehensions inside it) may read as globals."""
    names, todo = set(), [code]
    while todo:
        c = todo.pop()
        names.update(c.co_names)
        todo.extend(k for k in c.co_consts if isinstance(k, types.CodeType))
    return names


def frozen(x: Any, captured: frozenset = frozenset()) -> tuple | None:
    """x's value as a trace may have baked it in, comparable with ==: a Python constant, a
    tuple of such values, or a NumPy array (by its bytes) that is not one of the `captured`
    arrays (ids; those are graph inputs, read afresh); a list only by identity. None: not a
    value to guard."""
    if isinstance(x, _CONSTS):
        return const_key(x)
    if isinstance(x, np.ndarray):
        if id(x) in captured:
            return None
        # a large array is kept as a digest: a copy per kept trace could be a dataset's size
        data = x.tobytes() if x.nbytes <= 65536 else \
            hashlib.blake2b(np.ascontiguousarray(x).data).digest()
        return ("array", x.dtype.str, x.shape, data)
    if type(x) is tuple:
        parts = tuple(frozen(e, captured) for e in x)
        return None if None in parts else (tuple, parts)
    if type(x) is list:     # by identity: a list the function appends to (a log, a trace
        return (list, id(x))    # counter) is no constant; the guard keeps it alive (the id)
    return None


def const_bindings(fn: Callable, captures: list = ()) -> list[tuple[Any, str, Any, tuple]]:
    """The closure variables and globals whose values the trace may have baked in (see
    `frozen` and the module doc): (cell or globals dict, name, object, its frozen value).
    Read from fn's code and from the helper functions of fn's own module that it names
    (iteratively), which are guarded by identity, as are the tensors they name."""
    while hasattr(fn, "__wrapped__"):
        fn = fn.__wrapped__
    if getattr(fn, "__code__", None) is None:
        # a callable object: its class's forward (an nn.Module's) or __call__
        fn = next((m for m in (getattr(type(fn), "forward", None),
                               getattr(type(fn), "__call__", None))
                   if isinstance(m, types.FunctionType)), None)
        if fn is None:
            return []
    home = fn.__globals__
    captured = frozenset(id(c._data) for c in captures)
    found: list = []
    todo, seen = [fn], {id(fn)}

    def guard(where: Any, name: str, value: Any) -> None:
        if isinstance(value, types.FunctionType):
            key = (types.FunctionType, id(value))
            if len(seen) < 64 and id(value) not in seen and value.__globals__ is home:
                seen.add(id(value))
                todo.append(value)
        elif isinstance(value, TensorBase):
            key = (TensorBase, id(value))
        else:
            key = frozen(value, captured)
        if key is not None:
            found.append((where, name, value, key))

    while todo:
        f = todo.pop()
        code = f.__code__
        for name, cell in zip(code.co_freevars, f.__closure__ or ()):
            try:
                value = cell.cell_contents
            except ValueError:             # an empty cell
                continue
            guard(cell, name, value)
        glob = f.__globals__
        for name in _global_names(code):
            if name in glob:
                guard(glob, name, glob[name])
    return found


_BY_IDENTITY = (types.FunctionType, TensorBase, list)     # (const_bindings' keys)


def consts_changed(consts: list) -> str | None:
    for where, name, obj, key in consts:
        if isinstance(where, dict):
            now = where.get(name, _CONSTS)
        else:
            try:
                now = where.cell_contents
            except ValueError:
                now = _CONSTS
        if key[0] in _BY_IDENTITY or isinstance(obj, _CONSTS):
            if now is obj:                  # (or immutable: the same object, the same value)
                continue
            if key[0] in _BY_IDENTITY:
                return f"'{name}' was rebound"
        if now is _CONSTS or frozen(now) != key:
            return f"'{name}' (traced as {obj!r}) changed"
    return None


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
