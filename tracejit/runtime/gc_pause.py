"""Python's cyclic garbage collector paused while a function is traced and compiled.

A compile allocates a great many objects that live through it (the traced graph, the plan,
kernel texts), which is what makes CPython decide to run a full collection: it happened in
the middle of nanoGPT-small's cold first call, where that one collection walked every object
of the process (PyTorch's too, when it is imported) and took ~120 ms of CPU. With the
collector paused, the compile's temporaries are freed by reference counting as before and no
longer count towards that decision; whatever is left for the collector is found by its next
young collection after the pause. Reference counting still frees everything acyclic
meanwhile, so memory does not grow with the pause; a cycle made during a compile waits for
the collector's next run.

The pause is process wide (the collector has no per-thread switch): it begins when the first
of any concurrent compiles starts and ends when the last one finishes, and it changes nothing
if the collector was already disabled when it began."""
from __future__ import annotations

import contextlib
import gc
import threading
from typing import Iterator

_lock = threading.Lock()
_depth = 0                  # compiles now inside the pause
_reenable = False           # whether the collector was enabled when the pause began


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    global _depth, _reenable
    with _lock:
        if _depth == 0:
            _reenable = gc.isenabled()
            gc.disable()
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0 and _reenable:
                gc.enable()
