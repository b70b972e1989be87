"""Tensors a trace makes and stores as a plain attribute of an nn.Module: llama2.c's
`self.last_loss = F.cross_entropy(...)` in forward, read by the training loop as
`model.last_loss`. Such a tensor outlives the trace (an escape, see trace.find_escapes), and
an escape's call runs once and traces again, every call. When the module attribute is the
tensor's only holder outside the trace, the attribute is a *slot*: the tensor is one more
graph output, and every call of the kept trace sets the attribute to a new tensor holding it
(with the call's autograd history), as the eager forward would. Only nn.Module attributes are
seen (Module.__setattr__ reports them); a tensor stored elsewhere too stays an escape."""
from __future__ import annotations

import weakref
from typing import Any, Sequence

from ..ir.core import Value
from .tensor_base import TensorBase

Slots = list[tuple[weakref.ref, str]]


def note_store(obj: Any, name: str, value: TensorBase, old: Any) -> None:
    """`obj.name = value` stored a plain attribute (Module.__setattr__) in place of `old`: a
    traced value's trace remembers where."""
    stores = getattr(value._born_in, "attr_stores", None)
    if stores is not None and value._traced:
        stores.append((obj, name, old if isinstance(old, TensorBase) else None))


def take_slots(ctx: Any) -> list[tuple[Value, Slots]]:
    """The tensors made in `ctx` (whose autograd tapes are cut already) held outside it only
    by attributes recorded by note_store: each such attribute is emptied (the call fills it)
    and the tensor freed; returns (its value, its slots as (weak object, name)) for each."""
    groups: dict[int, tuple[weakref.ref, list]] = {}
    seen: set = set()
    stores, ctx.attr_stores = ctx.attr_stores, []
    read = ctx.read_ids()
    replaced_read = {(id(obj), name) for obj, name, old in stores if id(old) in read}
    for obj, name, _ in stores:
        if (id(obj), name) in seen or (id(obj), name) in replaced_read or \
                (id(obj), name) in ctx._attr_guarded:
            # (the trace read the tensor it replaced: `self.total = self.total + x` depends on
            # the last call's value, a new trace each call: it stays an escape, which says so)
            continue
        seen.add((id(obj), name))
        t = getattr(obj, "__dict__", {}).get(name)
        if isinstance(t, TensorBase) and t._traced and t._born_in is ctx and \
                t._data.graph is ctx.graph:
            try:
                where = weakref.ref(obj)
            except TypeError:
                continue
            groups.setdefault(id(t), (weakref.ref(t), []))[1].append((obj, where, name))
    t = stores = old = None
    found = []
    for ref, slots in groups.values():
        value = ref()._data
        for obj, _, name in slots:
            del obj.__dict__[name]
        if ref() is None:        # nothing else held it: the slots are all its holders
            found.append((value, [(where, name) for _, where, name in slots]))
            continue
        t = ref()                # held elsewhere too: it stays there, an escape
        for obj, _, name in slots:
            obj.__dict__[name] = t
        t = None
    return found


def fill_slots(slots: Sequence[Slots], values: Sequence[Any]) -> None:
    """After a call: each slot's attribute set to the new tensor of its output."""
    for where, value in zip(slots, values):
        t = value if isinstance(value, TensorBase) else TensorBase(value)
        for ref, name in where:
            obj = ref()
            if obj is not None:
                setattr(obj, name, t)
