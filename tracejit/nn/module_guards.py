"""What a trace of a module call depends on besides its tensors, so that a change between
compiled calls traces again instead of reusing a stale trace: the module's `training` flag,
which forward hooks run, and its plain Python attributes (eps, momentum, p, flags, a user's
`self.scale`, an activation function), which the trace bakes in as constants.
Module.__setattr__, the hook registrations and RemovableHandle.remove bump the attribute epoch
(tracer/state.py), so compiled calls re-read these guards only after such a change."""
from __future__ import annotations

import types
from functools import partial
from operator import itemgetter
from typing import Any, Callable

from ..tracer.state import STATE
from ..tracer.tensor_base import TensorBase

# what a forward bakes in: plain values (compared by value and type) and functions (by
# identity: TransformerEncoderLayer.activation = F.gelu)
_SCALARS = (bool, int, float, complex, str, type(None), types.FunctionType,
            types.BuiltinFunctionType)


def _is_scalar(v: Any) -> bool:
    return type(v) in _SCALARS or (type(v) is tuple and all(type(e) in _SCALARS for e in v))


def _scalars(d: dict) -> dict:
    """A module's plain Python attributes (numbers, strings, None, functions, tuples of
    them)."""
    return {k: v for k, v in d.items() if _is_scalar(v)}


def _same_scalar(a: Any, b: Any) -> bool:
    # by type too: `k = 2` and `k = 2.0` give an int tensor times k different dtypes
    return a is b or (type(a) is type(b) and a == b)


def _reader(module: Any, names: tuple) -> Callable[[], Any]:
    """What a trace guards of `module`, in one cheap read (compiled calls re-read it after
    every epoch bump): the ids of its forward hooks (new ones get new ids) and the values and
    types of its attributes `names` (None once one is deleted: that equals nothing read)."""
    d, pre, post = module.__dict__, module._forward_pre_hooks, module._forward_hooks
    get = itemgetter(*names) if names else None
    one = len(names) == 1

    def read() -> tuple | None:
        try:
            vals = (get(d),) if one else get(d) if get is not None else ()
        except KeyError:
            return None
        return (*pre, None, *post, None, *vals, *map(type, vals))
    return read


class TensorAttributes:
    """At the end of a trace: the plain tensor attributes the graph reads or writes of the
    modules called and of their submodules (children reached by `self.attention.forward(x)`,
    not through __call__: llama2.c's blocks; Meta's KV caches `self.cache_k`, written in
    place) are guarded by identity, so rebinding one between calls traces again."""

    def __init__(self) -> None:
        self.roots: dict[int, Any] = {}

    def __call__(self, ctx: Any) -> None:
        read = ctx.read_ids()
        todo, seen = list(self.roots.values()), set()
        self.roots = {}
        while todo:
            m = todo.pop()
            if id(m) in seen:
                continue
            seen.add(id(m))
            d = m.__dict__
            todo += [c for c in d.get("_modules", {}).values() if c is not None]
            for k, v in d.items():
                if isinstance(v, TensorBase) and not v._traced and id(v) in read:
                    ctx.guard_value((id(m), k), partial(d.get, k), f"{type(m).__name__}.{k}",
                                    True, seen=v)


def call_traced(module: Any, args: tuple, kwargs: dict) -> Any:
    """Module.__call__ inside a trace: record the guards above, then run the hooks and
    forward (inlined into the trace)."""
    ctx = STATE.traces[-1]
    ctx.guard_attr(module, "training")
    d = module.__dict__
    before = _scalars(d)
    tensors = [(k, v) for k, v in d.items() if isinstance(v, TensorBase)]
    out = module._run_hooked(args, kwargs)
    # a plain tensor attribute the trace read (`self.total`, not a buffer: those guard in
    # Module.__getattr__) is that very tensor in the trace: rebinding it, as a forward that
    # sets `self.total = self.total + x` does each call (attr_slots.py), traces again
    read = ctx.read_ids()
    for k, v in tensors:
        if id(v) in read:
            ctx.guard_value((id(module), k), partial(d.get, k), f"{type(module).__name__}.{k}",
                            True, seen=v)
    scan = ctx.finishers.get("nn.tensor_attributes")
    if scan is None:
        scan = ctx.finishers["nn.tensor_attributes"] = TensorAttributes()
    scan.roots[id(module)] = module
    # an attribute the forward itself set to a new value (a counter, a cached shape) is its
    # state, not an input: the compiled call does not run that Python, so guarding it would
    # only retrace (every call, for a module called twice in one trace). (The hooks guarded
    # are those that ran: ones registered after this point retrace the next call.)
    # (`training` has its own guard above, by value: train/eval toggles reuse kept traces)
    names = tuple(k for k, v in _scalars(d).items()
                  if k in before and k != "training" and _same_scalar(before[k], v))
    ctx.guard_value((id(module), "_hooks_scalars"), _reader(module, names),
                    f"the forward hooks or the Python attributes {list(names)} of a "
                    f"{type(module).__name__}")
    return out
