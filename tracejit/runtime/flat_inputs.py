"""Extern operands laid out back to back in one flat array: a DDP bucket in a compiled step.

A primitive with a `start_flat(flat, pieces, **params)` implementation (dist_bucket_start:
ir/prims_collective.py) reads its array operands (all but the last, `after`) as one flat
array, the pieces end to end. Here the CPU backend arranges that the program writes them there
in the first place: per call it takes a flat array from the output pool, and binds the slot
of each piece to its view of it, so the kernel or BLAS call that produces the piece writes
straight into the bucket. At the extern step the bucket is then complete, and start_flat
all-reduces it in place: no concatenation and no copy.

A piece is written in place only if it is an intermediate of the program (not an input, a
constant or an output the caller sees), of the bucket's dtype, appears once, and no later step
touches it but the step that waits for this start (it reads the pieces' shapes only): the
all-reduce changes the flat array while later steps run. A piece that is read later (or
repeated) keeps its own buffer and is copied into the bucket at the start; if any piece is
not an intermediate the extern runs as usual (its implementation concatenates).

A primitive marked `new_result` (dist_bucket_wait) returns an array of its own that nothing
else writes; its step binds the result slot to that array instead of copying it (the reduced
bucket is what the optimizer's kernels then read)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..ir.primitives import P


@dataclass
class FlatStep:
    """An extern step whose operands are laid out in one flat array per call."""
    size: int                          # elements of the flat array
    dtype: np.dtype
    # per piece: (slot, offset, size, shape, written in place)
    pieces: list[tuple[int, int, int, tuple, bool]]
    start: Callable                    # the primitive's start_flat(flat, pieces, **params)

    def bind(self, flat: np.ndarray, arrays: list, table) -> list[int]:
        """Point the in-place pieces' slots at their views of flat; returns those slots."""
        bound = []
        for slot, off, n, shape, in_place in self.pieces:
            if in_place:
                v = flat[off:off + n].reshape(shape)
                arrays[slot] = v
                table[slot] = id(v)
                bound.append(slot)
        return bound

    def complete(self, flat: np.ndarray, arrays: list) -> list[np.ndarray]:
        """Copy the pieces that kept their own buffers into flat; returns all pieces."""
        for slot, off, n, shape, in_place in self.pieces:
            if not in_place:
                np.copyto(flat[off:off + n].reshape(shape), arrays[slot])
        return [arrays[slot] for slot, *_ in self.pieces]


def _touches(step: tuple) -> list[int]:
    kind = step[0]
    if kind == "seg":
        return [s for call in step[1] for s in call[2]]
    if kind == "par":
        return list(step[3])
    if kind == "extern":
        return list(step[4]) + [step[5]]
    return [step[2][0], step[3][0], step[4]]


def plan(steps: list[tuple], scratch_layout: list[tuple]) -> dict[int, FlatStep]:
    """The flat layouts of a run description's extern steps that can have one (the module
    doc), by step index. `scratch_layout`: the intermediates, (slot, offset, shape, dtype)."""
    flat_steps = {i: st for i, st in enumerate(steps)
                  if st[0] == "extern" and hasattr(P.get(st[2]), "start_flat")}
    if not flat_steps:
        return {}
    scratch = {s: (shape, dtype) for s, _, shape, dtype in scratch_layout}
    touches = [_touches(st) for st in steps]
    out: dict[int, FlatStep] = {}
    taken: set[int] = set()
    for i, st in flat_steps.items():
        slots, ticket = st[4][:-1], st[5]
        if not slots or any(s not in scratch for s in slots):
            continue
        dtype = scratch[slots[0]][1]
        if any(scratch[s][1] != dtype for s in slots):
            continue
        # the last step touching each slot, but for the wait that pairs with this start
        last: dict[int, int] = {}
        for k, ts in enumerate(touches):
            if k != i and steps[k][0] == "extern" and ticket in steps[k][4]:
                continue
            for s in ts:
                last[s] = k
        pieces, off = [], 0
        for s in slots:
            shape = tuple(scratch[s][0])
            n = int(np.prod(shape, dtype=np.int64))
            in_place = s not in taken and last.get(s, i) <= i
            if in_place:
                taken.add(s)
            pieces.append((s, off, n, shape, in_place))
            off += n
        out[i] = FlatStep(off, dtype, pieces, P.get(st[2]).start_flat)
    return out


def new_result_steps(steps: list[tuple]) -> set[int]:
    """The extern steps whose result array may be kept as it is (`new_result`)."""
    return {i for i, st in enumerate(steps)
            if st[0] == "extern" and getattr(P.get(st[2]), "new_result", False)}
