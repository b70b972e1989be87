"""The window view that convolution and pooling are built on, and its adjoint, over any number
n >= 1 of trailing spatial axes (2 for conv2d and the 2-D pools, 3 for the 3-D ones).

Primitives:
- `windows %x {window, stride, dilation}`: x[..., S1..Sn] -> [..., k1..kn, O1..On], element
  (t1..tn, o1..on) = x[..., o1*s1 + t1*d1, ..., on*sn + tn*dn] (im2col / unfold). A view: the
  code generators evaluate its index map inside the consuming kernel, so a pooling reduction
  reads each window straight from the input and the im2col of a convolution is one fused loop.
- `window_taps %cols {hw, stride, dilation, lo}`: the gather form of windows' adjoint.
  cols[..., k1..kn, O1..On] -> [k1..kn, ..., S1..Sn] (`hw` is the n spatial sizes); element
  (t, ..., p) is the window element that tap t places on position p + lo of the (padded)
  space, or 0 where that tap does not reach it. Also a view.

`col2im` (windows' VJP, and a convolution's input gradient) is the sum of window_taps over its
n leading tap axes: a leading-axis reduction, so each output element is computed once, by one
thread or vector lane, from the prod(k) taps that can reach it; no scatter, no atomics, no
prod(k)-fold intermediate, and `lo` crops a convolution's padding in the same loop. Windows
that tile the space (a 2x2 pool of stride 2) are a transpose back instead.
"""
from __future__ import annotations

import itertools

import numpy as np

from .batching import batch_same_params, moveaxis
from .core import Aval
from .index_maps import Read, Select, Zero
from .primitives import (P, Primitive, bind, broadcast, const_like, op_error, reduce_sum,
                         reshape, transpose)


def out_size(n: int, k: int, s: int, d: int) -> int:
    """Output length of a window of k taps, dilation d, stride s over n (padded) elements."""
    return (n - d * (k - 1) - 1) // s + 1


# -- windows: im2col as a view --------------------------------------------------------------------------------
def _infer_windows(name: str, avals: list[Aval], window, stride, dilation) -> Aval:
    a = avals[0]
    nd = len(window)
    if not nd or a.ndim < nd or not len(stride) == len(dilation) == nd:
        raise op_error(name, f"needs an operand of rank >= len(window) and window/stride/"
                       f"dilation of one common length >= 1, got {a} with window {window}, "
                       f"stride {stride}, dilation {dilation}")
    if min(*window, *stride, *dilation) < 1:
        raise op_error(name, f"window {window}, stride {stride} and dilation {dilation} "
                       "must be positive")
    outs = tuple(out_size(n, k, s, d) for n, k, s, d in zip(a.shape[-nd:], window, stride,
                                                            dilation))
    if min(outs) < 1:
        raise op_error(name, f"window {window} with dilation {dilation} does not fit in the "
                       f"spatial size {a.shape[-nd:]} of {a}")
    return Aval(a.shape[:-nd] + tuple(window) + outs, a.dtype)


def windows_array(x, window, stride, dilation):
    """windows on an array (NumPy or CuPy): eager mode's and the interpreter's im2col."""
    nd = len(window)
    outs = [out_size(n, k, s, d) for n, k, s, d in zip(x.shape[-nd:], window, stride, dilation)]
    # one strided slice per tap, stacked: plain slicing, so it runs on NumPy and CuPy alike
    taps = [x[(Ellipsis,) + tuple(slice(t * d, t * d + (o - 1) * s + 1, s)
                                  for t, d, o, s in zip(tap, dilation, outs, stride))]
            for tap in itertools.product(*(range(k) for k in window))]
    out = np.stack(taps, axis=-(nd + 1))
    return out.reshape(x.shape[:-nd] + tuple(window) + tuple(outs))


def _vjp_windows(g, ins, out, params, need):
    nd = len(params["window"])
    return [col2im(g, ins[0].shape[-nd:], params["stride"], params["dilation"])]


def _index_windows(ix, idx, site, window, stride, dilation):
    # im2col: [.., t1..tn, o1..on] reads x[.., o1*s1 + t1*d1, ...]
    nd = len(window)
    lead = len(site.in_shapes[0]) - nd
    taps, outs = idx[lead:lead + nd], idx[lead + nd:]
    return Read(0, list(idx[:lead]) + [ix.iadd(ix.imul(o, s), ix.imul(t, d))
                                       for t, o, s, d in zip(taps, outs, stride, dilation)])


def _rows_windows(j, ins, out, dep, window, stride, dilation):
    return j <= len(ins[0]) - len(window)   # the leading (batch, channel) axes are kept


P.register(Primitive("windows", "shape", _infer_windows, windows_array, vjp=_vjp_windows,
                     jvp=lambda t, i, o, p: bind(P.windows, t[0], **p),
                     params={"window": "ints", "stride": "ints", "dilation": "ints"}, arity=1,
                     index_map=_index_windows, rows=_rows_windows,
                     batch=batch_same_params))


def windows(x, window, stride, dilation):
    return bind(P.windows, x, window=tuple(window), stride=tuple(stride),
                dilation=tuple(dilation))


# -- window_taps: col2im in gather form --------------------------------------------------------
def _tap_range(i: int, n_out: int, n: int, s: int, d: int, lo: int) -> tuple[int, int]:
    """Window positions [a0, a1) whose tap i lands inside [0, n) of the cropped plane (window
    a's tap i lands on a*s + i*d - lo)."""
    off = i * d - lo
    a0 = -(off // s) if off < 0 else 0             # the first a with a*s + off >= 0
    a1 = min(n_out, (n - 1 - off) // s + 1) if n - 1 - off >= 0 else 0
    return a0, max(a0, a1)


def _tap_slices(tap, outs, hw, stride, dilation, lo):
    """For one tap: per axis the window range (a0, a1) and the first position it lands on;
    None when it lands nowhere."""
    spans = []
    for i, o, n, s, d, l0 in zip(tap, outs, hw, stride, dilation, lo):
        a0, a1 = _tap_range(i, o, n, s, d, l0)
        if a0 == a1:
            return None
        spans.append((a0, a1, a0 * s + i * d - l0))
    return spans


def _infer_taps(name: str, avals: list[Aval], hw, stride, dilation, lo) -> Aval:
    a = avals[0]
    nd = len(hw)
    if not nd or a.ndim < 2 * nd or not len(stride) == len(dilation) == len(lo) == nd:
        raise op_error(name, f"needs an operand [..., kH, kW, OH, OW] (n tap axes, then n "
                       f"window axes) and hw/stride/dilation/lo of n entries each, got {a}")
    if min(*stride, *dilation) < 1 or min(*hw, *lo) < 0:
        raise op_error(name, f"stride {stride} and dilation {dilation} must be positive, hw "
                       f"{hw} and lo {lo} not negative")
    return Aval(tuple(a.shape[-2 * nd:-nd]) + tuple(a.shape[:-2 * nd]) + tuple(hw), a.dtype)


def _impl_taps(cols, hw, stride, dilation, lo):
    nd = len(hw)
    window, outs = cols.shape[-2 * nd:-nd], cols.shape[-nd:]
    # zeros_like: on cols' device (NumPy or CuPy)
    out = np.zeros_like(cols, shape=tuple(window) + cols.shape[:-2 * nd] + tuple(hw))
    for tap in itertools.product(*(range(k) for k in window)):
        spans = _tap_slices(tap, outs, hw, stride, dilation, lo)
        if spans is None:
            continue
        dst = tuple(slice(p0, p0 + (a1 - a0 - 1) * s + 1, s)
                    for (a0, a1, p0), s in zip(spans, stride))
        out[tap + (Ellipsis,) + dst] = cols[(Ellipsis,) + tap +
                                            tuple(slice(a0, a1) for a0, a1, _ in spans)]
    return out


def _index_taps(ix, idx, site, hw, stride, dilation, lo):
    shape = site.in_shapes[0]
    if 0 in shape:
        return Zero()
    nd = len(hw)
    taps, lead, pos = idx[:nd], idx[nd:-nd], idx[-nd:]
    ok, src = None, []
    for p, tap, n, s, d, start in zip(pos, taps, shape[-nd:], stride, dilation, lo):
        q = ix.iadd(ix.iadd(p, str(start)), ix.imul(tap, -d))      # window index * s
        conds = [ix.icmp("ge", q, "0")]
        a = q
        if s > 1:               # only every s-th position starts a window
            a = ix.idiv(q, s, signed=True)
            conds.append(ix.icmp("eq", ix.irem(q, s, signed=True), "0"))
        conds.append(ix.icmp("lt", a, str(n)))
        for c in conds:
            ok = c if ok is None else ix.iand(ok, c)
        src.append(ix.clamp(a, n))          # in range even where the tap does not reach
    return Select(ok, Read(0, list(lead) + list(taps) + src), Zero())


def _vjp_taps(g, ins, out, params, need):
    """Each tap's window read back from the cotangent [k1..kn, ..., S1..Sn]: a strided slice
    per tap, zero-padded where the tap falls outside the space. F.fold's backward and a double
    backward get here (col2im's own VJP is `windows`, through reduce_sum's broadcast)."""
    cols = ins[0]
    if 0 in cols.shape:
        # built from g: the rule does not save cols, so ins[0] may be its Aval, and zeros of
        # an Aval would be a bare array outside the engine's (or the trace's) world
        return [broadcast(const_like(g, np.zeros((), cols.dtype.np)), tuple(cols.shape))]
    hw, lo, stride = params["hw"], params["lo"], params["stride"]
    nd = len(hw)
    window, outs = tuple(cols.shape[-2 * nd:-nd]), tuple(cols.shape[-nd:])
    lead = tuple(cols.shape[:-2 * nd])
    n = len(lead)
    z, one = (0,) * n, (1,) * nd
    pieces = []
    for tap in itertools.product(*(range(k) for k in window)):
        spans = _tap_slices(tap, outs, hw, stride, params["dilation"], lo)
        if spans is None:                       # this tap never lands: zeros
            spans = [(0, 0, 0)] * nd
            stops = (0,) * nd
        else:
            stops = tuple(p0 + (a1 - a0 - 1) * s + 1 for (a0, a1, p0), s in zip(spans, stride))
        piece = bind(P.slice, g, starts=tap + z + tuple(p0 for _, _, p0 in spans),
                     stops=tuple(t + 1 for t in tap) + lead + stops,
                     steps=one + (1,) * n + tuple(stride))
        piece = bind(P.pad, piece, lo=(0,) * nd + z + tuple(a0 for a0, _, _ in spans),
                     hi=(0,) * nd + z + tuple(o - a1 for o, (_, a1, _) in zip(outs, spans)),
                     interior=(0,) * (n + 2 * nd))
        pieces.append(reshape(piece, (1,) + lead + outs))
    taps = pieces[0] if len(pieces) == 1 else bind(P.concatenate, *pieces, axis=0)
    taps = reshape(taps, window + lead + outs)
    perm = tuple(range(nd, nd + n)) + tuple(range(nd)) + tuple(range(nd + n, 2 * nd + n))
    return [transpose(taps, perm)]


def _batch_taps(prim, ax, args, batched, params):
    # the batch axis follows the tap axes in the result
    return moveaxis(bind(P.window_taps, args[0], **params), len(params["hw"]), 0), True


P.register(Primitive("window_taps", "shape", _infer_taps, _impl_taps, vjp=_vjp_taps,
                     jvp=lambda t, i, o, p: bind(P.window_taps, t[0], **p),
                     params={"hw": "ints", "stride": "ints", "dilation": "ints", "lo": "ints"},
                     arity=1, index_map=_index_taps,
                     rows=lambda j, ins, out, dep, **p: j == 0,
                     batch=_batch_taps))


def col2im(cols, hw, stride, dilation, lo=None):
    """The adjoint of `windows`: cols[..., k1..kn, O1..On] summed back onto [..., S1..Sn]
    (n = len(hw)), the part of the space from `lo` on (a convolution's padding cropped)."""
    nd = len(hw)
    lo = (0,) * nd if lo is None else tuple(lo)
    lead = tuple(cols.shape[:-2 * nd])
    window, outs = tuple(cols.shape[-2 * nd:-nd]), tuple(cols.shape[-nd:])
    if tuple(stride) == window and tuple(dilation) == (1,) * nd and lo == (0,) * nd:
        # windows that tile the space (a 2x2 pool of stride 2): every element is in at most
        # one window, so the adjoint is a transpose back, zero-padded at the uncovered
        # far edges; one read per element
        n = len(lead)
        perm = tuple(range(n)) + tuple(a for i in range(nd) for a in (n + nd + i, n + i))
        covered = tuple(o * k for o, k in zip(outs, window))
        tiled = reshape(transpose(cols, perm), lead + covered)
        if covered == tuple(hw):
            return tiled
        return bind(P.pad, tiled, lo=(0,) * (n + nd),
                    hi=(0,) * n + tuple(h - c for h, c in zip(hw, covered)),
                    interior=(0,) * (n + nd))
    taps = bind(P.window_taps, cols, hw=tuple(hw), stride=tuple(stride),
                dilation=tuple(dilation), lo=lo)
    return reduce_sum(taps, tuple(range(nd)))
