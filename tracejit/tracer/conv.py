"""Convolution, pooling and batch normalization in torch.nn.functional's spelling.

conv2d is a primitive (ir/prims_conv.py: im2col + GEMM on every backend, its two gradients
primitives too). Pooling reads windows through the `windows` view primitive, whose index map
fuses into the reduction kernel that consumes it, so a pooling kernel reads each window
straight from the input (no slices, no copies of the windows):
- max_pool2d: the first position of the window maximum (argmax over the window), and the value
  there; so the gradient goes to that one position (the first on ties, as torch's CPU kernel),
  and a NaN in the window wins, as torch.
- avg_pool2d: the window sum divided by torch's divisor (count_include_pad, ceil_mode windows
  that hang over the edge, divisor_override).
- adaptive_avg_pool2d: a plain avg_pool2d when the output divides the input; otherwise torch's
  uneven windows, written as two small averaging matrices (out = A_h @ x @ A_w^T).
batch_norm: mean and biased variance over (N, H, W) normalize; the running variance is updated
with the unbiased one (in place, so that a compiled training step writes it back).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..ir.primitives import P, bind
from ..ir.prims_conv import out_size, windows
from ..ir.prims_select import iota
from . import ops
from .autocast import LOWER, autocast_op
from .state import no_grad
from .tensor_base import TensorBase as Tensor


def _pair(v: Any, op: str, what: str) -> tuple[int, int]:
    if isinstance(v, (tuple, list)):
        if len(v) == 1:
            v = (v[0], v[0])
        if len(v) != 2:
            raise ops._err(op, f"{what} must be an int or a pair of ints, got {v!r}")
        return int(v[0]), int(v[1])
    return int(v), int(v)


def _spatial(x: Tensor, op: str) -> tuple[Tensor, bool]:
    """x as (N, C, H, W); unbatched (C, H, W) input gets a batch axis (removed afterwards)."""
    if x.ndim == 3:
        return ops.unsqueeze(x, 0), True
    if x.ndim != 4:
        raise ops._err(op, f"expects a 3-D (C, H, W) or 4-D (N, C, H, W) input, got "
                       f"{ops._fmt(x)}")
    return x, False


def _conv_padding(padding: Any, kernel, stride, dilation) -> tuple[int, int, int, int]:
    if isinstance(padding, str):
        if padding == "valid":
            return (0, 0, 0, 0)
        if padding != "same":
            raise ops._err("conv2d", f"padding must be an int, a pair, 'same' or 'valid', "
                           f"got {padding!r}")
        if stride != (1, 1):
            raise ops._err("conv2d", "padding='same' is not supported for strided "
                           f"convolutions (stride={stride})")
        # torch: the total d*(k-1) splits with the odd element at the end (bottom / right)
        th, tw = (d * (k - 1) for d, k in zip(dilation, kernel))
        return (th // 2, th - th // 2, tw // 2, tw - tw // 2)
    ph, pw = _pair(padding, "conv2d", "padding")
    return (ph, ph, pw, pw)


@autocast_op(LOWER)
def conv2d(input: Tensor, weight: Tensor, bias: Tensor | None = None, stride: Any = 1,  # noqa: A002
           padding: Any = 0, dilation: Any = 1, groups: int = 1) -> Tensor:
    """2-D cross-correlation of an (N, C, H, W) input with an (O, C/groups, kH, kW) weight."""
    x, unbatched = _spatial(ops.as_tensor(input), "conv2d")
    w = ops.as_tensor(weight)
    if w.ndim != 4:
        raise ops._err("conv2d", f"weight must be 4-D (O, C/groups, kH, kW), got {ops._fmt(w)}")
    s, d = _pair(stride, "conv2d", "stride"), _pair(dilation, "conv2d", "dilation")
    pad = _conv_padding(padding, w.shape[2:], s, d)
    y = bind(P.conv2d, x, w, stride=s, padding=pad, dilation=d, groups=int(groups))
    if bias is not None:
        b = ops.as_tensor(bias)
        if b.shape != (w.shape[0],):
            raise ops._err("conv2d", f"bias must have shape ({w.shape[0]},), got {ops._fmt(b)}")
        y = ops.add(y, ops.reshape(b, (1, -1, 1, 1)))
    return ops.squeeze(y, 0) if unbatched else y


# -- pooling --------------------------------------------------------------------------------
def _pool_geometry(op: str, x: Tensor, kernel_size, stride, padding, dilation, ceil_mode):
    """(kernel, stride, padding, dilation, output size, extra bottom/right padding)."""
    k = _pair(kernel_size, op, "kernel_size")
    s = k if stride is None or (isinstance(stride, (list, tuple)) and len(stride) == 0) \
        else _pair(stride, op, "stride")
    p, d = _pair(padding, op, "padding"), _pair(dilation, op, "dilation")
    if min(*k, *s, *d) < 1 or min(p) < 0:
        raise ops._err(op, f"kernel_size {k}, stride {s} and dilation {d} must be positive "
                       f"and padding {p} non-negative")
    if any(pi > (di * (ki - 1) + 1) // 2 for pi, ki, di in zip(p, k, d)):
        raise ops._err(op, f"pad should be at most half of effective kernel size, got "
                       f"padding {p} for kernel_size {k} and dilation {d}")
    outs, extra = [], []
    for n, ki, si, pi, di in zip(x.shape[2:], k, s, p, d):
        span = n + 2 * pi - di * (ki - 1) - 1
        o = (-(-span // si) if ceil_mode else span // si) + 1
        if ceil_mode and (o - 1) * si >= n + pi:   # the last window must start inside
            o -= 1
        if o < 1:
            raise ops._err(op, f"output size is too small: input {ops._fmt(x)}, kernel_size "
                           f"{k}, stride {s}, padding {p}, dilation {d}")
        outs.append(o)
        extra.append(max(0, (o - 1) * si + di * (ki - 1) + 1 - (n + 2 * pi)))
    return k, s, p, d, tuple(outs), tuple(extra)


def _padded(x: Tensor, p, extra, fill: float) -> Tensor:
    lo, hi = (0, 0, p[0], p[1]), (0, 0, p[0] + extra[0], p[1] + extra[1])
    if not any(lo + hi):
        return x
    out = bind(P.pad, x, lo=lo, hi=hi, interior=(0,) * 4)
    if fill == 0:
        return out
    # the inside mask is a padded splat of True: no constant the size of x
    inside = bind(P.pad, ops.broadcast_to(ops.as_tensor(True, like=x), x.shape), lo=lo, hi=hi,
                  interior=(0,) * 4)
    return ops.where(inside, out, ops.as_tensor(fill, out.dtype, like=out))


def _flat_windows(x: Tensor, k, s, d) -> Tensor:
    """[kH*kW, N, C, OH, OW]: each output position's window along the leading axis. Reducing
    a leading axis is a column reduction: one thread (CUDA) or one vector lane (CPU) per
    output position walks its few window taps, and neighbours read neighbouring memory."""
    w = windows(x, k, s, d)
    n, c, kh, kw, oh, ow = w.shape
    return ops.permute(ops.reshape(w, (n, c, kh * kw, oh, ow)), (2, 0, 1, 3, 4))


def max_pool2d(input: Tensor, kernel_size: Any, stride: Any = None, padding: Any = 0,  # noqa: A002
               dilation: Any = 1, ceil_mode: bool = False, return_indices: bool = False):
    """Window maxima; the gradient goes to the first maximum of each window."""
    x, unbatched = _spatial(ops.as_tensor(input), "max_pool2d")
    if not x.dtype.is_float:
        raise ops._err("max_pool2d", f"expects a floating input, got {ops._fmt(x)}", TypeError)
    k, s, p, d, (oh, ow), extra = _pool_geometry("max_pool2d", x, kernel_size, stride, padding,
                                                 dilation, ceil_mode)
    win = _flat_windows(_padded(x, p, extra, -math.inf), k, s, d)
    first = bind(P.argmax, win, axis=0)                          # [N, C, OH, OW]
    n, c = x.shape[:2]
    at = ops.eq(iota(win, 0), ops.broadcast_to(ops.reshape(first, (1, n, c, oh, ow)), win.shape))
    out = ops.sum(ops.where(at, win, ops.as_tensor(0.0, win.dtype, like=win)), axis=0)
    if unbatched:
        out = ops.squeeze(out, 0)
    if not return_indices:
        return out
    # torch's indices: flat positions in the (unpadded) H*W plane of each channel
    i, j = ops.floor_divide(first, k[1]), ops.remainder(first, k[1])
    row = ops.add(ops.sub(ops.mul(iota(first, 2), s[0]), p[0]), ops.mul(i, d[0]))
    col = ops.add(ops.sub(ops.mul(iota(first, 3), s[1]), p[1]), ops.mul(j, d[1]))
    idx = ops.add(ops.mul(row, x.shape[3]), col)
    return out, (ops.squeeze(idx, 0) if unbatched else idx)


def _avg_divisor(x: Tensor, k, s, p, outs, count_include_pad: bool) -> np.ndarray:
    """torch's divisor per output position, [OH, OW] (small: the output plane only)."""
    sizes = []
    for n, ki, si, pi, o in zip(x.shape[2:], k, s, p, outs):
        start = np.arange(o) * si - pi
        end = np.minimum(start + ki, n + pi)
        full = end - start
        clipped = np.minimum(end, n) - np.maximum(start, 0)
        sizes.append(full if count_include_pad else clipped)
    return np.multiply.outer(sizes[0], sizes[1])


def avg_pool2d(input: Tensor, kernel_size: Any, stride: Any = None, padding: Any = 0,  # noqa: A002
               ceil_mode: bool = False, count_include_pad: bool = True,
               divisor_override: int | None = None) -> Tensor:
    """Window means with torch's divisor rules."""
    x, unbatched = _spatial(ops.as_tensor(input), "avg_pool2d")
    if not x.dtype.is_float:
        raise ops._err("avg_pool2d", f"expects a floating input, got {ops._fmt(x)}", TypeError)
    k, s, p, d, outs, extra = _pool_geometry("avg_pool2d", x, kernel_size, stride, padding, 1,
                                             ceil_mode)
    total = ops.sum(_flat_windows(_padded(x, p, extra, 0.0), k, s, d), axis=0)
    if divisor_override is not None:
        if int(divisor_override) == 0:
            raise ops._err("avg_pool2d", "divisor must be not zero")
        div: Any = float(divisor_override)
    else:
        dv = _avg_divisor(x, k, s, p, outs, count_include_pad)
        div = float(dv.flat[0]) if (dv == dv.flat[0]).all() else \
            ops.as_tensor(dv.astype(x.dtype.np), like=total, const=True)
    out = ops.div(total, div)
    return ops.squeeze(out, 0) if unbatched else out


def _adaptive_matrix(n: int, o: int, dtype) -> np.ndarray:
    """[o, n] averaging rows over torch's windows [floor(i*n/o), ceil((i+1)*n/o))."""
    a = np.zeros((o, n), dtype=dtype.np)
    for i in range(o):
        lo, hi = (i * n) // o, -(-((i + 1) * n) // o)
        a[i, lo:hi] = 1.0 / (hi - lo)
    return a


def adaptive_avg_pool2d(input: Tensor, output_size: Any) -> Tensor:  # noqa: A002
    """Means over torch's adaptive windows; output_size entries of None keep the input size."""
    x, unbatched = _spatial(ops.as_tensor(input), "adaptive_avg_pool2d")
    if not x.dtype.is_float:
        raise ops._err("adaptive_avg_pool2d", f"expects a floating input, got {ops._fmt(x)}",
                       TypeError)
    size = output_size if isinstance(output_size, (tuple, list)) else (output_size, output_size)
    if len(size) != 2:
        raise ops._err("adaptive_avg_pool2d", f"output_size must be an int or a pair, got "
                       f"{output_size!r}")
    h, w = x.shape[2:]
    oh, ow = (n if o is None else int(o) for n, o in zip((h, w), size))
    if oh < 1 or ow < 1 or h == 0 or w == 0:
        raise ops._err("adaptive_avg_pool2d", f"cannot pool {ops._fmt(x)} to {(oh, ow)}")
    if h % oh == 0 and w % ow == 0:
        out = avg_pool2d(x, (h // oh, w // ow))
    else:
        ah = ops.as_tensor(_adaptive_matrix(h, oh, x.dtype), like=x, const=True)
        awt = ops.as_tensor(_adaptive_matrix(w, ow, x.dtype).T.copy(), like=x, const=True)
        out = ops.matmul(ops.matmul(ah, x), awt)
    return ops.squeeze(out, 0) if unbatched else out


# -- batch norm -----------------------------------------------------------------------------
def batch_norm(input: Tensor, running_mean: Tensor | None, running_var: Tensor | None,  # noqa: A002
               weight: Tensor | None = None, bias: Tensor | None = None,
               training: bool = False, momentum: Any = 0.1, eps: float = 1e-5) -> Tensor:
    """Normalize over every axis but 1 (channels). Training uses the batch's mean and biased
    variance and, given running stats, updates them in place: running_mean <- (1 - m) *
    running_mean + m * mean, running_var likewise with the unbiased variance."""
    x = ops.as_tensor(input)
    if x.ndim < 2 and x.numel() == 0 and all(t is None or t.numel() == 0 for t in
                                             (running_mean, running_var, weight, bias)):
        return ops.add(x, 0.0)                      # torch: an empty 1-D input has no channels
    if x.ndim < 2:
        raise ops._err("batch_norm", f"expects an input with a channel axis (N, C, ...), got "
                       f"{ops._fmt(x)}")
    c = x.shape[1]
    axes = (0,) + tuple(range(2, x.ndim))
    keep = (1, c) + (1,) * (x.ndim - 2)
    for name, t in (("running_mean", running_mean), ("running_var", running_var),
                    ("weight", weight), ("bias", bias)):
        if t is not None and tuple(t.shape) != (c,):
            raise ops._err("batch_norm", f"{name} must have shape ({c},) for input "
                           f"{ops._fmt(x)}, got {ops._fmt(t)}")
    if training:
        count = x.numel() // c if c else 0
        if count <= 1:
            raise ops._err("batch_norm", f"Expected more than 1 value per channel when "
                           f"training, got input size {list(x.shape)}")
        mean = ops.div(ops.sum(x, axis=axes, keepdims=True), count)
        centered = ops.sub(x, mean)
        var = ops.div(ops.sum(ops.mul(centered, centered), axis=axes, keepdims=True), count)
        if running_mean is not None and running_var is not None:
            _update_running(running_mean, running_var, mean, var, count, momentum)
    else:
        if running_mean is None or running_var is None:
            raise ops._err("batch_norm", "running_mean and running_var are needed in eval "
                           "mode (training=False)")
        mean = ops.reshape(ops.cast(running_mean, x.dtype), keep)
        var = ops.reshape(ops.cast(running_var, x.dtype), keep)
        centered = ops.sub(x, mean)
    y = ops.mul(centered, ops.div(1.0, ops.sqrt(ops.add(var, eps))))
    if weight is not None:
        y = ops.mul(y, ops.reshape(weight, keep))
    if bias is not None:
        y = ops.add(y, ops.reshape(bias, keep))
    return y


def _update_running(rm: Tensor, rv: Tensor, mean: Tensor, var: Tensor, count: int,
                    momentum: Any) -> None:
    with no_grad():
        m = ops.cast(momentum, rm.dtype) if isinstance(momentum, Tensor) else float(momentum)
        bm = ops.cast(ops.reshape(ops.stop_gradient(mean), rm.shape), rm.dtype)
        bv = ops.cast(ops.mul(ops.reshape(ops.stop_gradient(var), rv.shape), count / (count - 1)),
                      rv.dtype)
        for run, batch in ((rm, bm), (rv, bv)):
            keep = ops.sub(1.0, m) if isinstance(m, Tensor) else 1.0 - m
            new = ops.add(ops.mul(run, keep), ops.mul(batch, m))
            run.copy_(ops.cast(new, run.dtype))


__all__ = ["conv2d", "max_pool2d", "avg_pool2d", "adaptive_avg_pool2d", "batch_norm"]
