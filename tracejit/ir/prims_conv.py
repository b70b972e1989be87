"""N-d convolution, n = 2 or 3 spatial axes (the window view it is built on, `windows`, and its
adjoint `col2im` are in ir/prims_windows.py). conv1d runs conv2d on a height-1 view.

Primitives, one family per n, registered below from the same rules (n is the operands' rank
less 2):
- `conv2d %x, %w {stride, padding, dilation, groups}`: NC(D)HW input, weight [O, C/groups,
  *kernel], padding (lo, hi) per spatial axis, flattened ((top, bottom, left, right) in 2-D),
  so that 'same' with an even kernel is asymmetric as in torch. Its gradients are primitives
  too: `conv2d_input_grad %g, %w` (the transposed convolution; `in_hw` is the input's spatial
  size) and `conv2d_weight_grad %x, %g` (the correlation of input and cotangent). The three are
  each other's VJPs, so every order of derivative stays in these three ops.
- `conv3d`, `conv3d_input_grad`, `conv3d_weight_grad`: the same over (N, C, D, H, W).

Eager mode and the interpreter run NumPy im2col + matmul (grouped, batched). The code
generators never see a convolution: before fusion `expand_convs` rewrites the three into
windows (a fused gather loop) + matmul (the extern BLAS/cuBLAS GEMM) + reshapes, and col2im
(gather form, the convolution's padding cropped in the same loop) for the input gradient. The
IR dumps keep showing conv2d / conv3d.
"""
from __future__ import annotations

import itertools
import math

import numpy as np

from . import dtypes as dt
from .batching import all_batched, to_batched
from .core import Aval, Graph, expand
from .passes import cse
from .primitives import P, Primitive, bind, matmul, op_error, reshape, tangent_sum, transpose
from .prims_windows import col2im, out_size, windows, windows_array

__all__ = ["CONVS", "col2im", "conv2d", "conv2d_input_grad", "conv2d_weight_grad", "conv_nd",
           "conv_nd_input_grad", "conv_nd_weight_grad", "expand_convs", "out_size", "windows"]

_NDIMS = (2, 3)
_ROLES = ("", "_input_grad", "_weight_grad")
CONVS = tuple(f"conv{n}d{r}" for n in _NDIMS for r in _ROLES)
_ND = {name: int(name[4]) for name in CONVS}          # the family's number of spatial axes


# -- the three ops and their gradients --------------------------------------------------------
_CONV_PARAMS = {"stride": "ints", "padding": "ints", "dilation": "ints", "groups": "int"}


def _check_common(name, x: Aval, w: Aval, stride, padding, dilation, groups) -> None:
    nd = _ND[name]
    if x.ndim != nd + 2 or w.ndim != nd + 2:
        sp = "D, H, W" if nd == 3 else "H, W"
        ks = "kD, kH, kW" if nd == 3 else "kH, kW"
        raise op_error(name, f"expects a {nd + 2}-D input (N, C, {sp}) and a {nd + 2}-D weight "
                       f"(O, C/groups, {ks}), got {x} and {w}")
    if x.dtype is not w.dtype or not x.dtype.is_float:
        raise op_error(name, f"input and weight must have the same floating dtype, got {x} "
                       f"and {w}", TypeError)
    if len(stride) != nd or len(dilation) != nd or len(padding) != 2 * nd:
        raise op_error(name, f"stride and dilation take {nd} ints, padding {2 * nd} (low, high "
                       f"per axis), got {stride}, {dilation}, {padding}")
    if min(*stride, *dilation) < 1 or min(padding) < 0 or groups < 1:
        raise op_error(name, f"stride {stride} and dilation {dilation} must be positive, "
                       f"padding {padding} non-negative and groups {groups} positive")


def _conv_out(name, x: Aval, w: Aval, stride, padding, dilation, groups) -> tuple[int, ...]:
    _check_common(name, x, w, stride, padding, dilation, groups)
    c, (o, cg) = x.shape[1], w.shape[:2]
    if c != cg * groups or o % groups:
        raise op_error(name, f"input {x} has {c} channels but weight {w} with groups={groups} "
                       f"expects {cg * groups} (and out_channels divisible by groups)")
    padded = tuple(n + padding[2 * i] + padding[2 * i + 1] for i, n in enumerate(x.shape[2:]))
    outs = tuple(out_size(n, k, s, d) for n, k, s, d in zip(padded, w.shape[2:], stride,
                                                            dilation))
    if min(outs) < 1:
        raise op_error(name, f"kernel {tuple(w.shape[2:])} with dilation {tuple(dilation)} is "
                       f"larger than the padded input {padded} of {x}")
    return outs


def _infer_conv(name, avals, stride, padding, dilation, groups):
    x, w = avals
    outs = _conv_out(name, x, w, stride, padding, dilation, groups)
    return Aval((x.shape[0], w.shape[0]) + outs, x.dtype)


def _infer_input_grad(name, avals, in_hw, stride, padding, dilation, groups):
    g, w = avals
    full = g.ndim == _ND[name] + 2 and w.ndim == g.ndim
    x = Aval((g.shape[0], w.shape[1] * groups) + tuple(in_hw), g.dtype) if full else g
    if full and g.shape[1:] != (w.shape[0],) + _conv_out(name, x, w, stride, padding,
                                                          dilation, groups):
        raise op_error(name, f"cotangent {g} does not match weight {w} and input size {in_hw}")
    _check_common(name, g, w, stride, padding, dilation, groups)
    return x


def _infer_weight_grad(name, avals, kernel, stride, padding, dilation, groups):
    x, g = avals
    nd = _ND[name]
    if x.ndim != nd + 2 or g.ndim != nd + 2:
        raise op_error(name, f"expects {nd + 2}-D input and cotangent, got {x} and {g}")
    w = Aval((g.shape[1], x.shape[1] // groups) + tuple(kernel), x.dtype)
    if g.shape != (x.shape[0], w.shape[0]) + _conv_out(name, x, w, stride, padding, dilation,
                                                       groups):
        raise op_error(name, f"cotangent {g} does not match input {x} and kernel {kernel}")
    return w


def _compute(x):
    """16-bit floats multiply and accumulate in float32 (as matmul does)."""
    return x.astype(np.float32) if x.dtype in dt.HALF_NP else x


def _padded(x, padding):
    if not any(padding):
        return x
    return np.pad(x, ((0, 0), (0, 0)) + tuple(zip(padding[0::2], padding[1::2])))


def _cols(x, kernel, stride, padding, dilation, groups):
    """im2col of x: [N, G, Cg*prod(kernel), prod(out)], and the output's spatial size."""
    c = windows_array(_padded(x, padding), kernel, stride, dilation)
    nd = len(kernel)
    n, ch, outs = c.shape[0], c.shape[1], c.shape[-nd:]
    return c.reshape(n, groups, ch // groups * math.prod(kernel), math.prod(outs)), outs


def _impl_conv(x, w, stride, padding, dilation, groups):
    dtype = x.dtype
    x, w = _compute(x), _compute(w)
    cols, outs = _cols(x, w.shape[2:], stride, padding, dilation, groups)
    wm = w.reshape(groups, w.shape[0] // groups, w[0].size)
    out = np.matmul(wm, cols)                                 # [N, G, Og, L]
    return out.reshape((x.shape[0], w.shape[0]) + tuple(outs)).astype(dtype, copy=False)


def _impl_weight_grad(x, g, kernel, stride, padding, dilation, groups):
    dtype = x.dtype
    x, g = _compute(x), _compute(g)
    cols, _ = _cols(x, kernel, stride, padding, dilation, groups)
    n, o = g.shape[:2]
    gm = g.reshape(n, groups, o // groups, math.prod(g.shape[2:]))
    dw = np.matmul(gm, np.swapaxes(cols, -1, -2)).sum(axis=0)  # [G, Og, K]
    return dw.reshape((o, x.shape[1] // groups) + tuple(kernel)).astype(dtype, copy=False)


def _impl_input_grad(g, w, in_hw, stride, padding, dilation, groups):
    dtype = g.dtype
    g, w = _compute(g), _compute(w)
    n, o, outs = g.shape[0], g.shape[1], g.shape[2:]
    cg, kernel = w.shape[1], w.shape[2:]
    wm = np.swapaxes(w.reshape(groups, o // groups, w[0].size), -1, -2)   # [G, K, Og]
    dcols = np.matmul(wm, g.reshape(n, groups, o // groups, math.prod(outs)))  # [N, G, K, L]
    dcols = dcols.reshape((n, groups * cg) + tuple(kernel) + tuple(outs))
    padded = tuple(h + padding[2 * i] + padding[2 * i + 1] for i, h in enumerate(in_hw))
    out = np.zeros_like(dcols, shape=(n, groups * cg) + padded)
    for tap in itertools.product(*(range(k) for k in kernel)):
        dst = tuple(slice(t * d, t * d + (m - 1) * s + 1, s)
                    for t, d, m, s in zip(tap, dilation, outs, stride))
        out[(Ellipsis,) + dst] += dcols[(slice(None), slice(None)) + tap]
    out = out[(Ellipsis,) + tuple(slice(padding[2 * i], padding[2 * i] + h)
                                  for i, h in enumerate(in_hw))]
    return out.astype(dtype)


def _conv_params(p: dict) -> dict:
    return {k: p[k] for k in _CONV_PARAMS}


def conv_nd(x, w, **p):
    """conv2d or conv3d, by the operands' rank."""
    return bind(P.get(f"conv{len(x.shape) - 2}d"), x, w, **_conv_params(p))


def conv_nd_input_grad(g, w, in_hw, **p):
    return bind(P.get(f"conv{len(g.shape) - 2}d_input_grad"), g, w, in_hw=tuple(in_hw),
                **_conv_params(p))


def conv_nd_weight_grad(x, g, kernel, **p):
    return bind(P.get(f"conv{len(x.shape) - 2}d_weight_grad"), x, g, kernel=tuple(kernel),
                **_conv_params(p))


conv2d, conv2d_input_grad, conv2d_weight_grad = conv_nd, conv_nd_input_grad, conv_nd_weight_grad


def _vjp_conv(g, ins, out, p, need):
    x, w = ins
    return [conv_nd_input_grad(g, w, x.shape[2:], **p) if need[0] else None,
            conv_nd_weight_grad(x, g, w.shape[2:], **p) if need[1] else None]


def _vjp_input_grad(c, ins, out, p, need):
    g, w = ins        # out = conv_input_grad(g, w): linear in each, adjoint of the conv
    return [conv_nd(c, w, **p) if need[0] else None,
            conv_nd_weight_grad(c, g, w.shape[2:], **p) if need[1] else None]


def _vjp_weight_grad(c, ins, out, p, need):
    x, g = ins        # out = conv_weight_grad(x, g)
    return [conv_nd_input_grad(g, c, x.shape[2:], **p) if need[0] else None,
            conv_nd(x, c, **p) if need[1] else None]


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
    """(B, N, C, *S) -> (N, B*C, *S): the batch as channel groups."""
    b, n, c = x.shape[:3]
    rest = tuple(range(3, len(x.shape)))
    return reshape(transpose(x, (1, 0, 2) + rest), (n, b * c) + tuple(x.shape[3:]))


def _from_groups(y, size):
    """(N, B*C, *S) -> (B, N, C, *S)."""
    n, bc = y.shape[:2]
    rest = tuple(range(3, len(y.shape) + 1))
    return transpose(reshape(y, (n, size, bc // size) + tuple(y.shape[2:])), (1, 0, 2) + rest)


def _grouped(p, size):
    return {**_conv_params(p), "groups": p["groups"] * size}


def _batch_conv(prim, ax, args, batched, params):
    x, w = args
    size = ax.size
    if not batched[1]:                       # only the input: more images
        y = conv_nd(_fold_images(x), w, **_conv_params(params))
        return reshape(y, (size, x.shape[1]) + tuple(y.shape[1:])), True
    x = x if batched[0] else to_batched(x, ax)
    y = conv_nd(_as_groups(x), _fold_images(w), **_grouped(params, size))
    return _from_groups(y, size), True


def _batch_input_grad(prim, ax, args, batched, params):
    g, w = args
    size, hw = ax.size, params["in_hw"]
    if not batched[1]:
        y = conv_nd_input_grad(_fold_images(g), w, hw, **_conv_params(params))
        return reshape(y, (size, g.shape[1]) + tuple(y.shape[1:])), True
    g = g if batched[0] else to_batched(g, ax)
    y = conv_nd_input_grad(_as_groups(g), _fold_images(w), hw, **_grouped(params, size))
    return _from_groups(y, size), True


def _batch_weight_grad(prim, ax, args, batched, params):
    x, g = all_batched(args, batched, ax)
    size = ax.size
    y = conv_nd_weight_grad(_as_groups(x), _as_groups(g), params["kernel"],
                            **_grouped(params, size))
    return reshape(y, (size, y.shape[0] // size) + tuple(y.shape[1:])), True


for _n in _NDIMS:
    _c = f"conv{_n}d"
    P.register(Primitive(_c, "other", _infer_conv, _impl_conv, vjp=_vjp_conv,
                         jvp=_bilinear_jvp(_c), saves=_saves,
                         params=_CONV_PARAMS, arity=2,
                         batch=_batch_conv))
    P.register(Primitive(_c + "_input_grad", "other", _infer_input_grad, _impl_input_grad,
                         vjp=_vjp_input_grad, jvp=_bilinear_jvp(_c + "_input_grad"),
                         saves=_saves,
                         params={"in_hw": "ints", **_CONV_PARAMS}, arity=2,
                         batch=_batch_input_grad))
    P.register(Primitive(_c + "_weight_grad", "other", _infer_weight_grad, _impl_weight_grad,
                         vjp=_vjp_weight_grad, jvp=_bilinear_jvp(_c + "_weight_grad"),
                         saves=_saves,
                         params={"kernel": "ints", **_CONV_PARAMS}, arity=2,
                         batch=_batch_weight_grad))


# -- the expansion the code generators see ---------------------------------------------------
def _im2col(x, kernel, p):
    """x [N, C, *S] -> windows [N, C, *kernel, *O] of the zero-padded input."""
    pad = p["padding"]
    if any(pad):
        x = bind(P.pad, x, lo=(0, 0) + tuple(pad[0::2]), hi=(0, 0) + tuple(pad[1::2]),
                 interior=(0,) * len(x.shape))
    return windows(x, kernel, p["stride"], p["dilation"])


def _gemm(a, b):
    """[G, M, K] @ [G, K, P]; a plain 2-D GEMM when there is one group."""
    if a.shape[0] != 1:
        return matmul(a, b)
    m, p = a.shape[1], b.shape[2]
    return reshape(matmul(reshape(a, a.shape[1:]), reshape(b, b.shape[1:])), (1, m, p))


def _cols_kl(x, kernel, p):
    """The im2col of x as [G, K, N*L] (K = C/G * prod(kernel), L the output positions) and
    the output's spatial size. The forward and the weight gradient build it from the same
    ops, so CSE (run by fold_matmuls) leaves one im2col loop for both."""
    n, gr = x.shape[0], p["groups"]
    k = x.shape[1] // gr * math.prod(kernel)
    cols = _im2col(x, kernel, p)
    outs = tuple(cols.shape[-len(kernel):])
    ell = math.prod(outs)
    return reshape(transpose(reshape(cols, (n, gr, k, ell)), (1, 2, 0, 3)), (gr, k, n * ell)), outs


def _expand_conv(x, w, p):
    # one GEMM per group with batch and positions side by side, [Og, K] @ [K, N*L]: the weight
    # is read as it is (no copy per batch element) and the im2col loop writes [G, K, N*L]
    n = x.shape[0]
    o, kernel = w.shape[0], tuple(w.shape[2:])
    gr = p["groups"]
    cols, outs = _cols_kl(x, kernel, p)
    ell = math.prod(outs)
    out = _gemm(reshape(w, (gr, o // gr, cols.shape[1])), cols)     # [G, Og, N*L]
    out = transpose(reshape(out, (gr, o // gr, n, ell)), (2, 0, 1, 3))
    return reshape(out, (n, o) + outs)


def _expand_weight_grad(x, g, p):
    n, c = x.shape[:2]
    gr = p["groups"]
    kernel = tuple(p["kernel"])
    o, ell = g.shape[1], math.prod(g.shape[2:])
    # one GEMM per group contracting over batch and positions together, [Og, N*L] @ [N*L, K],
    # its right operand the forward's [G, K, N*L] im2col with the last two axes swapped (a
    # BLAS transpose flag, no loop writes it)
    cols, _ = _cols_kl(x, kernel, p)
    gm = reshape(transpose(reshape(g, (n, gr, o // gr, ell)), (1, 2, 0, 3)),
                 (gr, o // gr, n * ell))
    if gr == 1:     # 2-D, so that the swapped operand stays a view of the im2col buffer
        dw = matmul(reshape(gm, gm.shape[1:]), transpose(reshape(cols, cols.shape[1:]), (1, 0)))
    else:
        dw = matmul(gm, transpose(cols, (0, 2, 1)))
    return reshape(dw, (o, c // gr) + kernel)


def _expand_input_grad(g, w, p):
    n, o, outs = g.shape[0], g.shape[1], tuple(g.shape[2:])
    cg, kernel = w.shape[1], tuple(w.shape[2:])
    nd, gr, ell = len(kernel), p["groups"], math.prod(outs)
    k = cg * math.prod(kernel)
    wm = transpose(reshape(w, (gr, o // gr, k)), (0, 2, 1))          # [G, K, Og]
    gm = reshape(transpose(reshape(g, (n, gr, o // gr, ell)), (1, 2, 0, 3)),
                 (gr, o // gr, n * ell))
    dcols = reshape(_gemm(wm, gm), (gr, cg) + kernel + (n,) + outs)  # [G, K, N*L]
    perm = (nd + 2, 0, 1) + tuple(range(2, nd + 2)) + tuple(range(nd + 3, 2 * nd + 3))
    dcols = reshape(transpose(dcols, perm), (n, gr * cg) + kernel + outs)
    return col2im(dcols, tuple(p["in_hw"]), p["stride"], p["dilation"],
                  lo=tuple(p["padding"][0::2]))


_EXPAND = {f"conv{n}d{r}": f for n in _NDIMS for r, f in
           zip(_ROLES, (_expand_conv, _expand_input_grad, _expand_weight_grad))}


def expand_convs(g: Graph) -> Graph:
    """A graph without convolutions and their gradient ops (the backends run this before
    fusion); `g` itself when it has none, so the IR dumps keep showing them."""
    out = expand(g, {name: lambda args, params, f=f: f(*args, params)
                     for name, f in _EXPAND.items()})
    # a forward and its gradients expand to the same im2col of x and the same [Og, N*L] rows
    # of the cotangent: merged here, else fusion writes each twice (one loop, two stores)
    return out if out is g else cse(out)
