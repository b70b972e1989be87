"""What a kept trace checks before it is reused: guarded captures' values, attributes read
during the trace, and the closure variables and globals (of the function and the helpers it
calls) that named a captured object."""
from __future__ import annotations

import types
from typing import Any, Callable

import numpy as np

from ..devices import is_gpu_array
from ..ir.core import Value


def guard_changed(guards: list) -> str | None:
    """Why a trace's guards no longer hold (a guarded capture's value changed), or None."""
    for i, (t, seen) in enumerate(guards):
        a = t._data
        if isinstance(a, Value) or a.shape != seen.shape or a.dtype != seen.dtype:
            return f"guarded capture {i} ({seen.dtype}{list(seen.shape)}) changed type or shape"
        a = a.get() if is_gpu_array(a) else a
        if a.ndim == 0 and a.dtype.kind in "biu":      # a flag or counter: np.array_equal
            same = a.item() == seen.item()             # costs ~6 us per call, this ~0.3
        else:
            same = np.array_equal(a, seen, equal_nan=True)
        if not same:
            return (f"the value of a captured tensor {seen.dtype}{list(seen.shape)} that the "
                    f"function read into Python (.item(), .numpy(), bool(), ...) changed")
    return None


def _same(now: Any, seen: Any, identity: bool) -> bool:
    if now is seen:
        return True
    if not identity:
        return now == seen
    return isinstance(now, tuple) and isinstance(seen, tuple) and len(now) == len(seen) and \
        all(a is b or (type(a) is str and a == b) for a, b in zip(now, seen))


def attr_guards_changed(guards: list) -> str | None:
    for read, label, seen, identity in guards:
        if not _same(read(), seen, identity):
            what = "was rebound" if identity else f"changed from {seen!r}"
            return f"{label} {what}"
    return None


def capture_bindings(fn: Callable, captures: list) -> list[tuple[str, Any, str, Any]]:
    """Where fn, or a Python function it names (a helper it calls, followed to any depth),
    names a captured object in a closure variable or a global: (kind, cell or globals dict,
    name, object). A call that finds one of these names bound to another object traces again
    instead of reading the old object."""
    if not captures:
        return []
    objs = {id(c): c for c in captures}
    objs.update((id(c._data), c._data) for c in captures)     # a captured NumPy array
    found: list = []
    seen: set = set()
    todo = [fn]
    while todo and len(seen) < _MAX_HELPERS:
        f = todo.pop()
        while hasattr(f, "__wrapped__"):
            f = f.__wrapped__
        code = getattr(f, "__code__", None)
        if code is None or id(f) in seen:
            continue
        seen.add(id(f))
        for name, cell in zip(code.co_freevars, getattr(f, "__closure__", None) or ()):
            try:
                value = cell.cell_contents
            except ValueError:             # an empty cell
                continue
            if id(value) in objs:
                found.append(("closure variable", cell, name, value))
            elif _is_helper(value):
                todo.append(value)
        glob = getattr(f, "__globals__", {})
        for name in _names(code):
            value = glob.get(name)
            if value is None:
                continue
            if id(value) in objs:
                found.append(("global", glob, name, value))
            elif _is_helper(value):
                todo.append(value)
    return found


_MAX_HELPERS = 256      # functions followed per trace (a bound on the walk, not on programs)


def _is_helper(value: Any) -> bool:
    """A user's Python function that a traced function may call (not tracejit's own)."""
    return isinstance(value, types.FunctionType) and \
        not (value.__module__ or "").startswith("tracejit")


def _names(code: types.CodeType) -> set[str]:
    """The global names a code object and the code nested in it (comprehensions, lambdas,
    inner functions) read."""
    names: set[str] = set()
    todo = [code]
    while todo:
        c = todo.pop()
        names.update(c.co_names)
        todo += [k for k in c.co_consts if isinstance(k, types.CodeType)]
    return names


def bindings_changed(bindings: list) -> str | None:
    for kind, where, name, obj in bindings:
        try:
            now = where.get(name) if kind == "global" else where.cell_contents
        except ValueError:
            now = None
        if now is not obj:
            return f"captured {kind} '{name}' now names another object"
    return None
