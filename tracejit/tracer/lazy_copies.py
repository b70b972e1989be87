"""Version counters of lazy copies: a primitive's eager result that is a read-only NumPy view
of an operand's memory (broadcast, reshape, transpose, slice inside an op: `x * b` reads
`broadcast(b)`, a 1-D `a @ w` reads `reshape(a)`).

Such a result is copied before anything writes to it, so writes to it never reach the
operand; but an in-place write to the operand changes the result's values. A node that
saved the result must then fail at backward, as PyTorch's does (there the result is a view
sharing the operand's version counter); before, it read the new values and returned a wrong
gradient without a word. So a lazy copy's counter is linked to its operand's: its version is
its own count plus the operand's, until it takes storage of its own (`unlink`)."""
from __future__ import annotations

import numpy as np


class LinkedCounter(list):
    """A version counter [n] whose value also moves with `base`, the counter of the tensor
    whose memory the owner's array reads (itself possibly linked further)."""

    __slots__ = ("base",)

    def __init__(self, base: list) -> None:
        super().__init__((0,))
        self.base = base

    def __getitem__(self, i):
        own = list.__getitem__(self, i)
        b = self.base
        return own if b is None else own + b[0]

    def __setitem__(self, i, value) -> None:
        b = self.base
        list.__setitem__(self, i, value if b is None else value - b[0])

    def __repr__(self) -> str:
        return f"[{self[0]}]"

    def unlink(self) -> None:
        """The owner has storage of its own now: the base's later writes do not reach it."""
        v = self[0]
        self.base = None
        list.__setitem__(self, 0, v)


def link(out, res: np.ndarray, args, data) -> None:
    """`out` (a new Tensor of `res`, a primitive's result with `res.base` set) reads an
    operand's memory: link its version counter to that operand's."""
    for a, d in zip(args, data):
        if np.may_share_memory(res, d):
            out._vc = LinkedCounter(a._version)
            return


def take_storage(t) -> np.ndarray:
    """t's array copied into storage of its own (t's array was a lazy copy, read-only): its
    version counter stops following the operand it was read from."""
    d = t._data = t._data.copy()
    vc = t._vc
    if type(vc) is LinkedCounter:
        vc.unlink()
    return d


def fresh(res, inputs) -> object:
    """`res`, a composite's result array, or a copy of it when it reads the memory of one of
    the `inputs` arrays. A composite is a copy in PyTorch (flip, roll, repeat, tile, ...); one
    that moves no data (a flip of length-1 axes, a roll by 0, a repeat by ones) returned its
    input's array itself or a view of it, so an in-place op on either changed the other."""
    if type(res) is not np.ndarray:
        return res
    for a in inputs:
        if res is a or (res.base is not None and type(a) is np.ndarray and
                        np.may_share_memory(res, a)):
            return res.copy()
    return res
