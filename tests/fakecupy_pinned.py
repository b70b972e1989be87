"""Page-locked host memory and events for the fake CuPy (tests/fakecupy.py).

A copy from pinned memory on a stream is asynchronous, so its source must not be reused for
another copy before an event recorded after it (or the stream, or the device) was
synchronized: the fake refuses the second copy, as a GPU would copy wrong bytes."""
from __future__ import annotations

import itertools
import weakref

import numpy as np

import fakecupy


class _Pinned(bytearray):
    """cupy.cuda.alloc_pinned_memory's memory (np.frombuffer reads it)."""


# id(pinned memory) -> (a weak reference to it, stream, sequence): ids are reused once freed
_IN_FLIGHT: dict[int, tuple[weakref.ref, int, int]] = {}
_SEQ = itertools.count()


def alloc_pinned_memory(nbytes: int) -> _Pinned:
    fakecupy.COUNTS["pinned_allocs"] = fakecupy.COUNTS.get("pinned_allocs", 0) + 1
    return _Pinned(nbytes)


def _pinned_of(a) -> "_Pinned | None":
    while a is not None:
        if isinstance(a, _Pinned):
            return a
        a = a.obj if isinstance(a, memoryview) else getattr(a, "base", None)
    return None


def copy_starts(arr: np.ndarray, stream) -> None:
    """A host-to-device copy from `arr` on `stream` (ndarray.set): asynchronous if `arr` is
    pinned and a stream is given."""
    pinned = _pinned_of(arr)
    if pinned is None or stream is None:
        return
    entry = _IN_FLIGHT.get(id(pinned))
    if entry is not None and entry[0]() is pinned:
        raise RuntimeError("fake CuPy: a copy from pinned host memory whose previous copy to "
                           "the device may still be running (synchronize an event recorded "
                           "after it first)")
    _IN_FLIGHT[id(pinned)] = (weakref.ref(pinned), stream.ptr, next(_SEQ))
    fakecupy.LOG.append(("h2d pinned", arr.nbytes))


def settle(stream_ptr: int | None, before: int | None = None) -> None:
    """Copies from pinned memory on `stream_ptr` (every stream: None) enqueued before sequence
    number `before` (all: None) are done."""
    for k, (_, ptr, seq) in list(_IN_FLIGHT.items()):
        if (stream_ptr is None or ptr == stream_ptr) and (before is None or seq < before):
            del _IN_FLIGHT[k]


class Event:
    def __init__(self, block: bool = False, disable_timing: bool = False,
                 interprocess: bool = False) -> None:
        self.mark: tuple[int, int] | None = None

    def record(self, stream=None) -> None:
        fakecupy._no_capture("an event record (tracejit records none in a graph)")
        s = stream if stream is not None else fakecupy.get_current_stream()
        self.mark = (s.ptr, next(_SEQ))
        fakecupy.LOG.append(("event record",))

    def synchronize(self) -> None:
        fakecupy._no_capture("an event synchronize")
        if self.mark is not None:
            settle(*self.mark)
        fakecupy.LOG.append(("event wait",))
