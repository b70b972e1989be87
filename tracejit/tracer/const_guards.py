"""The Python values a trace may have baked in as constants, and the check that they still
hold: the numbers, strings, None, tuples of those and NumPy arrays (not read as graph inputs)
that the traced function names as closure variables or globals, and those named by the helper
functions of its own module that it calls (followed iteratively; helpers, tensors and lists by
identity), and the constants read through such objects (`cfg.lr`, `CFG["scale"]`, `L[0]`;
const_chains.py). `scale = 3.0` (or `cfg.lr = 3.0`) between two calls then traces again
instead of reusing a trace that multiplied by 2.0. Used by tj.compile (tracer/trace.py) and
the plain transforms' cache (transform_cache.py)."""
from __future__ import annotations

import hashlib
import random as _pyrandom
import sys
import types
import weakref
from typing import Any, Callable

import numpy as np

from .const_chains import MAX_CHAINS, Chain, follow, read_paths
from .tensor_base import TensorBase
from .trace_guards import _names


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


def const_bindings(fn: Callable, captures: list = (),
                   random_names: list | None = None) -> list[tuple[Any, str, Any, tuple]]:
    """The closure variables and globals whose values the trace may have baked in (see
    `frozen` and the module doc): (cell or globals dict, name, object, its frozen value).
    Read from fn's code and from the helper functions of fn's own module that it names
    (iteratively), which are guarded by identity, as are the tensors they name.
    Also the constants that code reads through a global or closure object (`cfg.lr`,
    `CFG["scale"]`), with a Chain in place of the cell or dict (see _guard_paths).
    `random_names`, when given, receives the names through which that code reaches Python's or
    NumPy's random generators (whose numbers a trace would draw once and bake in)."""
    while hasattr(fn, "__wrapped__"):
        fn = fn.__wrapped__
    owner = None
    if getattr(fn, "__code__", None) is None:
        # a callable object: its class's forward (an nn.Module's) or __call__
        owner = fn
        fn = next((m for m in (getattr(type(fn), "forward", None),
                               getattr(type(fn), "__call__", None))
                   if isinstance(m, types.FunctionType)), None)
        if fn is None:
            return []
    home = fn.__globals__
    captured = frozenset(id(c._data) for c in captures)
    found: list = []
    todo, seen = [fn], {id(fn)}
    chains: list = [0, set()]       # paths guarded (count, keys), see _guard_paths

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
        names = _names(code)
        for name, cell in zip(code.co_freevars, f.__closure__ or ()):
            try:
                value = cell.cell_contents
            except ValueError:             # an empty cell
                continue
            if random_names is not None and _random_source(value, names):
                random_names.append(name)
            guard(cell, name, value)
        glob = f.__globals__
        if random_names is not None:
            random_names += [n for n in names if n in glob and _random_source(glob[n], names)]
        # the globals the code loads: not `names`, which holds attribute names too (a global
        # `step` is no value of `opt.step()`, and guarding it retraced a loop's every step)
        # and a compiled object's forward reads `self.config.eps` through its first argument
        this = code.co_varnames[0] if owner is not None and f is fn and code.co_argcount \
            else None
        paths = [(c, *p) for c in _codes(code) for p in read_paths(c, this if c is code
                                                                    else None)]
        for name in {root for _, op, root, _ in paths if op in ("LOAD_GLOBAL", "LOAD_NAME")}:
            if name in glob:
                guard(glob, name, glob[name])
        if chains[0] < MAX_CHAINS:
            _guard_paths(f, paths, captured, found, chains, owner if this else None)
    return found


def _codes(code: types.CodeType) -> list[types.CodeType]:
    """code and the code nested in it (comprehensions, lambdas, inner functions)."""
    out, todo = [], [code]
    while todo:
        c = todo.pop()
        out.append(c)
        todo += [k for k in c.co_consts if isinstance(k, types.CodeType)]
    return out


def _guard_paths(f: types.FunctionType, paths: list, captured: frozenset, found: list,
                 chains: list, owner: Any = None) -> None:
    """Append to `found` the values f's code (and the code nested in it) reads through a
    global or closure object (`cfg.lr`, `CFG["scale"]`; see const_chains.py): the longest
    plain-data prefix of each path whose value is a constant (a tuple, a number, a string,
    an index array), as a Chain re-read each call. A root that is itself such a value is
    guarded already; tensors, functions, classes and modules are never values here.
    `owner`: the object whose forward f is, the root of its `self.x.y` paths (by a weak
    reference; one step, `self.eps`, is a module's own attribute: module_guards.py's)."""
    cells = dict(zip(f.__code__.co_freevars, f.__closure__ or ()))
    glob = f.__globals__
    module = sys.modules.get(f.__module__ or "")     # its attributes are these globals
    module = module if getattr(module, "__dict__", None) is glob else None
    owns: dict = {}
    for code, op, root, steps in paths:
        if not steps:
            continue
        if id(code) not in owns:    # a nested code's own variables
            owns[id(code)] = set(code.co_cellvars) | set(code.co_varnames)
        own = owns[id(code)]
        if op == "LOAD_FAST":
            if owner is None or len(steps) < 2:
                continue
            try:
                where = weakref.ref(owner)
            except TypeError:
                continue
        elif op != "LOAD_DEREF":
            where = glob if root in glob else None
        else:       # a cell: f's closure variable (nested code reaches it through f's)
            where = cells.get(root) if (code is f.__code__ or root not in own) else None
        if where is None:
            continue
        key = (id(where) if op != "LOAD_FAST" else id(owner), root, steps)
        if key in chains[1]:
            continue
        chains[1].add(key)
        try:
            base = where[root] if where is glob else where() if op == "LOAD_FAST" else \
                where.cell_contents
        except ValueError:          # an empty cell
            continue
        whole = None if isinstance(base, TensorBase) else frozen(base, captured)
        if isinstance(base, TensorBase) or (whole is not None and whole[0] is not list):
            continue                # guarded as itself (by value), or not followed
        values = follow(base, steps)
        for n, value in enumerate(values):     # not into a tensor (its own guards)
            if isinstance(value, TensorBase):
                del values[n:]
                if id(value._data) in captured:
                    # the trace reads this very tensor (`m.c` of a global module): the path
                    # rebound to another one (`m.c = new`) traces again, as a name would
                    chain = Chain(where, root, steps[:n + 1], module)
                    found.append((chain, chain.text, value, (TensorBase, id(value))))
                    chains[0] += 1
                    values = []
                break
        for n in range(len(values), 1 if op == "LOAD_FAST" else 0, -1):
            value = values[n - 1]
            k = None if isinstance(value, TensorBase) else frozen(value, captured)
            if k is not None and k[0] is not list:
                chain = Chain(where, root, steps[:n], module)
                found.append((chain, chain.text, value, k))
                chains[0] += 1
                break
        if chains[0] >= MAX_CHAINS:
            return


_BY_IDENTITY = (types.FunctionType, TensorBase, list)     # (const_bindings' keys)


def consts_changed(consts: list) -> str | None:
    """Why a baked-in value no longer holds (see const_bindings), or None. Per call of a
    compiled function: the same object is the common case and costs one lookup."""
    for where, name, obj, key in consts:
        if type(where) is dict:
            now = where.get(name, _CONSTS)
        elif type(where) is Chain:
            try:
                now = where.read()
            except Exception:   # a missing attribute or key, an empty cell: a changed value
                now = _CONSTS
        else:
            try:
                now = where.cell_contents
            except ValueError:
                now = _CONSTS
        if now is obj:      # immutable, or guarded by identity: unchanged (arrays: see below)
            if type(obj) in _IMMUTABLE or key[0] in _BY_IDENTITY:
                continue
        elif key[0] in _BY_IDENTITY:
            return f"the Python value '{name}' was rebound"
        if now is _CONSTS or frozen(now) != key:
            return f"the Python value '{name}' (traced as {_short(obj)}) changed"
    return None


_IMMUTABLE = frozenset((bool, int, float, complex, str, bytes, type(None)))


def _short(x: Any) -> str:
    text = repr(x) if not isinstance(x, np.ndarray) else f"an array {x.dtype}{list(x.shape)}"
    return text if len(text) <= 60 else text[:57] + "..."


def _random_source(value: Any, names: set) -> bool:
    """Whether a global reaches Python's or NumPy's random numbers: the modules, a generator
    object, one of their bound methods (`from numpy.random import rand`), or numpy itself
    when the code also names `random` (`np.random.rand()`)."""
    if isinstance(value, types.ModuleType):
        return value.__name__ in ("random", "numpy.random") or \
            (value.__name__ == "numpy" and "random" in names)
    gens = (_pyrandom.Random, np.random.RandomState, np.random.Generator)
    return isinstance(value, gens) or isinstance(getattr(value, "__self__", None), gens)
