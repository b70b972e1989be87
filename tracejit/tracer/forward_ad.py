"""`tj.autograd.forward_ad`: PyTorch's eager dual tensors (forward-mode AD, op by op).

    with forward_ad.dual_level():
        x = forward_ad.make_dual(primal, tangent)
        y = f(x)
        value, jvp = forward_ad.unpack_dual(y)

A dual tensor is a tensor with a tangent attached at a level. While any level is open, every
primitive applied to tensors (see dispatch.apply_primitive) also computes its output's tangent
with the primitive's JVP rule from the registry (the same rules the IR transform of
`ir.forward` uses), once per level at which an operand has a tangent. A rule for level k runs
with levels k and above switched off, so its own ops carry only the tangents of enclosing
levels: levels nest (forward over forward), and the tangent ops are recorded on the eager tape
like any op (reverse over forward). Tangents are symbolic: an operand without one has a zero
tangent that is never built; integer and bool results never get one.

Tangents live in per-level tables keyed by the tensor (held weakly), not on the Tensor, so a
closed level leaves nothing behind. In-place ops on a dual tensor carry the new value's tangent
over (see inplace.py)."""
from __future__ import annotations

import threading
import weakref
from collections import namedtuple
from typing import Any, Callable

from ..ir.core import user_location
from ..ir.forward import jvp_rule
from ..ir.primitives import P, bind, zeros_like
from .state import special_mode
from .tensor_base import TensorBase as Tensor

UnpackedDualTensor = namedtuple("UnpackedDualTensor", "primal tangent")


class _Level:
    __slots__ = ("index", "tangents")

    def __init__(self, index: int) -> None:
        self.index = index
        self.tangents: dict[int, tuple[weakref.ref, Tensor]] = {}

    def get(self, t: Tensor) -> Tensor | None:
        e = self.tangents.get(id(t))
        if e is None or e[0]() is not t:
            return None
        return e[1]

    def set(self, t: Tensor, tangent: Tensor | None) -> None:
        if tangent is None:
            self.tangents.pop(id(t), None)
            return
        key, table = id(t), self.tangents

        def drop(_ref, key=key, table=table):
            e = table.get(key)
            if e is not None and e[0] is _ref:
                del table[key]
        self.tangents[key] = (weakref.ref(t, drop), tangent)


class _FwdState(threading.local):
    def __init__(self) -> None:
        self.levels: list[_Level] = []
        self.ceiling: int | None = None     # while a level's rule runs: the levels below it


FWD = _FwdState()


def _active() -> list[_Level]:
    lv = FWD.levels
    return lv if FWD.ceiling is None else lv[:FWD.ceiling]


def enter_dual_level() -> int:
    """Open a new (innermost) level; returns its index."""
    lvl = _Level(len(FWD.levels))
    special_mode(1)
    FWD.levels.append(lvl)
    return lvl.index


def exit_dual_level(*, level: int | None = None) -> None:
    if not FWD.levels:
        raise RuntimeError("exit_dual_level: no dual level is open")
    idx = FWD.levels[-1].index if level is None else level
    if idx != FWD.levels[-1].index:
        raise RuntimeError(f"exit_dual_level: level {idx} is not the innermost open level "
                           f"({FWD.levels[-1].index}); close levels in reverse order")
    FWD.levels.pop().tangents.clear()
    special_mode(-1)


class dual_level:
    """Context manager: `with dual_level():` opens a level for make_dual/unpack_dual."""

    def __enter__(self) -> int:
        self.level = enter_dual_level()
        return self.level

    def __exit__(self, *exc) -> bool:
        exit_dual_level(level=self.level)
        return False


def _level(level: int | None, what: str) -> _Level:
    if not FWD.levels:
        raise RuntimeError(f"{what}: no dual level is open; use `with "
                           f"tj.autograd.forward_ad.dual_level():` (at {user_location()})")
    if level is None:
        return FWD.levels[-1]
    if not 0 <= level < len(FWD.levels):
        raise RuntimeError(f"{what}: level {level} is not open (at {user_location()})")
    return FWD.levels[level]


def _alias(t: Tensor, ceiling: int | None) -> Tensor:
    """A new tensor with t's value, differentiable to t (a reshape to its own shape), carrying
    t's tangents at the levels below `ceiling` only."""
    prev = FWD.ceiling
    FWD.ceiling = ceiling
    try:
        return bind(P.reshape, t, shape=t.shape)
    finally:
        FWD.ceiling = prev


def make_dual(tensor: Tensor, tangent: Tensor, *, level: int | None = None) -> Tensor:
    """A tensor with `tensor`'s value (a view of it for autograd) and tangent `tangent` at
    `level` (the innermost open one by default). tangent must match tensor's shape and dtype."""
    lvl = _level(level, "make_dual")
    for what, x in (("primal", tensor), ("tangent", tangent)):
        if not isinstance(x, Tensor):
            raise TypeError(f"make_dual: the {what} must be a Tensor, got {type(x).__name__} "
                            f"(at {user_location()})")
    if not tensor.dtype.is_float:
        raise TypeError(f"make_dual: expected a floating-point primal, got "
                        f"{tensor.dtype.name}{list(tensor.shape)} (at {user_location()})")
    if tangent.shape != tensor.shape or tangent.dtype is not tensor.dtype:
        raise ValueError(f"make_dual: the tangent {tangent.dtype.name}{list(tangent.shape)} "
                         f"must have the primal's shape and dtype, "
                         f"{tensor.dtype.name}{list(tensor.shape)} (at {user_location()})")
    out = _alias(tensor, lvl.index)       # (outer levels' tangents of tensor carry over)
    lvl.set(out, tangent)
    return out


def unpack_dual(tensor: Tensor, *, level: int | None = None) -> UnpackedDualTensor:
    """(primal, tangent) of `tensor` at `level`: the primal is a view of tensor without that
    level's tangent; the tangent is None where tensor has none."""
    if not FWD.levels:
        return UnpackedDualTensor(tensor, None)
    lvl = _level(level, "unpack_dual")
    tangent = lvl.get(tensor)
    if tangent is None:
        return UnpackedDualTensor(tensor, None)
    return UnpackedDualTensor(_alias(tensor, lvl.index), tangent)


def apply_dual(apply: Callable, prim, args, params) -> Tensor:
    """`apply(prim, args, params)`, then the output's tangent at each active level at which an
    operand has one (see the module doc)."""
    out = apply(prim, args, params)
    params = prim.normalize(params)
    levels = _active()
    if not levels:
        return out
    prev = FWD.ceiling
    for k, lvl in enumerate(levels):
        ts = [lvl.get(a) if isinstance(a, Tensor) else None for a in args]
        if all(t is None for t in ts):
            continue
        FWD.ceiling = k
        try:
            t = jvp_rule(prim, ts, list(args), out, params)
        finally:
            FWD.ceiling = prev
        if t is not None:
            lvl.set(out, t)
    return out


def carry_over(src: Tensor, dst: Tensor) -> None:
    """An in-place op made `dst` take `src`'s value: it takes src's tangents too."""
    for lvl in _active():
        lvl.set(dst, lvl.get(src))


def inplace_dual(x: Tensor, update: Callable, op: str, run: Callable) -> Tensor:
    """run(x, update, op) (inplace.inplace) for dual tensors: the old value that update reads
    (x, or a snapshot of it) carries x's tangents, and x then takes the new value's."""
    levels = _active()
    old = [lvl.get(x) for lvl in levels]
    made: list[Tensor] = []

    def upd(src: Tensor) -> Tensor:
        for lvl, t in zip(levels, old):
            lvl.set(src, t)
        new = update(src)
        made.append(new)
        return new
    upd.dual = True
    out = run(x, upd, op)
    if made:
        new = made[-1]
        for lvl in levels:
            t = lvl.get(new)
            if t is not None and t.dtype is not x.dtype:
                t = bind(P.cast, t, dtype=x.dtype) if x.dtype.is_float else None
            lvl.set(x, t)
    return out


def tangent_levels(args) -> list[int]:
    """The positions (among the active levels) at which some of `args` has a tangent."""
    return [k for k, lvl in enumerate(_active())
            if any(isinstance(a, Tensor) and lvl.get(a) is not None for a in args)]


class hidden:
    """Context manager: the block sees no tangents (a custom Function's forward: its outputs'
    tangents come from its own jvp)."""

    def __enter__(self) -> None:
        self.prev = FWD.ceiling
        FWD.ceiling = 0

    def __exit__(self, *exc) -> bool:
        FWD.ceiling = self.prev
        return False


def custom_tangents(name: str, jvp: Callable, ctx, args, outs: list, levels: list[int],
                    skip: set) -> None:
    """A custom Function's outputs' tangents from its `jvp(ctx, *input tangents)` staticmethod
    (PyTorch's contract): per level, tensors without a tangent there pass zeros, other
    arguments None; one tangent (or None) per output, with the output's shape and dtype.
    Outputs whose id is in `skip` (non-differentiable, or not floating point) get none."""
    active = _active()
    prev = FWD.ceiling
    for k in levels:
        lvl = active[k]
        ts = [(lvl.get(a) if lvl.get(a) is not None else zeros_like(a.detach()))
              if isinstance(a, Tensor) else None for a in args]
        FWD.ceiling = k
        try:
            res = jvp(ctx, *ts)
        finally:
            FWD.ceiling = prev
        res = list(res) if isinstance(res, (tuple, list)) else [res]
        if len(res) != len(outs):
            raise RuntimeError(f"{name}.jvp returned {len(res)} tangents for {len(outs)} "
                               f"outputs of forward (at {user_location()})")
        for i, (o, t) in enumerate(zip(outs, res)):
            if t is None or not isinstance(o, Tensor) or id(o) in skip:
                continue
            if not isinstance(t, Tensor) or tuple(t.shape) != tuple(o.shape) or \
                    t.dtype is not o.dtype:
                got = f"{t.dtype.name}{list(t.shape)}" if isinstance(t, Tensor) else \
                    type(t).__name__
                raise RuntimeError(f"{name}.jvp: the tangent of output {i} is {got} but the "
                                   f"output is {o.dtype.name}{list(o.shape)}; a forward "
                                   f"gradient must have its tensor's size and dtype "
                                   f"(at {user_location()})")
            lvl.set(o, t)


def any_dual(xs: Any) -> bool:
    """Whether any of the tensors xs has a tangent at an open level."""
    levels = FWD.levels
    return bool(levels) and any(isinstance(x, Tensor) and lvl.get(x) is not None
                                for lvl in levels for x in xs)


__all__ = ["dual_level", "enter_dual_level", "exit_dual_level", "make_dual", "unpack_dual",
           "UnpackedDualTensor"]
