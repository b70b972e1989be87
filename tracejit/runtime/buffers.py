"""Output buffers of compiled executables, and the rule that says when memory is reused.

The ownership rule: an array handed to the caller belongs to the caller. tracejit writes into
its memory again only after that array, and every view or array derived from it, has been
garbage-collected. Nothing counts references (`sys.getrefcount` differs between CPython
versions); the memory's lifetime is observed instead.

How: a large output is a view of a flat "anchor" array built over a `memoryview` of a pooled
block. NumPy records the anchor, not the block, as the base of every view made from the output
(the chain stops at an array whose base is not an array), so the anchor lives exactly as long
as anything that can reach the memory. A weak reference to the anchor returns the block to the
pool when it dies. Small outputs (under POOL_MIN_BYTES, half a huge page) are plain
`np.empty`: the C allocator already recycles them, and for them the bookkeeping would cost more
than it saves. Blocks above glibc's largest mmap threshold (32 MiB) are the ones worth keeping:
each fresh one costs page faults on every page.

Pooled blocks are mapped on 2 MiB huge pages where Linux offers them (transparent huge pages,
asked for with madvise), each starting on a huge page and so on a cache line. Both matter to a
kernel that streams a large output, like the per-example weight gradient of #15's MLP
(256x64x128 float32, 8 MiB written once by one outer-product kernel): malloc's large blocks
start 16 bytes past a page, so every 64-byte vector store straddled two cache lines (140 us at
that offset, 101 us aligned, with the block in cache); and on 4 KiB pages a store stream out of
cache misses the TLB and loses the hardware prefetcher at every page (~500 vs ~300 us, in C, for
those 8 MiB written to memory). NumPy asks for huge pages itself only from 4 MiB, and only
for the aligned middle of a block, so a 1.3 MiB gradient from np.empty stayed on small pages."""
from __future__ import annotations

import itertools
import math
import mmap
import threading
import weakref

import numpy as np

POOL_MIN_BYTES = 1 << 20         # smaller outputs come straight from np.empty
POOL_KEEP = 4                    # free blocks kept per size; more are released to the system
POOL_MAX_BYTES = 256 << 20       # free bytes kept per pool (all sizes); more are released
ALIGN = 64                       # pooled outputs start on a cache line at least
HUGE_PAGE = 2 << 20              # x86-64's transparent huge page
_POOLS: "weakref.WeakSet[OutputPool]" = weakref.WeakSet()


_SHARED: list = []


def shared_pool() -> "OutputPool":
    """The one pool every LLVM executable draws its large outputs from. One per process, not
    one per executable: free blocks are bounded once (POOL_KEEP per size, POOL_MAX_BYTES in
    all) however many executables run, and an output freed by one executable is reused by the
    next. Eager mode compiles a one-op executable per op and layout (runtime/eager_kernels.py):
    with a pool each, every one of them kept its own free blocks (16 MiB per op on 4M floats)."""
    if not _SHARED:
        _SHARED.append(OutputPool())
    return _SHARED[0]


def clear_pools() -> None:
    """Release every pool's free blocks (compile.clear_cache does). Blocks still held by live
    arrays are untouched; they return to their pool when those die, within its caps."""
    for pool in list(_POOLS):
        pool.clear()


def _aligned_memory(nbytes: int) -> memoryview:
    """nbytes of new memory starting on a cache line: a memoryview into a slightly larger
    block, which the view keeps alive."""
    block = np.empty(nbytes + ALIGN, np.uint8)
    off = -block.ctypes.data % ALIGN
    return memoryview(block)[off:off + nbytes]


_HUGE = hasattr(mmap, "MADV_HUGEPAGE") and hasattr(mmap, "MAP_ANONYMOUS")


def _huge_page_memory(nbytes: int) -> memoryview:
    """nbytes of new memory starting on a huge page, its huge pages asked for: a memoryview
    into a private anonymous mapping, which the view keeps alive (the mapping is unmapped when
    the last view dies). The last, partial huge page is asked for only when at least half of it
    is used: a huge page is all resident once touched, so at most 1 MiB per block is wasted.
    Where the system has no transparent huge pages, a cache-line-aligned block."""
    if not _HUGE:
        return _aligned_memory(nbytes)
    try:
        m = mmap.mmap(-1, nbytes + 2 * HUGE_PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    except (OSError, ValueError):
        return _aligned_memory(nbytes)
    off = -np.frombuffer(m, np.uint8, 1).ctypes.data % HUGE_PAGE
    full, tail = divmod(nbytes, HUGE_PAGE)
    pages = full + (2 * tail >= HUGE_PAGE)
    if pages:
        try:
            m.madvise(mmap.MADV_HUGEPAGE, off, pages * HUGE_PAGE)
        except OSError:            # transparent huge pages off: small pages, still aligned
            pass
    return memoryview(m)[off:off + nbytes]


class OutputPool:
    """Recycles the memory of large outputs once their arrays are garbage. Thread-safe: the
    free lists, their byte count and the live-reference set change under a lock (weakref
    callbacks run in whichever thread drops the last reference). A pool keeps at most
    POOL_KEEP free blocks of a size and POOL_MAX_BYTES free bytes in all."""

    def __init__(self, max_bytes: int | None = None) -> None:
        self._free: dict[int, list[memoryview]] = {}
        self._free_bytes = 0
        self.max_bytes = POOL_MAX_BYTES if max_bytes is None else max_bytes
        self._live: dict[int, weakref.ref] = {}     # by id: a ref hashes as its array
        # reentrant: a garbage collection can start while this thread holds the lock (an
        # allocation under it) and free a cycle holding a pooled output, whose return then
        # runs in this same thread; a plain Lock deadlocked there. A return nested inside
        # another pool operation leaves the free lists consistent (a cap may be passed by one
        # block).
        self._lock = threading.RLock()
        _POOLS.add(self)

    def empty(self, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        dtype = np.dtype(dtype)
        # math.prod, not np.prod: np.prod took 6 of the 12 us this method cost per output
        nbytes = math.prod(shape) * dtype.itemsize
        if nbytes < POOL_MIN_BYTES:
            return np.empty(shape, dtype)
        mem = None
        with self._lock:
            free = self._free.get(nbytes)
            if free:
                mem = free.pop()
                self._free_bytes -= nbytes
        if mem is None:
            mem = _huge_page_memory(nbytes)
        # frombuffer keeps the memoryview as the anchor's base (np.ndarray(buffer=) would
        # record the block instead, and views would outlive the anchor)
        anchor = np.frombuffer(mem, dtype)
        ref = weakref.ref(anchor, self._returner(mem, nbytes))
        with self._lock:
            self._live[id(ref)] = ref
        return anchor.reshape(shape)

    def _returner(self, mem: memoryview, n: int):
        def give_back(ref: weakref.ref) -> None:
            with self._lock:
                self._live.pop(id(ref), None)
                free = self._free.setdefault(n, [])
                if len(free) < POOL_KEEP and self._free_bytes + n <= self.max_bytes:
                    free.append(mem)
                    self._free_bytes += n
        return give_back

    def clear(self) -> None:
        """Release the free blocks."""
        with self._lock:
            self._free.clear()
            self._free_bytes = 0

    def free_bytes(self) -> int:
        """Bytes held in free blocks, waiting for reuse."""
        return self._free_bytes

    def live(self) -> int:
        """How many pooled blocks are held by arrays that are still alive."""
        return len(self._live)


# -- scratch ---------------------------------------------------------------------------------
# Intermediates are not held per executable: every executable a thread runs uses that thread's
# one arena, grown to the largest memory plan the thread has run (codegen.memplan). A call
# leaves nothing in its intermediates that a later call reads, so executables take turns on
# one arena. Threads have arenas of their own (calls of two threads overlap), and a call made
# while the thread's arena is in use (an extern primitive calling a compiled function) gets a
# private arena for its duration.
_serials = itertools.count(1)
_local = threading.local()


class ScratchArena:
    """One block of scratch memory and the views of it bound for each executable's plan."""

    def __init__(self, nbytes: int) -> None:
        self.block = np.empty(max(nbytes, 1), np.uint8)
        self.nbytes = nbytes
        self.serial = next(_serials)    # frames bound to this arena remember it
        self.busy = False
        # executable -> [(slot, view)]: dies with the arena or with the executable
        self.views: "weakref.WeakKeyDictionary[object, list]" = weakref.WeakKeyDictionary()

    def bind(self, owner: object, layout: list[tuple[int, int, tuple[int, ...], np.dtype]]
             ) -> list[tuple[int, np.ndarray]]:
        """Views for `layout` ([(slot, offset, shape, dtype)]), made once per owner."""
        got = self.views.get(owner)
        if got is None:
            got = []
            for slot, off, shape, dtype in layout:
                n = int(np.prod(shape, dtype=np.int64))
                got.append((slot, self.block[off:off + n * dtype.itemsize].view(dtype)
                            .reshape(shape)))
            self.views[owner] = got
        return got


def take_arena(nbytes: int) -> ScratchArena:
    """This thread's arena, at least nbytes large, marked busy; a private one if it is busy.
    Give it back with release_arena."""
    ar = getattr(_local, "arena", None)
    if ar is not None and ar.busy:
        ar = ScratchArena(nbytes)       # re-entered: never the outer call's memory
        ar.busy = True
        return ar
    if ar is None or ar.nbytes < nbytes:
        ar = _local.arena = ScratchArena(nbytes)
    ar.busy = True
    return ar


def release_arena(ar: ScratchArena) -> None:
    ar.busy = False


def arena_bytes() -> int:
    """Bytes of this thread's scratch arena (0 without one)."""
    ar = getattr(_local, "arena", None)
    return 0 if ar is None else ar.nbytes


def release_scratch() -> None:
    """Drop this thread's scratch arena (the next call allocates one of the size it needs)."""
    ar = getattr(_local, "arena", None)
    if ar is not None and not ar.busy:
        _local.arena = None
