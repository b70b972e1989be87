"""CPU loop kernels whose one output is a sum of zero pads along one axis over disjoint ranges:
a concatenation as the reverse-mode transform writes it (the gradient of split/chunk, e.g.
attention's q, k, v gradients joined into the qkv projection's). Evaluated as written, every
element reads every operand at a clamped index and selects, and the selects and jumping reads
keep the loop scalar (nanoGPT-small's [8,64,384]: 0.31 ms). Split along that axis instead,
each range evaluates only the operand that covers it, and the ranges no pad covers store zero.

The values are the same bits: inside an operand's range the sum is that operand's element
plus zeros, x + 0.0 (which turns -0.0 into +0.0, so the store adds the zero once); elsewhere
it is +0.0."""
from __future__ import annotations

from ..ir import dtypes as dt
from ..ir.core import Value
from . import loops as L
from .fusion import Kernel


def pad_pieces(k: Kernel) -> tuple[int, list[tuple[int, int, Value]]] | None:
    """(axis, [(start, stop, operand), ...] in order) when k's one output is a sum (adds of
    its own shape, recomputed in the kernel) of zero pads along the same axis, other than the
    threads' axis 0, whose operands' ranges do not overlap; otherwise None."""
    if k.kind != "loop" or len(k.outputs) != 1:
        return None
    out = k.outputs[0]
    if out.dtype is dt.bool_ or len(out.shape) < 2:
        return None
    loaded = set(k.inputs)
    terms, todo = [], [out]
    while todo:
        u = todo.pop()
        ins = u.producer
        if ins is None or (u is not out and u in loaded) or tuple(u.shape) != tuple(out.shape):
            return None
        if ins.prim.name == "add":
            todo.extend(ins.inputs)
        elif ins.prim.name == "pad":
            terms.append(ins)
        else:
            return None
    if len(terms) < 2:
        return None
    axis, pieces = None, []
    for ins in terms:
        lo, hi, interior = ins.params["lo"], ins.params["hi"], ins.params["interior"]
        padded = [d for d in range(len(out.shape)) if lo[d] or hi[d]]
        if any(interior) or min(*lo, *hi) < 0 or len(padded) != 1 or \
                axis not in (None, padded[0]):
            return None
        axis = padded[0]
        pieces.append((lo[axis], out.shape[axis] - hi[axis], ins.inputs[0]))
    pieces.sort(key=lambda p: p[0])
    if axis == 0 or any(a[1] > b[0] for a, b in zip(pieces, pieces[1:])):
        return None
    return axis, pieces


def split_nest(k: Kernel, names, axis: int, pieces: list[tuple[int, int, Value]]) -> list:
    """The loop nest of such a kernel: the axes before `axis` as usual (the first split
    across threads), then one loop per range of `axis`, each over the remaining axes."""
    out = k.outputs[0]
    shape = list(out.shape)
    vs = names.vars("i", len(shape))
    idx = [L.Var(v) for v in vs]
    zero = L.Const(0, out.dtype)
    segments, at = [], 0
    for start, stop, x in pieces:
        if start > at:
            segments.append((at, start, None))
        segments.append((start, stop, x))
        at = stop
    if at < shape[axis]:
        segments.append((at, shape[axis], None))

    def inner(start: int, x: Value | None) -> list:
        if x is None:
            value = zero
        else:
            xi = list(idx)
            xi[axis] = L.add(idx[axis], L.Lit(-start))
            value = L.Eval(x, xi)
            if out.dtype.is_float:
                value = L.Tree("sum", [value, zero])     # as the adds of zeros round
        body = [L.Store(out, L.linear(idx, shape), value)]
        for d in reversed(range(axis + 1, len(shape))):
            body = [L.Loop(vs[d], L.Lit(shape[d]), body)]
        return body
    body = [L.Loop(vs[axis], L.Lit(b - a), inner(a, x), lo=L.Lit(a))
            for a, b, x in segments if b > a]
    for d in reversed(range(axis)):
        body = [L.Loop(vs[d], L.Lit(shape[d]), body, par="threads" if d == 0 else "serial")]
    return body
