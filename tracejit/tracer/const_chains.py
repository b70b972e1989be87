"""The Python values a traced function reads *through* a global or closure object, which a
trace bakes in like the names themselves (const_guards.py): `cfg.lr`, `args.model.eps`,
`CFG["scale"]`, `SCALES[0]`, `cfg.sizes[1]`. Found in the function's bytecode (a LOAD_GLOBAL
or LOAD_DEREF followed by LOAD_ATTRs and constant subscripts), kept as a `Chain` that re-reads
the same path each call. Only plain data is followed, so that a guard never runs user code: an
instance's or a class's own attributes, a module's, `__slots__` and namedtuple fields, items of
exact dicts, lists and tuples; not properties or other descriptors, nor `__getattr__` objects
(when a guarded path's root is later rebound to such an object, the re-read may run them, as
the function itself would)."""
from __future__ import annotations

import dis
import types
import weakref
from functools import partial
from operator import attrgetter
from typing import Any, Callable, Iterator

MISSING = object()          # what plain_attr/plain_item give for what is not plain data

MAX_CHAINS = 64             # chains guarded per trace (a bound on the work, not on programs)

_ITEMS = (dict, list, tuple)


def _tuplegetter_type() -> type:
    import collections
    return type(collections.namedtuple("_P", "a").__dict__["a"])


# descriptors that read a stored field, no user code: __slots__ members, namedtuple fields
_FIELD_DESCRIPTORS = (types.MemberDescriptorType, _tuplegetter_type())


class Chain:
    """A path `root.attr[key]...` from a globals dict, a closure cell or a weak reference (a
    compiled object's `self`); `read()` follows it now, raising when a step fails (a changed
    value to its guard). A path of attributes only from a cell or a module's globals is read
    by one C-level attrgetter: about 0.1 us a guard per call, against 0.5 us in Python."""

    __slots__ = ("text", "read")

    def __init__(self, where: Any, root: str, steps: tuple, module: Any = None) -> None:
        self.text = root + "".join(f".{k}" if kind == "attr" else f"[{k!r}]"
                                   for kind, k in steps)
        if all(kind == "attr" for kind, _ in steps) and type(where) is not weakref.ref and \
                (type(where) is not dict or module is not None):
            path = ".".join(k for _, k in steps)
            self.read = partial(attrgetter(f"{root}.{path}"), module) \
                if type(where) is dict else partial(attrgetter(f"cell_contents.{path}"), where)
            return
        getters: list = []
        run: list = []
        for kind, k in steps + (("end", None),):
            if kind == "attr":
                run.append(k)
                continue
            if run:         # consecutive attributes: one C-level attrgetter
                getters.append(attrgetter(".".join(run)))
                run = []
            if kind == "item":
                getters.append(_item_getter(k))
        self.read = _reader(where, root, tuple(getters))


def _reader(where: Any, root: str, getters: tuple) -> Callable[[], Any]:
    def read() -> Any:
        if type(where) is dict:
            x = where[root]
        elif type(where) is weakref.ref:
            x = where()
            if x is None:
                raise ReferenceError(root)
        else:
            x = where.cell_contents
        for get in getters:
            x = get(x)
        return x
    return read


def _item_getter(key: Any) -> Callable[[Any], Any]:
    def get(x: Any) -> Any:
        if type(x) not in _ITEMS:       # rebound to another kind of object: no user code
            raise TypeError
        return x[key]
    return get


def plain_attr(obj: Any, name: str) -> Any:
    """obj.name when it is plain data (see the module doc), else MISSING."""
    if isinstance(obj, types.ModuleType):
        return obj.__dict__.get(name, MISSING)
    if isinstance(obj, type):
        if type(obj) is not type:       # a metaclass may compute attributes
            return MISSING
        for k in obj.__mro__:
            if name in k.__dict__:
                v = k.__dict__[name]
                return MISSING if hasattr(type(v), "__get__") else v
        return MISSING
    cls = type(obj)
    if _custom_getattribute(cls):
        return MISSING
    found = MISSING
    for k in cls.__mro__:
        if name in k.__dict__:
            found = k.__dict__[name]
            break
    kind = type(found)
    if found is not MISSING and hasattr(kind, "__get__"):
        if kind in _FIELD_DESCRIPTORS:
            try:
                return getattr(obj, name)
            except AttributeError:      # an unset slot
                return MISSING
        if hasattr(kind, "__set__") or hasattr(kind, "__delete__"):
            return MISSING              # a property: user code, maybe costly or side effects
    d = getattr(obj, "__dict__", None)
    if type(d) is dict and name in d:
        return d[name]
    if found is not MISSING and not hasattr(kind, "__get__"):
        return found                    # a class-level constant (`eps = 1e-5`)
    return MISSING                      # a method, or only __getattr__ knows


def _custom_getattribute(cls: type) -> bool:
    """Whether cls's attribute lookup is a Python function (user code, maybe computing)."""
    for k in cls.__mro__:
        if "__getattribute__" in k.__dict__:
            return isinstance(k.__dict__["__getattribute__"], types.FunctionType)
    return False


def plain_item(obj: Any, key: Any) -> Any:
    """obj[key] for an exact dict, list or tuple (no user __getitem__), else MISSING."""
    t = type(obj)
    if t is dict:
        try:
            return obj.get(key, MISSING)
        except TypeError:               # unhashable
            return MISSING
    if (t is list or t is tuple) and type(key) is int:
        return obj[key] if -len(obj) <= key < len(obj) else MISSING
    return MISSING


_ROOTS = ("LOAD_GLOBAL", "LOAD_NAME", "LOAD_DEREF")


def read_paths(code: types.CodeType, this: str | None = None) \
        -> Iterator[tuple[str, str, tuple]]:
    """(LOAD_GLOBAL, LOAD_NAME or LOAD_DEREF, name, steps) for each global or cell variable
    the code reads, with the attribute/constant-subscript path read from it right after
    (steps: ("attr", name) or ("item", key), maybe none). A LOAD_METHOD ends a path (what it
    calls is not a value; what it is called on may be). With `this` (a forward's `self`), also
    the LOAD_FAST paths from that argument, unless the code rebinds it."""
    ins = list(dis.get_instructions(code))
    if this is not None and any(i.opname in ("STORE_FAST", "DELETE_FAST") and
                                i.argval == this for i in ins):
        this = None
    n, i = len(ins), 0
    while i < n:
        op = ins[i]
        i += 1
        if op.opname not in _ROOTS and not (op.opname == "LOAD_FAST" and op.argval == this):
            continue
        steps: list = []
        while i < n:
            nxt = ins[i]
            if nxt.opname == "LOAD_ATTR":
                steps.append(("attr", nxt.argval))
                i += 1
            elif nxt.opname == "LOAD_CONST" and i + 1 < n and \
                    ins[i + 1].opname == "BINARY_SUBSCR":
                steps.append(("item", nxt.argval))
                i += 2
            else:
                break
        yield op.opname, op.argval, tuple(steps)


def follow(root: Any, steps: tuple) -> list:
    """The values along `steps` from root (one per step), through plain data only, up to the
    first step that is not (a property, a method, a missing key)."""
    x, seen = root, []
    for kind, k in steps:
        x = plain_attr(x, k) if kind == "attr" else plain_item(x, k)
        if x is MISSING:
            break
        seen.append(x)
    return seen
