"""The input buffers of a backward pass that records nothing (autograd.run_backward's lean
pass): where the gradients reaching one node's output are summed before the node runs.

As PyTorch's InputBuffer, a sum the engine allocated itself is updated in place by the terms
that arrive after it: `Owned` marks such an array. The rule that keeps this safe: an Owned
array is referenced by its buffer slot alone. It never leaves the buffers: when its node runs,
the engine hands the node a new wrapper (`Arr`) of the array and never writes to it again, so
whatever the node, a hook, `retain_grad` or `.grad` then does with it is theirs. A term that
arrives first is kept as it is (a rule's result, which another slot or a hook may share) and
is never written to: the second term makes the Owned sum. A term is a NumPy array as a VJP
plan returned it (most), an Arr or a Tensor (user-visible values: never written either).

A slice's gradient (SliceBackward0: an LSTM's four gate slices of one tensor, each piece of a
chunk or split) is added straight into its region of the input's buffer, where the rule's
gradient was a zero array of the whole input with the slice's gradient copied in (a pad),
then added to the others in full.
"""
from __future__ import annotations

import numpy as np

from ..ir.primitives import P
from .eager import Arr, _ERR_VAR, _IGNORE, quiet_call

_SLICE = P.slice
_NDARRAY, _ADD, _EMPTY = np.ndarray, np.add, np.empty


class Owned:
    """A gradient sum the engine allocated and alone references (see the module doc)."""

    __slots__ = ("_data",)

    def __init__(self, data: np.ndarray) -> None:
        self._data = data


def add_into(b: list, idx: int, r, add_general) -> None:
    """b[idx] += r in a lean pass (b: a node's buffer; r: a NumPy array, an Arr or a Tensor,
    not None). `add_general(a, r)`: the sum of two Arrs or Tensors as a new value, for terms
    the in-place path does not take (device or traced arrays, other shapes or dtypes)."""
    a = b[idx]
    if a is None:
        b[idx] = r
        return
    ad = a if type(a) is _NDARRAY else a._data
    rd = r if type(r) is _NDARRAY else r._data
    if type(ad) is _NDARRAY and type(rd) is _NDARRAY and ad.shape == rd.shape and \
            ad.dtype == rd.dtype and _ERR_VAR is not None:
        # (ignored already across the engine's lean pass: then no switch)
        tok = None if _ERR_VAR.get() is _IGNORE else _ERR_VAR.set(_IGNORE)
        try:
            if type(a) is Owned:        # the engine's own sum: add in place
                _ADD(ad, rd, out=ad)
            else:                       # a term someone else may hold: a new sum (C order,
                out = _EMPTY(ad.shape, ad.dtype)    # and an array for 0-d terms too)
                _ADD(ad, rd, out=out)
                b[idx] = Owned(out)
        finally:
            if tok is not None:
                _ERR_VAR.reset(tok)
        return
    if type(a) is Owned or type(a) is _NDARRAY:
        a = Arr(ad)
    b[idx] = add_general(a, Arr(rd) if type(r) is _NDARRAY else r)


def slice_region(node) -> tuple | None:
    """(the index of node's slice in its input, the slice's shape, the input's shape and NumPy
    dtype) for a SliceBackward0 node of the eager host path; None for any other node."""
    avals = node.in_avals
    plans = getattr(avals, "plans", None)
    hit = plans.get(_REGION) if plans is not None else None
    if hit is None:
        p = node.params
        key = tuple(map(slice, p["starts"], p["stops"], p["steps"]))
        shape = tuple(-(-(hi - lo) // st) for lo, hi, st in
                      zip(p["starts"], p["stops"], p["steps"]))
        a = avals[0]
        hit = (key, shape, tuple(a.shape), a.dtype.np)
        if plans is not None:
            plans[_REGION] = hit
    return hit


_REGION = "slice region"    # (a key of SharedAvals.plans beside the `need` tuples)


def slice_into(buffers: dict, node, gd: np.ndarray) -> bool:
    """Add the gradient `gd` of SliceBackward0 `node` into its region of the input's buffer
    (an Owned array of the input's shape, made here when the slot holds none yet). False, with
    nothing done, when gd or the slot's term is not a host array of the input's dtype and
    the slice's (the rule runs then, as for any node)."""
    nxt, idx = node.next_functions[0]
    if nxt is None:     # an edge to nowhere (a view requiring grad via its base: view_grad.py)
        return False
    plans = getattr(node.in_avals, "plans", None)
    hit = plans.get(_REGION) if plans is not None else None
    key, shape, in_shape, dtype = hit if hit is not None else slice_region(node)
    if gd.shape != shape or gd.dtype != dtype:
        return False
    b = buffers.get(nxt)
    if b is None:
        b = buffers[nxt] = [None] * nxt.n_outputs
    a = b[idx]
    if a is None:                       # the first term: the rule's pad, without the pad
        full = np.zeros(in_shape, dtype)
        full[key] = gd
        b[idx] = Owned(full)
        return True
    if type(a) is not Owned:
        ad = a if type(a) is _NDARRAY else a._data
        if type(ad) is not np.ndarray or ad.shape != in_shape or ad.dtype != dtype:
            return False
        a = b[idx] = Owned(ad.copy())   # (a term someone else may hold: never written)
    region = a._data[key]
    if _ERR_VAR is None:                # pragma: no cover - other NumPy versions
        quiet_call(_ADD, region, gd, out=region)
        return True
    if _ERR_VAR.get() is _IGNORE:       # (the engine's lean pass: ignored already)
        _ADD(region, gd, out=region)
        return True
    tok = _ERR_VAR.set(_IGNORE)
    try:
        _ADD(region, gd, out=region)
    finally:
        _ERR_VAR.reset(tok)
    return True
