"""Output buffers of compiled executables, and the rule that says when memory is reused.

The ownership rule: an array handed to the caller belongs to the caller. tracejit writes into
its memory again only after that array, and every view or array derived from it, has been
garbage-collected. Nothing counts references (`sys.getrefcount` differs between CPython
versions); the memory's lifetime is observed instead.

How: a large output is a view of a flat "anchor" array built over a `memoryview` of a pooled
block. NumPy records the anchor, not the block, as the base of every view made from the output
(the chain stops at an array whose base is not an array), so the anchor lives exactly as long
as anything that can reach the memory. A weak reference to the anchor returns the block to the
pool when it dies. Small outputs are plain `np.empty`: the C allocator already recycles them,
and for them the bookkeeping would cost more than it saves. Blocks above glibc's largest mmap
threshold (32 MiB) are the ones worth keeping: each fresh one costs page faults on every page."""
from __future__ import annotations

import threading
import weakref

import numpy as np

POOL_MIN_BYTES = 4 << 20         # smaller outputs come straight from np.empty
POOL_KEEP = 4                    # free blocks kept per size; more are released to the system


class OutputPool:
    """Recycles the memory of large outputs once their arrays are garbage. Thread-safe: the
    free lists change only by list.append / list.pop, and the live-reference set under a lock
    (weakref callbacks run in whichever thread drops the last reference)."""

    def __init__(self) -> None:
        self._free: dict[int, list[np.ndarray]] = {}
        self._live: dict[int, weakref.ref] = {}     # by id: a ref hashes as its array
        self._lock = threading.Lock()

    def empty(self, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        dtype = np.dtype(dtype)
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if nbytes < POOL_MIN_BYTES:
            return np.empty(shape, dtype)
        free = self._free.setdefault(nbytes, [])
        try:
            block = free.pop()
        except IndexError:
            block = np.empty(nbytes, np.uint8)
        anchor = np.frombuffer(memoryview(block), dtype)
        ref = weakref.ref(anchor, self._returner(block, free))
        with self._lock:
            self._live[id(ref)] = ref
        return anchor.reshape(shape)

    def _returner(self, block: np.ndarray, free: list):
        def give_back(ref: weakref.ref) -> None:
            with self._lock:
                self._live.pop(id(ref), None)
            if len(free) < POOL_KEEP:
                free.append(block)
        return give_back

    def live(self) -> int:
        """How many pooled blocks are held by arrays that are still alive."""
        return len(self._live)
