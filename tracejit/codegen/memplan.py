"""Memory planning: where each intermediate buffer of a compiled graph lives.

Intermediates whose lives do not overlap share memory. A buffer lives from the first step that
touches it (the kernel writing it) to the last step that touches it (its last reader), both
ends included: a kernel never writes a buffer that it, or an earlier step still to read, reads
(a fused loop may read an input element after writing an output element of another index).
Placement is greedy by size (as TFLite's planner): the largest buffers are placed first, each
at the lowest offset of one arena where it overlaps no placed buffer whose life overlaps its
own. Outputs handed to the caller, inputs and constants are never planned: the caller can see
them, so they never alias anything.

The plan is codegen's decision; the runtimes bind views of one arena (runtime/buffers.py's
ScratchArena on the CPU, one CuPy allocation per call on the GPU) at the planned offsets."""
from __future__ import annotations

import bisect
import os
from dataclasses import dataclass
from typing import Hashable, Sequence

ALIGN = 64       # every buffer starts on a cache line (and a 16-byte vector load's boundary)


def _align(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


@dataclass
class MemoryPlan:
    """Byte offsets of the intermediates in one arena of `arena_bytes`."""
    offsets: dict[Hashable, int]             # buffer key -> byte offset
    sizes: dict[Hashable, int]               # buffer key -> bytes
    lives: dict[Hashable, tuple[int, int]]   # buffer key -> (first step, last step)
    arena_bytes: int                         # the peak: what the arena must hold
    separate_bytes: int                      # what one buffer per intermediate would hold
    shared: bool                             # False: TRACEJIT_MEMORY_PLAN=off, no sharing

    def overlapping_pairs(self) -> list[tuple[Hashable, Hashable]]:
        """Pairs of buffers that are live at once and share a byte (none, unless a bug)."""
        bad = []
        keys = [k for k in self.offsets if self.sizes[k]]
        for i, a in enumerate(keys):
            for b in keys[i + 1:]:
                (a0, a1), (b0, b1) = self.lives[a], self.lives[b]
                if a0 <= b1 and b0 <= a1 and \
                        self.offsets[a] < self.offsets[b] + self.sizes[b] and \
                        self.offsets[b] < self.offsets[a] + self.sizes[a]:
                    bad.append((a, b))
        return bad


def sharing_enabled() -> bool:
    return os.environ.get("TRACEJIT_MEMORY_PLAN", "on").lower() not in ("off", "0", "no")


def lifetimes(steps: Sequence[Sequence[Hashable]], keys: Sequence[Hashable]
              ) -> dict[Hashable, tuple[int, int]]:
    """(first, last) step touching each key; `steps` lists the buffers each step touches, in
    run order. A key no step touches lives at step 0 only."""
    want = set(keys)
    lives: dict[Hashable, tuple[int, int]] = {}
    for i, touched in enumerate(steps):
        for k in touched:
            if k in want:
                first = lives[k][0] if k in lives else i
                lives[k] = (first, i)
    for k in keys:
        lives.setdefault(k, (0, 0))
    return lives


def plan_memory(sizes: dict[Hashable, int], steps: Sequence[Sequence[Hashable]],
                share: bool | None = None) -> MemoryPlan:
    """Offsets for the buffers `sizes` (key -> bytes) touched by `steps` (see lifetimes)."""
    share = sharing_enabled() if share is None else share
    keys = list(sizes)
    lives = lifetimes(steps, keys)
    aligned = {k: _align(sizes[k]) for k in keys}
    offsets: dict[Hashable, int] = {}
    if not share:
        off = 0
        for k in keys:
            offsets[k] = off
            off += aligned[k]
        return MemoryPlan(offsets, dict(sizes), lives, off, off, False)
    # (offset, end, birth, death) of each buffer placed so far that takes space, in offset
    # order: a new buffer walks them up to the first gap that fits it among those alive with
    # it (the gaps of a deep model's hundreds of intermediates: no sort, no full scan each)
    placed: list[tuple[int, int, int, int]] = []
    # largest first; ties by earlier birth, then by key order, so that a plan is reproducible
    order = sorted(range(len(keys)), key=lambda i: (-aligned[keys[i]], lives[keys[i]][0], i))
    for i in order:
        k = keys[i]
        size = aligned[k]
        b0, b1 = lives[k]
        off = 0
        for lo, hi, p0, p1 in placed:       # the first gap that fits, in offset order
            if p0 > b1 or p1 < b0:
                continue                    # not alive at the same time
            if lo - off >= size:
                break
            if hi > off:
                off = hi
        offsets[k] = off
        if size:
            bisect.insort(placed, (off, off + size, b0, b1))
    peak = max((offsets[k] + aligned[k] for k in keys), default=0)
    return MemoryPlan(offsets, dict(sizes), lives, peak, sum(aligned.values()), True)


def fmt_bytes(n: int) -> str:
    if n < 1 << 10:
        return f"{n} B"
    if n < 1 << 20:
        return f"{n / (1 << 10):.1f} KiB"
    return f"{n / (1 << 20):.1f} MiB"


__all__ = ["MemoryPlan", "plan_memory", "lifetimes", "sharing_enabled", "fmt_bytes", "ALIGN",
           "describe_plan"]


def describe_plan(mp: MemoryPlan, labels: dict[Hashable, str], outputs_bytes: int,
                  constants_bytes: int) -> str:
    """The plan as text: its peak, the bytes without sharing, and each buffer's place and life
    (`labels`: key -> how to name the buffer)."""
    how = "shared by lifetime" if mp.shared else "not shared (TRACEJIT_MEMORY_PLAN=off)"
    lines = [f"memory plan: peak {fmt_bytes(mp.arena_bytes)} of scratch for {len(mp.offsets)} "
             f"intermediates ({fmt_bytes(mp.separate_bytes)} one buffer each; {how}); "
             f"new outputs {fmt_bytes(outputs_bytes)} per call; constants "
             f"{fmt_bytes(constants_bytes)}"]
    for k in sorted(mp.offsets, key=lambda k: (mp.offsets[k], mp.lives[k])):
        a, b = mp.lives[k]
        lines.append(f"  {labels[k]}: {mp.sizes[k]} B at offset {mp.offsets[k]}, "
                     f"live from call {a} to call {b}")
    return "\n".join(lines)
