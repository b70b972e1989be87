"""Convolution, pooling and batch normalization in torch.nn.functional's spelling, over 2 or 3
spatial axes (the 2-D and 3-D ops share one body each; 1-D ones run the 2-D op on a height-1
view, nn/functional_1d.py).

conv2d / conv3d are primitives (ir/prims_conv.py: im2col + GEMM on every backend, their two
gradients primitives too). Pooling reads windows through the `windows` view primitive, whose
index map fuses into the reduction kernel that consumes it, so a pooling kernel reads each
window straight from the input (no slices, no copies of the windows):
- max_pool: the first position of the window maximum (argmax over the window), and the value
  there; so the gradient goes to that one position (the first on ties, as torch's CPU kernel),
  and a NaN in the window wins, as torch.
- avg_pool: the window sum divided by torch's divisor (count_include_pad, ceil_mode windows
  that hang over the edge, divisor_override).
- adaptive_avg_pool: a plain avg_pool when the output divides the input; otherwise torch's
  uneven windows, written as one small averaging matrix per axis (out = A_h @ x @ A_w^T).
batch_norm: mean and biased variance over (N, *spatial) normalize; the running variance is
updated with the unbiased one (in place, so that a compiled training step writes it back).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..ir.primitives import P, bind
from ..ir.prims_conv import out_size, windows
from ..ir.prims_select import iota
from . import composites as C
from . import ops
from .autocast import LOWER, autocast_op
from .state import no_grad
from .tensor_base import TensorBase as Tensor


_SPATIAL = {2: ("H, W", "kH, kW"), 3: ("D, H, W", "kD, kH, kW")}


def _ntuple(v: Any, n: int, op: str, what: str) -> tuple[int, ...]:
    if isinstance(v, (tuple, list)):
        if len(v) == 1:
            v = tuple(v) * n
        if len(v) != n:
            kind = "a pair" if n == 2 else "a triple"
            raise ops._err(op, f"{what} must be an int or {kind} of ints, got {v!r}")
        return tuple(int(e) for e in v)
    return (int(v),) * n


def _pair(v: Any, op: str, what: str) -> tuple[int, int]:
    return _ntuple(v, 2, op, what)  # type: ignore[return-value]


def _spatial(x: Tensor, op: str, nd: int = 2) -> tuple[Tensor, bool]:
    """x as (N, C, *spatial); unbatched (C, *spatial) input gets a batch axis (removed
    afterwards)."""
    if x.ndim == nd + 1:
        return ops.unsqueeze(x, 0), True
    if x.ndim != nd + 2:
        sp = _SPATIAL[nd][0]
        raise ops._err(op, f"expects a {nd + 1}-D (C, {sp}) or {nd + 2}-D (N, C, {sp}) input, "
                       f"got {ops._fmt(x)}")
    return x, False


def _conv_padding(op: str, padding: Any, kernel, stride, dilation) -> tuple[int, ...]:
    """(lo, hi) per spatial axis, flattened."""
    nd = len(kernel)
    if isinstance(padding, str):
        if padding == "valid":
            return (0,) * (2 * nd)
        if padding != "same":
            raise ops._err(op, f"padding must be an int, {nd} ints, 'same' or 'valid', "
                           f"got {padding!r}")
        if stride != (1,) * nd:
            raise ops._err(op, "padding='same' is not supported for strided "
                           f"convolutions (stride={stride})")
        # torch: the total d*(k-1) splits with the odd element at the end (bottom / right)
        totals = (d * (k - 1) for d, k in zip(dilation, kernel))
        return tuple(v for t in totals for v in (t // 2, t - t // 2))
    return tuple(v for p in _ntuple(padding, nd, op, "padding") for v in (p, p))


def _conv(op: str, nd: int, input: Tensor, weight: Tensor, bias: Tensor | None,  # noqa: A002
          stride: Any, padding: Any, dilation: Any, groups: int) -> Tensor:
    x, unbatched = _spatial(ops.as_tensor(input), op, nd)
    w = ops.as_tensor(weight)
    if w.ndim != nd + 2:
        raise ops._err(op, f"weight must be {nd + 2}-D (O, C/groups, {_SPATIAL[nd][1]}), got "
                       f"{ops._fmt(w)}")
    s, d = _ntuple(stride, nd, op, "stride"), _ntuple(dilation, nd, op, "dilation")
    pad = _conv_padding(op, padding, w.shape[2:], s, d)
    y = bind(P.get(op), x, w, stride=s, padding=pad, dilation=d, groups=int(groups))
    if bias is not None:
        b = ops.as_tensor(bias)
        if b.shape != (w.shape[0],):
            raise ops._err(op, f"bias must have shape ({w.shape[0]},), got {ops._fmt(b)}")
        y = ops.add(y, ops.reshape(b, (1, -1) + (1,) * nd))
    return ops.squeeze(y, 0) if unbatched else y


@autocast_op(LOWER)
def conv2d(input: Tensor, weight: Tensor, bias: Tensor | None = None, stride: Any = 1,  # noqa: A002
           padding: Any = 0, dilation: Any = 1, groups: int = 1) -> Tensor:
    """2-D cross-correlation of an (N, C, H, W) input with an (O, C/groups, kH, kW) weight."""
    return _conv("conv2d", 2, input, weight, bias, stride, padding, dilation, groups)


@autocast_op(LOWER)
def conv3d(input: Tensor, weight: Tensor, bias: Tensor | None = None, stride: Any = 1,  # noqa: A002
           padding: Any = 0, dilation: Any = 1, groups: int = 1) -> Tensor:
    """3-D cross-correlation of an (N, C, D, H, W) input with an (O, C/groups, kD, kH, kW)
    weight."""
    return _conv("conv3d", 3, input, weight, bias, stride, padding, dilation, groups)


# -- pooling --------------------------------------------------------------------------------
def _pool_geometry(op: str, x: Tensor, nd: int, kernel_size, stride, padding, dilation,
                   ceil_mode):
    """(kernel, stride, padding, dilation, output size, extra far-end padding)."""
    k = _ntuple(kernel_size, nd, op, "kernel_size")
    s = k if stride is None or (isinstance(stride, (list, tuple)) and len(stride) == 0) \
        else _ntuple(stride, nd, op, "stride")
    p, d = _ntuple(padding, nd, op, "padding"), _ntuple(dilation, nd, op, "dilation")
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
    lo = (0, 0) + tuple(p)
    hi = (0, 0) + tuple(pi + e for pi, e in zip(p, extra))
    if not any(lo + hi):
        return x
    out = bind(P.pad, x, lo=lo, hi=hi, interior=(0,) * x.ndim)
    if fill == 0:
        return out
    # the inside mask is a padded splat of True: no constant the size of x
    inside = bind(P.pad, ops.broadcast_to(ops.as_tensor(True, like=x), x.shape), lo=lo, hi=hi,
                  interior=(0,) * x.ndim)
    return ops.where(inside, out, ops.as_tensor(fill, out.dtype, like=out))


def _flat_windows(x: Tensor, k, s, d) -> Tensor:
    """[prod(k), N, C, *O]: each output position's window along the leading axis. Reducing
    a leading axis is a column reduction: one thread (CUDA) or one vector lane (CPU) per
    output position walks its few window taps, and neighbours read neighbouring memory."""
    w = windows(x, k, s, d)
    nd = len(k)
    outs = tuple(w.shape[-nd:])
    w = ops.reshape(w, tuple(w.shape[:2]) + (math.prod(k),) + outs)
    return ops.permute(w, (2, 0, 1) + tuple(range(3, 3 + nd)))


def _float_input(op: str, input: Tensor, nd: int) -> tuple[Tensor, bool]:
    x, unbatched = _spatial(ops.as_tensor(input), op, nd)
    if not x.dtype.is_float:
        raise ops._err(op, f"expects a floating input, got {ops._fmt(x)}", TypeError)
    return x, unbatched


def _max_pool(op: str, nd: int, input: Tensor, kernel_size, stride, padding,  # noqa: A002
              dilation, ceil_mode: bool, return_indices: bool):
    x, unbatched = _float_input(op, input, nd)
    k, s, p, d, outs, extra = _pool_geometry(op, x, nd, kernel_size, stride, padding,
                                             dilation, ceil_mode)
    win = _flat_windows(_padded(x, p, extra, -math.inf), k, s, d)
    first = bind(P.argmax, win, axis=0)                          # [N, C, *O]
    at = ops.eq(iota(win, 0), ops.broadcast_to(ops.unsqueeze(first, 0), win.shape))
    out = ops.sum(ops.where(at, win, ops.as_tensor(0.0, win.dtype, like=win)), axis=0)
    if unbatched:
        out = ops.squeeze(out, 0)
    if not return_indices:
        return out
    # torch's indices: flat positions in the (unpadded) spatial volume of each channel
    idx = None
    for i in range(nd):
        tap = ops.remainder(ops.floor_divide(first, math.prod(k[i + 1:])), k[i])
        pos = ops.add(ops.sub(ops.mul(iota(first, 2 + i), s[i]), p[i]), ops.mul(tap, d[i]))
        idx = pos if idx is None else ops.add(ops.mul(idx, x.shape[2 + i]), pos)
    return out, (ops.squeeze(idx, 0) if unbatched else idx)


def max_pool2d(input: Tensor, kernel_size: Any, stride: Any = None, padding: Any = 0,  # noqa: A002
               dilation: Any = 1, ceil_mode: bool = False, return_indices: bool = False):
    """Window maxima; the gradient goes to the first maximum of each window."""
    return _max_pool("max_pool2d", 2, input, kernel_size, stride, padding, dilation, ceil_mode,
                     return_indices)


def max_pool3d(input: Tensor, kernel_size: Any, stride: Any = None, padding: Any = 0,  # noqa: A002
               dilation: Any = 1, ceil_mode: bool = False, return_indices: bool = False):
    """Window maxima over (N, C, D, H, W); the gradient goes to the first maximum."""
    return _max_pool("max_pool3d", 3, input, kernel_size, stride, padding, dilation, ceil_mode,
                     return_indices)


def _avg_divisor(x: Tensor, k, s, p, outs, count_include_pad: bool) -> np.ndarray:
    """torch's divisor per output position, [*O] (small: the output volume only)."""
    sizes = []
    for n, ki, si, pi, o in zip(x.shape[2:], k, s, p, outs):
        start = np.arange(o) * si - pi
        end = np.minimum(start + ki, n + pi)
        full = end - start
        clipped = np.minimum(end, n) - np.maximum(start, 0)
        sizes.append(full if count_include_pad else clipped)
    out = sizes[0]
    for v in sizes[1:]:
        out = np.multiply.outer(out, v)
    return out


def _avg_pool(op: str, nd: int, input: Tensor, kernel_size, stride, padding,  # noqa: A002
              ceil_mode: bool, count_include_pad: bool, divisor_override) -> Tensor:
    x, unbatched = _float_input(op, input, nd)
    k, s, p, d, outs, extra = _pool_geometry(op, x, nd, kernel_size, stride, padding, 1,
                                             ceil_mode)
    total = ops.sum(_flat_windows(_padded(x, p, extra, 0.0), k, s, d), axis=0)
    if divisor_override is not None:
        if int(divisor_override) == 0:
            raise ops._err(op, "divisor must be not zero")
        div: Any = float(divisor_override)
    else:
        dv = _avg_divisor(x, k, s, p, outs, count_include_pad)
        div = float(dv.flat[0]) if (dv == dv.flat[0]).all() else \
            ops.as_tensor(dv.astype(x.dtype.np), like=total, const=True)
    out = ops.div(total, div)
    return ops.squeeze(out, 0) if unbatched else out


def avg_pool2d(input: Tensor, kernel_size: Any, stride: Any = None, padding: Any = 0,  # noqa: A002
               ceil_mode: bool = False, count_include_pad: bool = True,
               divisor_override: int | None = None) -> Tensor:
    """Window means with torch's divisor rules."""
    return _avg_pool("avg_pool2d", 2, input, kernel_size, stride, padding, ceil_mode,
                     count_include_pad, divisor_override)


def avg_pool3d(input: Tensor, kernel_size: Any, stride: Any = None, padding: Any = 0,  # noqa: A002
               ceil_mode: bool = False, count_include_pad: bool = True,
               divisor_override: int | None = None) -> Tensor:
    """Window means over (N, C, D, H, W) with torch's divisor rules."""
    return _avg_pool("avg_pool3d", 3, input, kernel_size, stride, padding, ceil_mode,
                     count_include_pad, divisor_override)


def _adaptive_matrix(n: int, o: int, dtype) -> np.ndarray:
    """[o, n] averaging rows over torch's windows [floor(i*n/o), ceil((i+1)*n/o))."""
    a = np.zeros((o, n), dtype=dtype.np)
    for i in range(o):
        lo, hi = (i * n) // o, -(-((i + 1) * n) // o)
        a[i, lo:hi] = 1.0 / (hi - lo)
    return a


def _adaptive_avg(op: str, nd: int, input: Tensor, output_size: Any) -> Tensor:  # noqa: A002
    x, unbatched = _float_input(op, input, nd)
    size = output_size if isinstance(output_size, (tuple, list)) else (output_size,) * nd
    if len(size) != nd:
        raise ops._err(op, f"output_size must be an int or {nd} ints, got {output_size!r}")
    ins = tuple(x.shape[2:])
    outs = tuple(n if o is None else int(o) for n, o in zip(ins, size))
    if min(outs) < 1 or 0 in ins:
        raise ops._err(op, f"cannot pool {ops._fmt(x)} to {outs}")
    if all(n % o == 0 for n, o in zip(ins, outs)):
        out = _avg_pool(op, nd, x, tuple(n // o for n, o in zip(ins, outs)), None, 0, False,
                        True, None)
    else:
        # one averaging matrix per axis: A @ (x as [..., S_i, rest]) for the leading spatial
        # axes, x @ A^T for the last
        out = x
        for i in range(nd):
            a = _adaptive_matrix(ins[i], outs[i], x.dtype)
            if i == nd - 1:
                out = ops.matmul(out, ops.as_tensor(a.T.copy(), like=x, const=True))
                continue
            shape = tuple(out.shape)
            lead, rest = shape[:2 + i], shape[3 + i:]
            flat = out if len(rest) == 1 else ops.reshape(out, lead + (ins[i], math.prod(rest)))
            flat = ops.matmul(ops.as_tensor(a, like=x, const=True), flat)
            out = flat if len(rest) == 1 else ops.reshape(flat, lead + (outs[i],) + rest)
    return ops.squeeze(out, 0) if unbatched else out


def adaptive_avg_pool2d(input: Tensor, output_size: Any) -> Tensor:  # noqa: A002
    """Means over torch's adaptive windows; output_size entries of None keep the input size."""
    return _adaptive_avg("adaptive_avg_pool2d", 2, input, output_size)


def adaptive_avg_pool3d(input: Tensor, output_size: Any) -> Tensor:  # noqa: A002
    """Means over torch's adaptive windows of an (N, C, D, H, W) input."""
    return _adaptive_avg("adaptive_avg_pool3d", 3, input, output_size)


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
        # (refined once: a constant channel centers to exact zeros, as torch)
        centered, mean = C.centered_mean(x, axes, count)
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


__all__ = ["conv2d", "max_pool2d", "avg_pool2d", "adaptive_avg_pool2d", "batch_norm", "conv3d",
           "max_pool3d", "avg_pool3d", "adaptive_avg_pool3d"]
