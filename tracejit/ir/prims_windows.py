"""The window view that convolution and pooling are built on, and its adjoint.

Primitives:
- `windows %x {window, stride, dilation}`: x[..., H, W] -> [..., kH, kW, OH, OW], element
  (i, j, oh, ow) = x[..., oh*sH + i*dH, ow*sW + j*dW] (im2col / unfold). A view: the code
  generators evaluate its index map inside the consuming kernel, so a pooling reduction reads
  each window straight from the input and the im2col of a convolution is one fused loop.
- `window_taps %cols {hw, stride, dilation, lo}`: the gather form of windows' adjoint.
  cols[..., kH, kW, OH, OW] -> [kH, kW, ..., H, W]; element (i, j, ..., h, w) is the window
  element that tap (i, j) places on position (h + lo_h, w + lo_w) of the (padded) plane, or 0
  where that tap does not reach it. Also a view.

`col2im` (windows' VJP, and a convolution's input gradient) is the sum of window_taps over its
two leading tap axes: a leading-axis reduction, so each output element is computed once, by
one thread or vector lane, from the kH*kW taps that can reach it; no scatter, no atomics, no
kH*kW-fold intermediate, and `lo` crops a convolution's padding in the same loop. Windows that
tile the plane (a 2x2 pool of stride 2) are a transpose back instead.
"""
from __future__ import annotations

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
    if a.ndim < 2 or not len(window) == len(stride) == len(dilation) == 2:
        raise op_error(name, f"needs an operand of rank >= 2 and 2-D window/stride/dilation, "
                       f"got {a}")
    if min(*window, *stride, *dilation) < 1:
        raise op_error(name, f"window {window}, stride {stride} and dilation {dilation} "
                       "must be positive")
    oh, ow = (out_size(n, k, s, d) for n, k, s, d in zip(a.shape[-2:], window, stride, dilation))
    if oh < 1 or ow < 1:
        raise op_error(name, f"window {window} with dilation {dilation} does not fit in the "
                       f"spatial size {a.shape[-2:]} of {a}")
    return Aval(a.shape[:-2] + tuple(window) + (oh, ow), a.dtype)


def windows_array(x, window, stride, dilation):
    """windows on an array (NumPy or CuPy): eager mode's and the interpreter's im2col."""
    (kh, kw), (sh, sw), (dh, dw) = window, stride, dilation
    oh, ow = (out_size(n, k, s, d) for n, k, s, d in zip(x.shape[-2:], window, stride, dilation))
    # one strided slice per tap, stacked: plain slicing, so it runs on NumPy and CuPy alike
    taps = [x[..., i * dh:i * dh + (oh - 1) * sh + 1:sh, j * dw:j * dw + (ow - 1) * sw + 1:sw]
            for i in range(kh) for j in range(kw)]
    out = np.stack(taps, axis=-3)
    return out.reshape(x.shape[:-2] + (kh, kw, oh, ow))


def _vjp_windows(g, ins, out, params, need):
    return [col2im(g, ins[0].shape[-2:], params["stride"], params["dilation"])]


def _index_windows(ix, idx, site, window, stride, dilation):
    # im2col: [.., i, j, oh, ow] reads x[.., oh*s + i*d, ow*s + j*d]
    lead = len(site.in_shapes[0]) - 2
    i, j, oh, ow = idx[lead:]
    (sh, sw), (dh, dw) = stride, dilation
    return Read(0, list(idx[:lead]) + [ix.iadd(ix.imul(oh, sh), ix.imul(i, dh)),
                                       ix.iadd(ix.imul(ow, sw), ix.imul(j, dw))])


def _rows_windows(j, ins, out, dep, window, stride, dilation):
    return j <= len(ins[0]) - 2         # the leading (batch, channel) axes are kept


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


def _infer_taps(name: str, avals: list[Aval], hw, stride, dilation, lo) -> Aval:
    a = avals[0]
    if a.ndim < 4 or not len(hw) == len(stride) == len(dilation) == len(lo) == 2:
        raise op_error(name, f"needs an operand [..., kH, kW, OH, OW] and 2-D hw/stride/"
                       f"dilation/lo, got {a}")
    if min(*stride, *dilation) < 1 or min(*hw, *lo) < 0:
        raise op_error(name, f"stride {stride} and dilation {dilation} must be positive, hw "
                       f"{hw} and lo {lo} not negative")
    return Aval(tuple(a.shape[-4:-2]) + tuple(a.shape[:-4]) + tuple(hw), a.dtype)


def _impl_taps(cols, hw, stride, dilation, lo):
    kh, kw, oh, ow = cols.shape[-4:]
    out = np.zeros_like(cols, shape=(kh, kw) + cols.shape[:-4] + tuple(hw))  # cols' device
    (sh, sw), (dh, dw) = stride, dilation
    for i in range(kh):
        a0, a1 = _tap_range(i, oh, hw[0], sh, dh, lo[0])
        for j in range(kw):
            b0, b1 = _tap_range(j, ow, hw[1], sw, dw, lo[1])
            if a0 == a1 or b0 == b1:
                continue
            h0, w0 = a0 * sh + i * dh - lo[0], b0 * sw + j * dw - lo[1]
            out[i, j, ..., h0:h0 + (a1 - a0 - 1) * sh + 1:sh,
                w0:w0 + (b1 - b0 - 1) * sw + 1:sw] = cols[..., i, j, a0:a1, b0:b1]
    return out


def _index_taps(ix, idx, site, hw, stride, dilation, lo):
    shape = site.in_shapes[0]
    if 0 in shape:
        return Zero()
    i, j, *lead, h, w = idx
    ok, src = None, []
    for pos, tap, n, s, d, start in ((h, i, shape[-2], stride[0], dilation[0], lo[0]),
                                     (w, j, shape[-1], stride[1], dilation[1], lo[1])):
        q = ix.iadd(ix.iadd(pos, str(start)), ix.imul(tap, -d))      # window index * s
        conds = [ix.icmp("ge", q, "0")]
        a = q
        if s > 1:               # only every s-th position starts a window
            a = ix.idiv(q, s, signed=True)
            conds.append(ix.icmp("eq", ix.irem(q, s, signed=True), "0"))
        conds.append(ix.icmp("lt", a, str(n)))
        for c in conds:
            ok = c if ok is None else ix.iand(ok, c)
        src.append(ix.clamp(a, n))          # in range even where the tap does not reach
    return Select(ok, Read(0, list(lead) + [i, j] + src), Zero())


def _vjp_taps(g, ins, out, params, need):
    """Each tap's window read back from the cotangent [kH, kW, ..., H, W]: a strided slice per
    tap, zero-padded where the tap falls outside the plane. F.fold's backward and a double
    backward get here (col2im's own VJP is `windows`, through reduce_sum's broadcast)."""
    cols = ins[0]
    if 0 in cols.shape:
        # built from g: the rule does not save cols, so ins[0] may be its Aval, and zeros of
        # an Aval would be a bare array outside the engine's (or the trace's) world
        return [broadcast(const_like(g, np.zeros((), cols.dtype.np)), tuple(cols.shape))]
    kh, kw, oh, ow = cols.shape[-4:]
    lead = tuple(cols.shape[:-4])
    n = len(lead)
    hw, lo = params["hw"], params["lo"]
    (sh, sw), (dh, dw) = params["stride"], params["dilation"]
    z = (0,) * n
    rows = []
    for i in range(kh):
        a0, a1 = _tap_range(i, oh, hw[0], sh, dh, lo[0])
        row = []
        for j in range(kw):
            b0, b1 = _tap_range(j, ow, hw[1], sw, dw, lo[1])
            if a0 == a1 or b0 == b1:                    # this tap never lands: zeros
                (h0, h1, w0, w1), (a0_, a1_, b0_, b1_) = (0, 0, 0, 0), (0, 0, 0, 0)
            else:
                h0, w0 = a0 * sh + i * dh - lo[0], b0 * sw + j * dw - lo[1]
                h1, w1 = h0 + (a1 - a0 - 1) * sh + 1, w0 + (b1 - b0 - 1) * sw + 1
                a0_, a1_, b0_, b1_ = a0, a1, b0, b1
            tap = bind(P.slice, g, starts=(i, j) + z + (h0, w0),
                       stops=(i + 1, j + 1) + lead + (h1, w1), steps=(1, 1) + (1,) * n + (sh, sw))
            row.append(bind(P.pad, tap, lo=(0, 0) + z + (a0_, b0_),
                            hi=(0, 0) + z + (oh - a1_, ow - b1_), interior=(0,) * (n + 4)))
        rows.append(row[0] if kw == 1 else bind(P.concatenate, *row, axis=1))
    taps = rows[0] if kh == 1 else bind(P.concatenate, *rows, axis=0)
    perm = tuple(range(2, 2 + n)) + (0, 1, n + 2, n + 3)
    return [transpose(taps, perm)]


def _batch_taps(prim, ax, args, batched, params):
    # the batch axis follows the two tap axes in the result
    return moveaxis(bind(P.window_taps, args[0], **params), 2, 0), True


P.register(Primitive("window_taps", "shape", _infer_taps, _impl_taps, vjp=_vjp_taps,
                     jvp=lambda t, i, o, p: bind(P.window_taps, t[0], **p),
                     params={"hw": "ints", "stride": "ints", "dilation": "ints", "lo": "ints"},
                     arity=1, index_map=_index_taps,
                     rows=lambda j, ins, out, dep, **p: j == 0,
                     batch=_batch_taps))


def col2im(cols, hw, stride, dilation, lo=(0, 0)):
    """The adjoint of `windows`: cols[..., kH, kW, OH, OW] summed back onto [..., H, W], the
    part of the plane from (lo_h, lo_w) on (a convolution's padding cropped)."""
    lead = tuple(cols.shape[:-4])
    kh, kw, oh, ow = cols.shape[-4:]
    (sh, sw), (dh, dw) = stride, dilation
    if (sh, sw) == (kh, kw) and (dh, dw) == (1, 1) and tuple(lo) == (0, 0):
        # windows that tile the plane (a 2x2 pool of stride 2): every element is in at most
        # one window, so the adjoint is a transpose back, zero-padded at the uncovered
        # bottom/right edge; one read per element
        n = len(lead)
        z = (0,) * n
        tiled = reshape(transpose(cols, tuple(range(n)) + (n + 2, n, n + 3, n + 1)),
                        lead + (oh * kh, ow * kw))
        if (oh * kh, ow * kw) == tuple(hw):
            return tiled
        return bind(P.pad, tiled, lo=z + (0, 0), hi=z + (hw[0] - oh * kh, hw[1] - ow * kw),
                    interior=(0,) * (n + 2))
    taps = bind(P.window_taps, cols, hw=tuple(hw), stride=tuple(stride),
                dilation=tuple(dilation), lo=tuple(lo))
    return reduce_sum(taps, (0, 1))
