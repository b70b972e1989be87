"""Index maps: how a view or index primitive reads its operands, declared beside the primitive.

A fused kernel computes each output element at an index vector. A view primitive (broadcast,
transpose, slice, reshape, pad, concatenate, gather, windows, iota) does no arithmetic on
values: it only says which element of which operand the output element is. Its declaration in
the registry (`Primitive(..., index_map=..., rows=...)`) states that once, for every backend:

- `index_map(ix, idx, site, **params) -> Access`: given integer operations `ix` (the
  `IndexOps` below, supplied by a code generator, which folds literals), the output element's
  index vector `idx` (index expressions as strings) and the `Site` (operand and output shapes,
  and how to read an operand's value as an index), it returns what the element is: a `Read` of
  an operand at an index vector, a `Position` (the value is an index), `Zero`, or a `Select`
  between two accesses.
- `rows(j, site_shapes, out_shape, dep, **params) -> bool`: whether the op reads the operands
  marked in `dep` at the same first `j` axes it writes (row-wise fusion: a kernel that walks
  rows may then run it per row).

Nothing here knows about LLVM or CUDA: index expressions are opaque strings that `ix` builds.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol, Sequence, Union

Index = str                   # an index expression of the code generator (or a literal)


class IndexOps(Protocol):
    """The integer operations an index map may use (a code generator's index arithmetic)."""

    def iadd(self, a: Index, b: Index) -> Index: ...
    def imul(self, a: Index, k: int) -> Index: ...
    def idiv(self, a: Index, k: int, signed: bool = False) -> Index: ...
    def irem(self, a: Index, k: int, signed: bool = False) -> Index: ...
    def icmp(self, op: str, a: Index, b: Index) -> Index: ...
    def iand(self, a: Index, b: Index) -> Index: ...
    def clamp(self, a: Index, n: int) -> Index: ...
    def linear(self, idx: Sequence[Index], shape: Sequence[int]) -> Index: ...
    def wrap_index(self, i: object, n: int) -> Index: ...


@dataclass(frozen=True)
class Site:
    """What an index map knows of its instruction: the operands' and the output's shapes, and
    `operand(k, idx)`, the value of operand k at index vector idx (a code generator's scalar,
    which only `IndexOps.wrap_index` may turn into an index: gather reads its indices so)."""

    in_shapes: tuple[tuple[int, ...], ...]
    out_shape: tuple[int, ...]
    operand: Callable[[int, list[Index]], object]


@dataclass(frozen=True)
class Read:
    """Operand `k` at index vector `index`. With `same_offset`, the operand's row-major offset
    equals the output's (reshape): an operand held in memory is then read at the output's own
    offset, and `index` (a function, called only when needed) gives the index vector."""

    k: int
    index: Sequence[Index] | Callable[[], list[Index]]
    same_offset: bool = False

    def vector(self) -> list[Index]:
        return list(self.index() if callable(self.index) else self.index)


@dataclass(frozen=True)
class Position:
    """The element's value is this index (an int64 position)."""

    index: Index


@dataclass(frozen=True)
class Zero:
    """The element is zero (padding)."""


@dataclass(frozen=True)
class Select:
    """`then` where the index condition `cond` holds, else `other`."""

    cond: Index
    then: "Access"
    other: "Access"


Access = Union[Read, Position, Zero, Select]
IndexMap = Callable[..., Access]
RowRule = Callable[..., bool]


def strides(shape: Sequence[int]) -> list[int]:
    """Row-major strides, in elements."""
    out, acc = [], 1
    for d in reversed(shape):
        out.append(acc)
        acc *= d
    return out[::-1]


def reshape_runs(a: Sequence[int], b: Sequence[int]) -> list[tuple[list[int], list[int]]]:
    """Pair up runs of axes of shapes a and b (same size) whose products agree; each run of
    a is merged or split into its run of b."""
    if 0 in a or 0 in b:              # no elements: the loop never runs, one run will do
        return [(list(range(len(a))), list(range(len(b))))]
    runs, i, j = [], 0, 0
    while i < len(a) or j < len(b):
        ra, rb = [], []
        pa = pb = 1
        while True:
            if (pa <= pb or j == len(b)) and i < len(a):
                pa *= a[i]
                ra.append(i)
                i += 1
            elif j < len(b):
                pb *= b[j]
                rb.append(j)
                j += 1
            else:
                break
            if pa == pb and ra and rb and (i == len(a) or a[i] != 1 or j == len(b)) and \
                    (j == len(b) or b[j] != 1 or i == len(a)):
                break
        runs.append((ra, rb))
    return runs


def reshape_index(ix: IndexOps, idx: Sequence[Index], out_shape: Sequence[int],
                  in_shape: Sequence[int]) -> list[Index]:
    """The operand index of a reshape: both shapes split into runs of axes with equal products
    (merged or split axes), each run re-indexed alone, so an axis that stays as it is costs no
    division."""
    out: list[Index] = []
    for vr, xr in reshape_runs(out_shape, in_shape):
        if len(vr) == 1 and len(xr) == 1:
            out.append(idx[vr[0]])
            continue
        vs, xs = [out_shape[i] for i in vr], [in_shape[i] for i in xr]
        flat = ix.linear([idx[i] for i in vr], vs)
        for k, (d, s) in enumerate(zip(xs, strides(xs))):
            q = flat if s == 1 else ix.idiv(flat, s)
            out.append("0" if d == 1 else q if k == 0 else ix.irem(q, d))
    return out
