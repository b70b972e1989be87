"""torch.nn.functional's transposed convolutions (conv_transpose1d/2d/3d) and the sliding-window
pair unfold/fold, built on the convolution primitives of ir/prims_conv.py and
ir/prims_windows.py, so their gradients (every order), compiled form and fusion are those ops'.

- conv_transpose2d(x, w) is conv2d's input gradient, `conv2d_input_grad(x, w)`, with the
  transposed convolution's weight [C_in, C_out/groups, kH, kW] read as the forward
  convolution's [O, C/groups, kH, kW]. torch's padding p and output_padding op become the
  forward convolution's (top, bottom) = (p, p - op): the output grows by op rows at the bottom
  (right), which receive the taps that padding p would otherwise crop. Where op > p the rows
  past every tap are zeros, a pad after the op.
- unfold is the `windows` view (im2col) of the zero-padded input, reshaped to
  (N, C*kH*kW, L); fold is its adjoint `col2im` (a gather per output element), the padding
  cropped in the same loop.
conv_transpose3d is conv3d's input gradient in the same way. 1-D forms run the 2-D op on a
height-1 view.
"""
from __future__ import annotations

from typing import Any

from ..ir.primitives import P, bind
from ..ir.prims_conv import out_size
from ..ir.prims_windows import col2im, windows
from ..tracer import ops
from ..tracer.autocast import LOWER, autocast_op
from ..tracer.node_names import rename
from ..tracer.tensor import Tensor

__all__ = ["conv_transpose1d", "conv_transpose2d", "conv_transpose3d", "unfold", "fold"]


def _tuple(v: Any, n: int, op: str, what: str) -> tuple[int, ...]:
    if isinstance(v, (tuple, list)):
        if len(v) == 1:
            v = tuple(v) * n
        if len(v) != n:
            raise ops._err(op, f"{what} must be an int or {n} ints, got {v!r}")
        return tuple(int(e) for e in v)
    if isinstance(v, str):
        raise ops._err(op, f"{what} must be an int or {n} ints, got the string {v!r}")
    return (int(v),) * n


def _transpose_nd(op: str, x: Tensor, w: Tensor, bias, stride, padding, output_padding,
                  groups: int, dilation, n_spatial: int, shown: tuple[Tensor, Tensor]) -> Tensor:
    """x (N, C_in, *S) and w (C_in, C_out/groups, *kernel), S 2-D (1-D ops' a height-1 view)
    or 3-D."""
    nd = x.ndim - 2
    # errors show the user's input and weight (a 1-D op's are seen here as height-1 views)
    xs, ws = ops._fmt(shown[0]), ops._fmt(shown[1])
    if w.ndim != nd + 2:
        raise ops._err(op, f"weight must be {n_spatial + 2}-D (C_in, C_out/groups, "
                       f"*kernel), got {ws}", RuntimeError)
    groups = int(groups)
    if groups < 1:
        raise ops._err(op, f"non-positive groups is not supported, got groups={groups}")
    if x.shape[1] != w.shape[0]:
        raise ops._err(op, f"input {xs} has {x.shape[1]} channels but weight {ws} "
                       f"expects {w.shape[0]} (C_in is the weight's first dim)", RuntimeError)
    if w.shape[0] % groups:
        raise ops._err(op, f"in_channels ({w.shape[0]}) must be divisible by groups "
                       f"({groups})", RuntimeError)
    if not x.dtype.is_float or x.dtype is not w.dtype:
        raise ops._err(op, f"input {xs} and weight {ws} must have the same floating "
                       "dtype", TypeError)
    s, p, op_, d = stride, padding, output_padding, dilation
    if min(*s, *d) < 1 or min(p) < 0 or min(op_) < 0:
        raise ops._err(op, f"stride {s} and dilation {d} must be positive, padding {p} and "
                       f"output_padding {op_} non-negative")
    for i in range(nd):
        if op_[i] >= s[i] and op_[i] >= d[i]:
            raise ops._err(op, f"output padding must be smaller than either stride or "
                           f"dilation, but got output_padding {op_[-n_spatial:]}, stride "
                           f"{s[-n_spatial:]}, dilation {d[-n_spatial:]}", RuntimeError)
    outs = [(n - 1) * si - 2 * pi + di * (k - 1) + oi + 1
            for n, si, pi, di, k, oi in zip(x.shape[2:], s, p, d, w.shape[2:], op_)]
    if min(outs) < 1:
        raise ops._err(op, f"the output size {tuple(outs[-n_spatial:])} of input {xs} with "
                       f"weight {ws}, stride {s[-n_spatial:]}, padding "
                       f"{p[-n_spatial:]} is too small (non-positive)", RuntimeError)
    # the forward convolution's bottom/right padding p - op; what goes below 0 is zero rows
    # appended after the op (no tap reaches them)
    hi = [pi - oi for pi, oi in zip(p, op_)]
    extra = [max(0, -v) for v in hi]
    in_hw = tuple(o - e for o, e in zip(outs, extra))
    y = bind(P.get(f"conv{nd}d_input_grad"), x, w, in_hw=in_hw, stride=s,
             padding=tuple(v for i in range(nd) for v in (p[i], max(hi[i], 0))), dilation=d,
             groups=groups)
    rename(y, "ConvolutionBackward0", x)
    if any(extra):
        y = bind(P.pad, y, lo=(0,) * (nd + 2), hi=(0, 0) + tuple(extra),
                 interior=(0,) * (nd + 2))
    if bias is not None:
        b = ops.as_tensor(bias)
        cout = w.shape[1] * groups
        if tuple(b.shape) != (cout,):
            raise ops._err(op, f"bias must have shape ({cout},), got {ops._fmt(b)}",
                           RuntimeError)
        if b.dtype is not x.dtype:      # (an add would promote: torch refuses it)
            raise ops._err(op, f"bias {ops._fmt(b)} must have the dtype of input {xs}",
                           TypeError)
        y = ops.add(y, ops.reshape(b, (1, -1) + (1,) * nd))
    return y


def _transpose_public(op: str, nd: int, dims: str, input, weight, bias, stride, padding,
                      output_padding, groups, dilation) -> Tensor:
    """conv_transpose{nd}d's checks and batching around _transpose_nd."""
    x = ops.as_tensor(input)
    if x.ndim not in (nd + 1, nd + 2):
        raise ops._err(op, f"expects a {nd + 1}-D (C, {dims}) or {nd + 2}-D (N, C, {dims}) "
                       f"input, got {ops._fmt(x)}", RuntimeError)
    unbatched = x.ndim == nd + 1
    xb = ops.unsqueeze(x, 0) if unbatched else x
    y = _transpose_nd(op, xb, ops.as_tensor(weight), bias, _tuple(stride, nd, op, "stride"),
                      _tuple(padding, nd, op, "padding"),
                      _tuple(output_padding, nd, op, "output_padding"), groups,
                      _tuple(dilation, nd, op, "dilation"), nd, (x, ops.as_tensor(weight)))
    return ops.squeeze(y, 0) if unbatched else y


@autocast_op(LOWER)
def conv_transpose2d(input: Tensor, weight: Tensor, bias: Tensor | None = None,  # noqa: A002
                     stride: Any = 1, padding: Any = 0, output_padding: Any = 0,
                     groups: int = 1, dilation: Any = 1) -> Tensor:
    """2-D transposed convolution ("deconvolution") of an (N, C_in, H, W) or (C_in, H, W)
    input with a (C_in, C_out/groups, kH, kW) weight: the gradient of conv2d w.r.t. its input.
    Output size (H - 1)*stride - 2*padding + dilation*(kH - 1) + output_padding + 1."""
    return _transpose_public("conv_transpose2d", 2, "H, W", input, weight, bias, stride,
                             padding, output_padding, groups, dilation)


@autocast_op(LOWER)
def conv_transpose3d(input: Tensor, weight: Tensor, bias: Tensor | None = None,  # noqa: A002
                     stride: Any = 1, padding: Any = 0, output_padding: Any = 0,
                     groups: int = 1, dilation: Any = 1) -> Tensor:
    """3-D transposed convolution of an (N, C_in, D, H, W) or (C_in, D, H, W) input with a
    (C_in, C_out/groups, kD, kH, kW) weight: the gradient of conv3d w.r.t. its input."""
    return _transpose_public("conv_transpose3d", 3, "D, H, W", input, weight, bias, stride,
                             padding, output_padding, groups, dilation)


@autocast_op(LOWER)
def conv_transpose1d(input: Tensor, weight: Tensor, bias: Tensor | None = None,  # noqa: A002
                     stride: Any = 1, padding: Any = 0, output_padding: Any = 0,
                     groups: int = 1, dilation: Any = 1) -> Tensor:
    """1-D transposed convolution of an (N, C_in, L) or (C_in, L) input with a
    (C_in, C_out/groups, K) weight (conv_transpose2d on a height-1 view)."""
    op = "conv_transpose1d"
    x = ops.as_tensor(input)
    if x.ndim not in (2, 3):
        raise ops._err(op, f"expects a 2-D (C, L) or 3-D (N, C, L) input, got {ops._fmt(x)}",
                       RuntimeError)
    w = ops.as_tensor(weight)
    if w.ndim != 3:
        raise ops._err(op, f"weight must be 3-D (C_in, C_out/groups, K), got {ops._fmt(w)}",
                       RuntimeError)
    unbatched = x.ndim == 2
    x4 = ops.unsqueeze(ops.unsqueeze(x, 0) if unbatched else x, -2)
    one = lambda v, what: (1,) + _tuple(v, 1, op, what)    # noqa: E731
    y = _transpose_nd(op, x4, ops.unsqueeze(w, -2), bias, one(stride, "stride"),
                      (0,) + _tuple(padding, 1, op, "padding"),
                      (0,) + _tuple(output_padding, 1, op, "output_padding"), groups,
                      one(dilation, "dilation"), 1, (x, w))
    y = ops.squeeze(y, -2)
    return ops.squeeze(y, 0) if unbatched else y


# -- unfold / fold ---------------------------------------------------------------------------
def _window_args(op: str, kernel_size, dilation, padding, stride):
    k, d = _tuple(kernel_size, 2, op, "kernel_size"), _tuple(dilation, 2, op, "dilation")
    p, s = _tuple(padding, 2, op, "padding"), _tuple(stride, 2, op, "stride")
    if min(*k, *d, *s) < 1 or min(p) < 0:
        raise ops._err(op, f"kernel_size {k}, dilation {d} and stride {s} must be positive "
                       f"and padding {p} non-negative", RuntimeError)
    return k, d, p, s


def unfold(input: Tensor, kernel_size: Any, dilation: Any = 1, padding: Any = 0,  # noqa: A002
           stride: Any = 1) -> Tensor:
    """Sliding local blocks (im2col): (N, C, H, W) -> (N, C*kH*kW, L), L the number of
    window positions; (C, H, W) -> (C*kH*kW, L)."""
    op = "unfold"
    x = ops.as_tensor(input)
    if x.ndim not in (3, 4):
        raise ops._err(op, f"expected a 3-D (C, H, W) or 4-D (N, C, H, W) input, got "
                       f"{ops._fmt(x)}", RuntimeError)
    k, d, p, s = _window_args(op, kernel_size, dilation, padding, stride)
    hp, wp = x.shape[-2] + 2 * p[0], x.shape[-1] + 2 * p[1]
    oh, ow = out_size(hp, k[0], s[0], d[0]), out_size(wp, k[1], s[1], d[1])
    if oh < 1 or ow < 1:
        raise ops._err(op, f"the sliding blocks of kernel_size {k}, dilation {d}, padding "
                       f"{p}, stride {s} do not fit in input {ops._fmt(x)} (calculated "
                       f"blocks ({oh}, {ow}))", RuntimeError)
    lead = tuple(x.shape[:-2])
    if any(p):
        z = (0,) * len(lead)
        x = bind(P.pad, x, lo=z + p, hi=z + p, interior=(0,) * x.ndim)
    cols = windows(x, k, s, d)                       # [..., C, kH, kW, OH, OW]
    c = lead[-1]
    return ops.reshape(cols, lead[:-1] + (c * k[0] * k[1], oh * ow))


def fold(input: Tensor, output_size: Any, kernel_size: Any, dilation: Any = 1,  # noqa: A002
         padding: Any = 0, stride: Any = 1) -> Tensor:
    """Sums sliding local blocks back into a plane (col2im, unfold's adjoint): (N, C*kH*kW, L)
    -> (N, C, H, W), (C*kH*kW, L) -> (C, H, W); overlapping values add up."""
    op = "fold"
    x = ops.as_tensor(input)
    if x.ndim not in (2, 3):
        raise ops._err(op, f"expected a 2-D (C*kH*kW, L) or 3-D (N, C*kH*kW, L) input, got "
                       f"{ops._fmt(x)}", RuntimeError)
    hw = _tuple(output_size, 2, op, "output_size")
    k, d, p, s = _window_args(op, kernel_size, dilation, padding, stride)
    kk = k[0] * k[1]
    if x.shape[-2] % kk:
        raise ops._err(op, f"Expected size of input's dimension 1 to be divisible by the "
                       f"product of kernel_size, but got input {ops._fmt(x)} and "
                       f"kernel_size={k}", RuntimeError)
    oh, ow = (out_size(n + 2 * pi, ki, si, di) for n, pi, ki, si, di in zip(hw, p, k, s, d))
    if oh < 1 or ow < 1 or oh * ow != x.shape[-1]:
        raise ops._err(op, f"Given output_size={hw}, kernel_size={k}, dilation={d}, "
                       f"padding={p}, stride={s}, expected size of input's dimension 2 to "
                       f"match the calculated number of sliding blocks {max(oh, 0)} * "
                       f"{max(ow, 0)} = {max(oh, 0) * max(ow, 0)}, but got {ops._fmt(x)}",
                       RuntimeError)
    lead = tuple(x.shape[:-2])
    c = x.shape[-2] // kk
    cols = ops.reshape(x, lead + (c,) + k + (oh, ow))
    if any(p):
        # window_taps reads the plane from (lo_h, lo_w): the padding is cropped in the loop
        return col2im(cols, hw, s, d, lo=p)
    return col2im(cols, hw, s, d)
