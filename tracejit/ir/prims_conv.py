"""2-D convolution (the window view it is built on, `windows`, and its adjoint `col2im` are in
ir/prims_windows.py).

Primitives:
- `conv2d %x, %w {stride, padding, dilation, groups}`: NCHW input, weight [O, C/groups, kH,
  kW], padding (top, bottom, left, right) so that 'same' with an even kernel is asymmetric
  as in torch. Its gradients are primitives too: `conv2d_input_grad %g, %w` (the transposed
  convolution) and `conv2d_weight_grad %x, %g` (the correlation of input and cotangent). The
  three are each other's VJPs, so every order of derivative stays in these three ops.

Eager mode and the interpreter run NumPy im2col + matmul (grouped, batched). The code
generators never see conv2d: before fusion `expand_convs` rewrites the three into windows (a
fused gather loop) + matmul (the extern BLAS/cuBLAS GEMM) + reshapes, and col2im (gather form,
the convolution's padding cropped in the same loop) for the input gradient. The IR dumps keep
showing conv2d.
"""
from __future__ import annotations

import numpy as np

from . import dtypes as dt
from .batching import all_batched, to_batched
from .core import Aval, Graph, expand
from .primitives import P, Primitive, bind, matmul, op_error, reshape, tangent_sum, transpose
from .prims_windows import col2im, out_size, windows, windows_array

__all__ = ["CONVS", "col2im", "conv2d", "conv2d_input_grad", "conv2d_weight_grad",
           "expand_convs", "out_size", "windows"]

CONVS = ("conv2d", "conv2d_input_grad", "conv2d_weight_grad")


# -- conv2d and its gradients ----------------------------------------------------------------
_CONV_PARAMS = {"stride": "ints", "padding": "ints", "dilation": "ints", "groups": "int"}


def _check_common(name, x: Aval, w: Aval, stride, padding, dilation, groups) -> None:
    if x.ndim != 4 or w.ndim != 4:
        raise op_error(name, f"expects a 4-D input (N, C, H, W) and a 4-D weight "
                       f"(O, C/groups, kH, kW), got {x} and {w}")
    if x.dtype is not w.dtype or not x.dtype.is_float:
        raise op_error(name, f"input and weight must have the same floating dtype, got {x} "
                       f"and {w}", TypeError)
    if len(stride) != 2 or len(dilation) != 2 or len(padding) != 4:
        raise op_error(name, "stride and dilation take 2 ints, padding 4 (top, bottom, left, "
                       f"right), got {stride}, {dilation}, {padding}")
    if min(*stride, *dilation) < 1 or min(padding) < 0 or groups < 1:
        raise op_error(name, f"stride {stride} and dilation {dilation} must be positive, "
                       f"padding {padding} non-negative and groups {groups} positive")


def _conv_out(name, x: Aval, w: Aval, stride, padding, dilation, groups) -> tuple[int, int]:
    _check_common(name, x, w, stride, padding, dilation, groups)
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    if c != cg * groups or o % groups:
        raise op_error(name, f"input {x} has {c} channels but weight {w} with groups={groups} "
                       f"expects {cg * groups} (and out_channels divisible by groups)")
    hp, wp = h + padding[0] + padding[1], wd + padding[2] + padding[3]
    oh, ow = out_size(hp, kh, stride[0], dilation[0]), out_size(wp, kw, stride[1], dilation[1])
    if oh < 1 or ow < 1:
        raise op_error(name, f"kernel {(kh, kw)} with dilation {tuple(dilation)} is larger than "
                       f"the padded input {(hp, wp)} of {x}")
    return oh, ow


def _infer_conv(name, avals, stride, padding, dilation, groups):
    x, w = avals
    oh, ow = _conv_out(name, x, w, stride, padding, dilation, groups)
    return Aval((x.shape[0], w.shape[0], oh, ow), x.dtype)


def _infer_input_grad(name, avals, in_hw, stride, padding, dilation, groups):
    g, w = avals
    x = Aval((g.shape[0], w.shape[1] * groups) + tuple(in_hw), g.dtype) if g.ndim == 4 else g
    if g.ndim == 4 and g.shape[1:] != (w.shape[0],) + _conv_out(name, x, w, stride, padding,
                                                                 dilation, groups):
        raise op_error(name, f"cotangent {g} does not match weight {w} and input size {in_hw}")
    _check_common(name, g, w, stride, padding, dilation, groups)
    return x


def _infer_weight_grad(name, avals, kernel, stride, padding, dilation, groups):
    x, g = avals
    if x.ndim != 4 or g.ndim != 4:
        raise op_error(name, f"expects 4-D input and cotangent, got {x} and {g}")
    w = Aval((g.shape[1], x.shape[1] // groups) + tuple(kernel), x.dtype)
    if g.shape != (x.shape[0], w.shape[0]) + _conv_out(name, x, w, stride, padding, dilation,
                                                       groups):
        raise op_error(name, f"cotangent {g} does not match input {x} and kernel {kernel}")
    return w


def _compute(x):
    """16-bit floats multiply and accumulate in float32 (as matmul does)."""
    return x.astype(np.float32) if x.dtype in dt.HALF_NP else x


def _padded(x, padding):
    t, b, lft, r = padding
    if not any(padding):
        return x
    return np.pad(x, ((0, 0), (0, 0), (t, b), (lft, r)))


def _cols(x, kernel, stride, padding, dilation, groups):
    """im2col of x: [N, G, Cg*kH*kW, OH*OW], and (OH, OW)."""
    c = windows_array(_padded(x, padding), kernel, stride, dilation)
    n, ch, kh, kw, oh, ow = c.shape
    return c.reshape(n, groups, ch // groups * kh * kw, oh * ow), (oh, ow)


def _impl_conv(x, w, stride, padding, dilation, groups):
    dtype = x.dtype
    x, w = _compute(x), _compute(w)
    cols, (oh, ow) = _cols(x, w.shape[2:], stride, padding, dilation, groups)
    wm = w.reshape(groups, w.shape[0] // groups, w[0].size)
    out = np.matmul(wm, cols)                                 # [N, G, Og, L]
    return out.reshape(x.shape[0], w.shape[0], oh, ow).astype(dtype, copy=False)


def _impl_weight_grad(x, g, kernel, stride, padding, dilation, groups):
    dtype = x.dtype
    x, g = _compute(x), _compute(g)
    cols, _ = _cols(x, kernel, stride, padding, dilation, groups)
    n, o = g.shape[:2]
    gm = g.reshape(n, groups, o // groups, g.shape[2] * g.shape[3])
    dw = np.matmul(gm, np.swapaxes(cols, -1, -2)).sum(axis=0)  # [G, Og, K]
    return dw.reshape((o, x.shape[1] // groups) + tuple(kernel)).astype(dtype, copy=False)


def _impl_input_grad(g, w, in_hw, stride, padding, dilation, groups):
    dtype = g.dtype
    g, w = _compute(g), _compute(w)
    n, o, oh, ow = g.shape
    _, cg, kh, kw = w.shape
    wm = np.swapaxes(w.reshape(groups, o // groups, cg * kh * kw), -1, -2)   # [G, K, Og]
    dcols = np.matmul(wm, g.reshape(n, groups, o // groups, oh * ow))    # [N, G, K, L]
    dcols = dcols.reshape(n, groups * cg, kh, kw, oh, ow)
    hp, wp = in_hw[0] + padding[0] + padding[1], in_hw[1] + padding[2] + padding[3]
    out = np.zeros_like(dcols, shape=(n, groups * cg, hp, wp))
    (sh, sw), (dh, dw) = stride, dilation
    for i in range(kh):
        for j in range(kw):
            out[..., i * dh:i * dh + (oh - 1) * sh + 1:sh,
                j * dw:j * dw + (ow - 1) * sw + 1:sw] += dcols[:, :, i, j]
    out = out[..., padding[0]:padding[0] + in_hw[0], padding[2]:padding[2] + in_hw[1]]
    return out.astype(dtype)


def _conv_params(p: dict) -> dict:
    return {k: p[k] for k in _CONV_PARAMS}


def conv2d(x, w, **p):
    return bind(P.conv2d, x, w, **_conv_params(p))


def conv2d_input_grad(g, w, in_hw, **p):
    return bind(P.conv2d_input_grad, g, w, in_hw=tuple(in_hw), **_conv_params(p))


def conv2d_weight_grad(x, g, kernel, **p):
    return bind(P.conv2d_weight_grad, x, g, kernel=tuple(kernel), **_conv_params(p))


def _vjp_conv(g, ins, out, p, need):
    x, w = ins
    return [conv2d_input_grad(g, w, x.shape[2:], **p) if need[0] else None,
            conv2d_weight_grad(x, g, w.shape[2:], **p) if need[1] else None]


def _vjp_input_grad(c, ins, out, p, need):
    g, w = ins        # out = conv2d_input_grad(g, w): linear in each, adjoint of conv2d
    return [conv2d(c, w, **p) if need[0] else None,
            conv2d_weight_grad(c, g, w.shape[2:], **p) if need[1] else None]


def _vjp_weight_grad(c, ins, out, p, need):
    x, g = ins        # out = conv2d_weight_grad(x, g)
    return [conv2d_input_grad(g, c, x.shape[2:], **p) if need[0] else None,
            conv2d(x, c, **p) if need[1] else None]


def _bilinear_jvp(prim_name: str):
    """The tangent of a product linear in each operand: f(ta, b) + f(a, tb)."""
    def jvp(t, ins, out, params):
        prim = P.get(prim_name)
        return tangent_sum(None if t[0] is None else bind(prim, t[0], ins[1], **params),
                           None if t[1] is None else bind(prim, ins[0], t[1], **params))
    return jvp


def _saves(need):
    return tuple(i for i, n in ((1, need[0]), (0, need[1])) if n)


# -- batching (vmap): a batch of inputs joins the images (N); a batch of weights becomes
# groups, so every case is one convolution
def _fold_images(x):
    """(B, N, ...) -> (B*N, ...)."""
    return reshape(x, (x.shape[0] * x.shape[1],) + tuple(x.shape[2:]))


def _as_groups(x):
    """(B, N, C, H, W) -> (N, B*C, H, W): the batch as channel groups."""
    b, n, c, h, w = x.shape
    return reshape(transpose(x, (1, 0, 2, 3, 4)), (n, b * c, h, w))


def _from_groups(y, size):
    """(N, B*C, H, W) -> (B, N, C, H, W)."""
    n, bc, h, w = y.shape
    return transpose(reshape(y, (n, size, bc // size, h, w)), (1, 0, 2, 3, 4))


def _grouped(p, size):
    return {**_conv_params(p), "groups": p["groups"] * size}


def _batch_conv(prim, ax, args, batched, params):
    x, w = args
    size = ax.size
    if not batched[1]:                       # only the input: more images
        y = conv2d(_fold_images(x), w, **_conv_params(params))
        return reshape(y, (size, x.shape[1]) + tuple(y.shape[1:])), True
    x = x if batched[0] else to_batched(x, ax)
    y = conv2d(_as_groups(x), _fold_images(w), **_grouped(params, size))
    return _from_groups(y, size), True


def _batch_input_grad(prim, ax, args, batched, params):
    g, w = args
    size, hw = ax.size, params["in_hw"]
    if not batched[1]:
        y = conv2d_input_grad(_fold_images(g), w, hw, **_conv_params(params))
        return reshape(y, (size, g.shape[1]) + tuple(y.shape[1:])), True
    g = g if batched[0] else to_batched(g, ax)
    y = conv2d_input_grad(_as_groups(g), _fold_images(w), hw, **_grouped(params, size))
    return _from_groups(y, size), True


def _batch_weight_grad(prim, ax, args, batched, params):
    x, g = all_batched(args, batched, ax)
    size = ax.size
    y = conv2d_weight_grad(_as_groups(x), _as_groups(g), params["kernel"],
                           **_grouped(params, size))
    return reshape(y, (size, y.shape[0] // size) + tuple(y.shape[1:])), True


P.register(Primitive("conv2d", "other", _infer_conv, _impl_conv, vjp=_vjp_conv,
                     jvp=_bilinear_jvp("conv2d"), saves=_saves,
                     params=_CONV_PARAMS, arity=2,
                     batch=_batch_conv))
P.register(Primitive("conv2d_input_grad", "other", _infer_input_grad, _impl_input_grad,
                     vjp=_vjp_input_grad, jvp=_bilinear_jvp("conv2d_input_grad"),
                     saves=_saves,
                     params={"in_hw": "ints", **_CONV_PARAMS}, arity=2,
                     batch=_batch_input_grad))
P.register(Primitive("conv2d_weight_grad", "other", _infer_weight_grad, _impl_weight_grad,
                     vjp=_vjp_weight_grad, jvp=_bilinear_jvp("conv2d_weight_grad"),
                     saves=_saves,
                     params={"kernel": "ints", **_CONV_PARAMS}, arity=2,
                     batch=_batch_weight_grad))


# -- the expansion the code generators see ---------------------------------------------------
def _im2col(x, kernel, p):
    """x [N, C, H, W] -> windows [N, C, kH, kW, OH, OW] of the zero-padded input."""
    t, b, lft, r = p["padding"]
    if any(p["padding"]):
        x = bind(P.pad, x, lo=(0, 0, t, lft), hi=(0, 0, b, r), interior=(0, 0, 0, 0))
    return windows(x, kernel, p["stride"], p["dilation"])


def _gemm(a, b):
    """[G, M, K] @ [G, K, P]; a plain 2-D GEMM when there is one group."""
    if a.shape[0] != 1:
        return matmul(a, b)
    m, p = a.shape[1], b.shape[2]
    return reshape(matmul(reshape(a, a.shape[1:]), reshape(b, b.shape[1:])), (1, m, p))


def _expand_conv(x, w, p):
    # one GEMM per group with batch and positions side by side, [Og, K] @ [K, N*L]: the weight
    # is read as it is (no copy per batch element) and the im2col loop writes [G, K, N*L]
    n, c = x.shape[:2]
    o, cg, kh, kw = w.shape
    gr = p["groups"]
    k = cg * kh * kw
    cols = _im2col(x, (kh, kw), p)
    oh, ow = cols.shape[-2:]
    cols = reshape(transpose(reshape(cols, (n, gr, k, oh * ow)), (1, 2, 0, 3)),
                   (gr, k, n * oh * ow))
    out = _gemm(reshape(w, (gr, o // gr, k)), cols)                 # [G, Og, N*L]
    out = transpose(reshape(out, (gr, o // gr, n, oh * ow)), (2, 0, 1, 3))
    return reshape(out, (n, o, oh, ow))


def _expand_weight_grad(x, g, p):
    n, c = x.shape[:2]
    gr = p["groups"]
    kh, kw = p["kernel"]
    o, oh, ow = g.shape[1:]
    k = c // gr * kh * kw
    # one GEMM per group contracting over batch and positions together: [Og, N*L] @ [N*L, K]
    cols = reshape(_im2col(x, (kh, kw), p), (n, gr, k, oh * ow))
    cols = reshape(transpose(cols, (1, 0, 3, 2)), (gr, n * oh * ow, k))
    gm = reshape(transpose(reshape(g, (n, gr, o // gr, oh * ow)), (1, 2, 0, 3)),
                 (gr, o // gr, n * oh * ow))
    return reshape(_gemm(gm, cols), (o, c // gr, kh, kw))


def _expand_input_grad(g, w, p):
    n, o, oh, ow = g.shape
    _, cg, kh, kw = w.shape
    gr = p["groups"]
    h, wd = p["in_hw"]
    t, b, lft, r = p["padding"]
    k = cg * kh * kw
    wm = transpose(reshape(w, (gr, o // gr, k)), (0, 2, 1))          # [G, K, Og]
    gm = reshape(transpose(reshape(g, (n, gr, o // gr, oh * ow)), (1, 2, 0, 3)),
                 (gr, o // gr, n * oh * ow))
    dcols = reshape(_gemm(wm, gm), (gr, cg, kh, kw, n, oh, ow))     # [G, K, N*L]
    dcols = reshape(transpose(dcols, (4, 0, 1, 2, 3, 5, 6)), (n, gr * cg, kh, kw, oh, ow))
    return col2im(dcols, (h, wd), p["stride"], p["dilation"], lo=(t, lft))


_EXPAND = {"conv2d": _expand_conv, "conv2d_input_grad": _expand_input_grad,
           "conv2d_weight_grad": _expand_weight_grad}


def expand_convs(g: Graph) -> Graph:
    """A graph without conv2d and its gradient ops (the backends run this before fusion);
    `g` itself when it has none, so the IR dumps keep showing them."""
    return expand(g, {name: lambda args, params, f=f: f(*args, params)
                      for name, f in _EXPAND.items()})
