"""`optimizer.state` as a watched mapping: a compiled whole training step reads the optimizer's
state tensors as captures, so a change made to that mapping between calls (`state.clear()` to
reset the moments, `del state[p]`, `state[p]["exp_avg"] = t`, a new per-parameter dict) must
make the next call trace again rather than keep updating the old tensors it captured. Every
mutation calls the optimizer's `_restructured()` (one counter the trace guards on, see
optimizer.py); reads cost nothing extra. Copies and pickles are plain dicts, as torch's."""
from __future__ import annotations

from collections import defaultdict
from typing import Any, Callable


def _plain(items: dict) -> defaultdict:
    d: defaultdict = defaultdict(dict)
    d.update(items)
    return d


class _Watched:
    """The mutations both mappings below share: each tells the optimizer (`_changed`); their
    own __setitem__ and update say how an entry is stored."""

    _changed: Callable[[], None]

    def __delitem__(self, key) -> None:
        super().__delitem__(key)
        self._changed()

    def clear(self) -> None:
        super().clear()
        self._changed()

    def pop(self, *args):
        had = args[0] in self
        out = super().pop(*args)
        if had:
            self._changed()
        return out

    def popitem(self):
        out = super().popitem()
        self._changed()
        return out

    def setdefault(self, key, default=None):
        if key not in self:
            self[key] = default
        return self[key]

    def __ior__(self, other):
        self.update(other)
        return self


class ParamState(_Watched, dict):
    """One parameter's state entries (torch: a plain dict), telling the optimizer of changes."""

    def __init__(self, changed: Callable[[], None], *args: Any) -> None:
        super().__init__(*args)
        self._changed = changed

    def __setitem__(self, key, value) -> None:
        super().__setitem__(key, value)
        self._changed()

    def update(self, *args, **kwargs) -> None:       # type: ignore[override]
        super().update(*args, **kwargs)
        self._changed()

    def __reduce_ex__(self, protocol):               # copies and pickles are plain dicts
        return (dict, (dict(self),))


class OptimizerState(_Watched, defaultdict):
    """parameter -> ParamState, a defaultdict(dict) to its users, telling the optimizer of
    changes (an entry added, replaced or removed, or the whole state cleared)."""

    def __init__(self, changed: Callable[[], None], items: Any = ()) -> None:
        super().__init__(None)
        self._changed = changed
        for k, v in dict(items).items():
            dict.__setitem__(self, k, self._wrap(v))

    def _wrap(self, v: Any) -> Any:
        return ParamState(self._changed, v) if type(v) is dict else v

    def __missing__(self, key):
        v = self[key] = ParamState(self._changed)
        return v

    def __setitem__(self, key, value) -> None:
        super().__setitem__(key, self._wrap(value))
        self._changed()

    def update(self, *args, **kwargs) -> None:       # type: ignore[override]
        for k, v in dict(*args, **kwargs).items():
            self[k] = v

    def copy(self) -> defaultdict:                   # (defaultdict.copy would build this class)
        return _plain(dict(self))

    __copy__ = copy

    def __reduce_ex__(self, protocol):               # copies and pickles: defaultdict(dict)
        return (_plain, ({k: dict(v) if type(v) is ParamState else v
                          for k, v in self.items()},))

    def __repr__(self) -> str:
        return repr(dict(self))
