"""What a trace of a module call depends on besides its tensors, so that a change between
compiled calls traces again instead of reusing a stale trace: the module's `training` flag,
which forward hooks run, and its plain Python attributes (eps, momentum, p, flags, a user's
`self.scale`), which the trace bakes in as constants. Module.__setattr__, the hook
registrations and RemovableHandle.remove bump the attribute epoch (tracer/state.py), so the
compiled calls re-read these guards only after such a change."""
from __future__ import annotations

from typing import Any

from ..tracer.state import STATE

_SCALARS = (bool, int, float, complex, str, type(None))


def _is_scalar(v: Any) -> bool:
    return type(v) in _SCALARS or (type(v) is tuple and all(type(e) in _SCALARS for e in v))


def _scalars(d: dict) -> dict:
    """A module's plain Python attributes (numbers, strings, None, tuples of them)."""
    return {k: v for k, v in d.items() if _is_scalar(v)}


def _same_scalar(a: Any, b: Any) -> bool:
    # by type too: `k = 2` and `k = 2.0` give an int tensor times k different dtypes
    return a is b or (type(a) is type(b) and a == b)


def _read_scalars(d: dict, names: tuple) -> tuple:
    """What a trace guards of a module's attributes `names`: their values and types (a
    deleted one reads as the dict itself, which equals nothing it was)."""
    vals = tuple(d.get(k, d) for k in names)
    return vals + tuple(map(type, vals))


def call_traced(module: Any, args: tuple, kwargs: dict) -> Any:
    """Module.__call__ inside a trace: record the guards above, then run the hooks and
    forward (inlined into the trace)."""
    ctx = STATE.traces[-1]
    ctx.guard_attr(module, "training")
    pre, post = module._forward_pre_hooks, module._forward_hooks
    ctx.guard_value((id(module), "_hooks"), lambda: (*pre.values(), "|", *post.values()),
                    f"the forward hooks of a {type(module).__name__}", True)
    d = module.__dict__
    before = _scalars(d)
    out = module._run_hooked(args, kwargs)
    # an attribute the forward itself set to a new value (a counter, a cached shape) is its
    # state, not an input: the compiled call does not run that Python, so guarding it would
    # only retrace (every call, for a module called twice in one trace)
    names = tuple(k for k, v in _scalars(d).items() if k in before and _same_scalar(before[k], v))
    ctx.guard_value((id(module), "_scalars"), lambda: _read_scalars(d, names),
                    f"the Python attributes {list(names)} of a {type(module).__name__}")
    return out
