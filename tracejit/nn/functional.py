"""`tracejit.nn.functional` (import it as F): torch.nn.functional's names, signatures and
defaults over tracejit ops. Each works eagerly, inside @tj.compile and under tj.grad."""
from __future__ import annotations

import math
import warnings

import numpy as np

from ..ir import dtypes as dt
from ..tracer import composites as C
from ..tracer import checks as _checks, ops
from ..tracer.autocast import FP32, LOWER, STATE as _autocast_state, autocast_op
from ..tracer.composites import composite, log_softmax as _log_softmax, softmax as _softmax
from ..tracer.conv import (adaptive_avg_pool2d, adaptive_avg_pool3d,  # noqa: F401
                           avg_pool2d, avg_pool3d, batch_norm, conv2d, conv3d, max_pool2d,
                           max_pool3d)
from ..tracer.losses import _class_targets, _legacy_reduction, cross_entropy  # noqa: F401
from ..tracer.float_only import float_only, no_bool
from ..tracer.inplace import inplace as _inplace
from ..tracer.math_ops import expm1 as _expm1
from ..tracer.norms import vector_norm as _vector_norm
from ..tracer.masking import one_hot  # noqa: F401  (tj.one_hot: iota classes, no constant)
from ..tracer.node_names import rename
from ..tracer.rng import dropout as _dropout
from ..tracer.tensor import Tensor
from .functional_1d import (adaptive_avg_pool1d, avg_pool1d, conv1d,  # noqa: F401
                            group_norm, max_pool1d)
from .functional_activations import (celu, dropout1d, dropout2d, glu,  # noqa: F401
                                     hardsigmoid, hardswish, prelu, selu, softsign,
                                     tanhshrink, threshold)
from .interpolate import interpolate, upsample  # noqa: F401
from .functional_grid import affine_grid, grid_sample  # noqa: F401
from .functional_conv_t import (conv_transpose1d, conv_transpose2d,  # noqa: F401
                                conv_transpose3d, fold, unfold)
from .functional_norm_more import instance_norm, pixel_shuffle, pixel_unshuffle  # noqa: F401
from .local_norm_pool import local_response_norm, lp_pool1d, lp_pool2d  # noqa: F401
from .adaptive_max import (adaptive_max_pool1d, adaptive_max_pool2d,  # noqa: F401
                           adaptive_max_pool3d)
from .functional_extra import *  # noqa: F401,F403  (channel_shuffle, losses, ...)
from .functional_extra import __all__ as _extra_all
from .functional_losses import (_reduce, binary_cross_entropy, cosine_similarity,  # noqa: F401
                                huber_loss, kl_div, smooth_l1_loss)
from .functional_ctc import ctc_loss  # noqa: F401

__all__ = ["linear", "embedding", "layer_norm", "rms_norm", "dropout", "gelu", "relu", "relu6",
           "leaky_relu", "elu", "silu", "mish", "softplus", "hardtanh", "tanh", "sigmoid",
           "logsigmoid", "softmax", "log_softmax", "cross_entropy", "nll_loss", "mse_loss",
           "l1_loss", "binary_cross_entropy_with_logits", "one_hot", "pad", "normalize",
           "scaled_dot_product_attention", "conv2d", "max_pool2d", "avg_pool2d",
           "adaptive_avg_pool2d", "batch_norm", "conv1d", "max_pool1d", "avg_pool1d",
           "adaptive_avg_pool1d", "group_norm", "binary_cross_entropy", "smooth_l1_loss",
           "huber_loss", "kl_div", "cosine_similarity", "softmin", "celu", "dropout1d",
           "dropout2d", "glu", "hardsigmoid", "hardswish", "prelu", "selu", "softsign",
           "tanhshrink", "threshold", "interpolate", "upsample", "conv_transpose1d",
           "conv_transpose2d", "fold", "unfold", "instance_norm", "pixel_shuffle",
           "pixel_unshuffle", "adaptive_max_pool1d", "adaptive_max_pool2d", "conv3d",
           "max_pool3d", "avg_pool3d", "adaptive_avg_pool3d", "conv_transpose3d",
           "affine_grid", "grid_sample", "adaptive_max_pool3d", "local_response_norm",
           "lp_pool1d", "lp_pool2d", "ctc_loss"] + _extra_all


def _t(x) -> Tensor:
    return x if isinstance(x, Tensor) else ops.as_tensor(x)


def _maybe_inplace(fn, x, inplace: bool, name: str) -> Tensor:
    """fn(x); with inplace=True the result is also written into x's own storage (a real
    in-place update: version bump and autograd history, as torch's relu_ and friends)."""
    return _inplace(_t(x), fn, name) if inplace else fn(x)


# -- linear layers ---------------------------------------------------------------------------
@autocast_op(LOWER)
def linear(input: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:  # noqa: A002
    """input @ weight.T + bias, with weight [out_features, in_features]."""
    x = _t(input)
    if weight.ndim not in (1, 2):
        raise ops._err("linear", f"weight must be 1-D or 2-D, got {ops._fmt(weight)}")
    if x.ndim == 0 or x.shape[-1] != weight.shape[-1]:
        raise ops._err("linear", f"input {ops._fmt(x)} does not match weight "
                       f"{ops._fmt(weight)}: the last dims must agree (in_features)")
    return _fused_linear(x, weight, bias)


def _linear_name(x, weight, bias) -> str:
    # the last op torch records: addmm/mm for a matrix input, a view of them otherwise
    if x.ndim == 2 and weight.ndim == 2:
        return "MmBackward0" if bias is None else "AddmmBackward0"
    return "UnsafeViewBackward0" if bias is None else "ViewBackward0"


@composite(_linear_name)
def _fused_linear(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """One op with one backward node eagerly (tracer/fused.py); its compiled plan computes a
    batched input's weight gradient as one GEMM over every row."""
    y = ops.matmul(x, ops.swapaxes(weight, -1, -2) if weight.ndim == 2 else weight)
    return y if bias is None else ops.add(y, bias)


def embedding(input, weight: Tensor, padding_idx: int | None = None,   # noqa: A002
              max_norm: float | None = None, norm_type: float = 2.0,
              scale_grad_by_freq: bool = False, sparse: bool = False) -> Tensor:
    """Rows of `weight` picked by integer indices; the padding row receives no gradient."""
    if max_norm is not None or scale_grad_by_freq:
        raise NotImplementedError("F.embedding: max_norm= and scale_grad_by_freq= are not "
                                  "supported")
    idx = _t(input)
    if not idx.dtype.is_int:
        raise ops._err("embedding", f"indices must be an integer tensor, got {ops._fmt(idx)}",
                       TypeError)
    if weight.ndim != 2:
        raise ops._err("embedding", f"weight must be 2-D, got {ops._fmt(weight)}")
    _checks.rows_in_range(idx, weight.shape[0], "embedding",
                          f"num_embeddings {weight.shape[0]}")
    out = weight[idx]
    if padding_idx is not None:
        n = weight.shape[0]
        if not -n <= padding_idx < n:
            raise ops._err("embedding", f"padding_idx {padding_idx} must be within "
                           f"num_embeddings ({n})")
        pad_at = ops.unsqueeze(ops.eq(idx, padding_idx % n), -1)
        # same values; lookups of the padding row pass no gradient to it (as torch)
        out = ops.where(pad_at, ops.stop_gradient(out), out)
    return rename(out, "EmbeddingBackward0", weight)


# -- normalization ---------------------------------------------------------------------------
def layer_norm(input: Tensor, normalized_shape, weight: Tensor | None = None,  # noqa: A002
               bias: Tensor | None = None, eps: float = 1e-5) -> Tensor:
    return C.layer_norm(input, tuple(_shape_arg(normalized_shape)), weight, bias, eps)


def _shape_arg(s) -> tuple[int, ...]:
    return (int(s),) if isinstance(s, (int, np.integer)) else tuple(int(v) for v in s)


def rms_norm(input: Tensor, normalized_shape, weight: Tensor | None = None,  # noqa: A002
             eps: float | None = None) -> Tensor:
    """x / sqrt(mean(x**2) + eps) over the trailing dims; eps None -> the dtype's epsilon."""
    x = _t(input)
    float_only("rms_norm", x)
    shape = _shape_arg(normalized_shape)
    k = len(shape)
    if tuple(x.shape[x.ndim - k:]) != shape:
        raise ops._err("rms_norm", f"normalized_shape {list(shape)} does not match the "
                       f"trailing dims of {ops._fmt(x)}")
    if eps is None:
        eps = float(np.finfo(x.dtype.np).eps) if x.dtype in (dt.f32, dt.f64) else \
            float(np.finfo(np.float32).eps)
    axes = tuple(range(x.ndim - k, x.ndim))
    ms = C.mean(ops.mul(x, x), axes, True)
    y = ops.mul(x, ops.div(1.0, ops.sqrt(ops.add(ms, eps))))
    return y if weight is None else ops.mul(y, weight)


@autocast_op(FP32)
def normalize(input: Tensor, p: float = 2.0, dim: int = 1, eps: float = 1e-12,  # noqa: A002
              out=None) -> Tensor:
    """x / max(||x||_p, eps) along dim (torch's formula)."""
    if out is not None:
        raise NotImplementedError("F.normalize: out= is not supported")
    x = _t(input)
    # as torch: x / input.norm(p, dim, keepdim=True).clamp_min(eps), for every p (inf, -inf
    # and 0 included); vector_norm gives a zero norm gradient 0
    norm = _vector_norm(x, p, dim, True)
    return ops.div(x, ops.maximum(norm, ops.as_tensor(eps, norm.dtype, like=norm)))


# -- dropout and activations ---------------------------------------------------------------
def dropout(input: Tensor, p: float = 0.5, training: bool = True,  # noqa: A002
            inplace: bool = False) -> Tensor:
    return _maybe_inplace(lambda x: _dropout(x, p, training), input, inplace and training,
                          "dropout_")


def gelu(input: Tensor, approximate: str = "none") -> Tensor:  # noqa: A002
    """torch's default is the exact GELU (approximate='none'), x * Phi(x)."""
    if approximate not in ("none", "tanh"):
        raise ValueError(f"F.gelu: approximate must be 'none' or 'tanh', got {approximate!r}")
    return C.gelu(input, approximate=approximate)


def relu(input: Tensor, inplace: bool = False) -> Tensor:  # noqa: A002
    return _maybe_inplace(C.relu, input, inplace, "relu_")


def hardtanh(input: Tensor, min_val: float = -1.0, max_val: float = 1.0,  # noqa: A002
             inplace: bool = False) -> Tensor:
    return _maybe_inplace(lambda x: _hardtanh(x, min_val, max_val), input, inplace, "hardtanh_")


@composite("HardtanhBackward0")
def _hardtanh(x: Tensor, min_val: float, max_val: float) -> Tensor:
    # torch's derivative is 0 at the bounds themselves (clip would pass it there)
    x = _t(x)
    no_bool("hardtanh", x)
    if x.dtype.is_int:          # torch: integer bounds (truncated), an integer result
        min_val, max_val = int(min_val), int(max_val)
    return ops.where(ops.le(x, min_val), min_val, ops.where(ops.ge(x, max_val), max_val, x))


def relu6(input: Tensor, inplace: bool = False) -> Tensor:  # noqa: A002
    return hardtanh(input, 0.0, 6.0, inplace)


def leaky_relu(input: Tensor, negative_slope: float = 0.01,  # noqa: A002
               inplace: bool = False) -> Tensor:
    return _maybe_inplace(lambda x: _leaky_relu(x, negative_slope), input, inplace,
                          "leaky_relu_")


@composite("LeakyReluBackward0")
def _leaky_relu(x: Tensor, negative_slope: float) -> Tensor:
    x = _t(x)
    float_only("leaky_relu", x)
    return ops.where(ops.gt(x, 0), x, ops.mul(x, negative_slope))


def elu(input: Tensor, alpha: float = 1.0, inplace: bool = False) -> Tensor:  # noqa: A002
    return _maybe_inplace(lambda x: _elu(x, alpha), input, inplace, "elu_")


@composite("EluBackward0")
def _elu(x: Tensor, alpha: float) -> Tensor:
    x = _t(x)
    float_only("elu", x)
    # exp of the clamped input: the branch not taken must not overflow into a NaN gradient
    pos = ops.gt(x, 0)
    # (expm1, not exp - 1: that cancels for small negative x, elu(-3e-7) was -3.6e-7)
    neg = ops.mul(_expm1(ops.where(pos, 0.0, x)), alpha)
    return ops.where(pos, x, neg)


def silu(input: Tensor, inplace: bool = False) -> Tensor:  # noqa: A002
    return _maybe_inplace(_silu, input, inplace, "silu_")


@composite("SiluBackward0")
def _silu(x: Tensor) -> Tensor:
    x = _t(x)
    float_only("silu", x)
    return ops.mul(x, C.sigmoid(x))


def mish(input: Tensor, inplace: bool = False) -> Tensor:  # noqa: A002
    return _maybe_inplace(_mish, input, inplace, "mish_")


@composite("MishBackward0")
def _mish(x: Tensor) -> Tensor:
    x = _t(x)
    float_only("mish", x)
    return ops.mul(x, ops.tanh(C.softplus(x)))


def softplus(input: Tensor, beta: float = 1.0, threshold: float = 20.0) -> Tensor:  # noqa: A002
    return C.softplus(input, beta, threshold)


def logsigmoid(input: Tensor) -> Tensor:  # noqa: A002
    x = _t(input)
    float_only("logsigmoid", x)
    # (no threshold: softplus's returns x itself from 20 on, logsigmoid(-25) lost its -1.4e-11)
    return ops.neg(C.softplus(ops.neg(x), 1.0, np.inf))


def tanh(input: Tensor) -> Tensor:  # noqa: A002
    return ops.tanh(input)


def sigmoid(input: Tensor) -> Tensor:  # noqa: A002
    return C.sigmoid(input)


def _softmax_dim(x: Tensor, dim, name: str) -> int:
    if dim is not None:
        return dim
    warnings.warn(f"Implicit dimension choice for {name} has been deprecated. Change the call "
                  f"to include dim=X as an argument.", stacklevel=3)
    return 0 if x.ndim in (0, 1, 3) else 1


def softmax(input: Tensor, dim: int | None = None, _stacklevel: int = 3,  # noqa: A002
            dtype=None) -> Tensor:
    x = _t(input)
    return _softmax(x, _softmax_dim(x, dim, "softmax"), dtype=dtype)


def softmin(input: Tensor, dim: int | None = None, _stacklevel: int = 3,  # noqa: A002
            dtype=None) -> Tensor:
    x = _t(input)
    if dtype is None:
        float_only("softmin", x)
    return _softmax(ops.neg(x), _softmax_dim(x, dim, "softmin"), dtype=dtype)


def log_softmax(input: Tensor, dim: int | None = None, _stacklevel: int = 3,  # noqa: A002
                dtype=None) -> Tensor:
    x = _t(input)
    return _log_softmax(x, _softmax_dim(x, dim, "log_softmax"), dtype=dtype)


# -- losses ----------------------------------------------------------------------------------
@composite("NllLossBackward0")
def _nll(x: Tensor, target: Tensor, weight, ignore_index: int, reduction: str) -> Tensor:
    cdim = 0 if x.ndim == 1 else 1
    wb = None
    if weight is not None:
        w = ops.as_tensor(weight, x.dtype, like=x)
        if w.shape != (x.shape[cdim],):
            raise ops._err("nll_loss", f"weight {ops._fmt(w)} must have one entry per class "
                           f"({x.shape[cdim]}) of {ops._fmt(x)}")
        shape = [1] * x.ndim
        shape[cdim] = x.shape[cdim]
        wb = ops.reshape(w, tuple(shape))
    return _class_targets(x, x, target, wb, cdim, ignore_index, reduction, 0.0)


@autocast_op(FP32)
def nll_loss(input: Tensor, target: Tensor, weight: Tensor | None = None,  # noqa: A002
             size_average=None, ignore_index: int = -100, reduce=None,
             reduction: str = "mean") -> Tensor:
    """Negative log-likelihood of class indices, input being log-probabilities [N, C, ...]
    or [C]; 'mean' averages over non-ignored targets weighted by weight[target]."""
    reduction = _legacy_reduction(size_average, reduce, reduction)
    if reduction not in ("mean", "sum", "none"):
        raise ops._err("nll_loss", f"reduction must be 'mean', 'sum' or 'none', got "
                       f"{reduction!r}")
    x = _t(input)
    if x.ndim == 0 or not x.dtype.is_float:
        raise ops._err("nll_loss", f"input must be floating-point log-probabilities with a "
                       f"class dimension, got {ops._fmt(x)}", TypeError)
    return _nll(x, ops.as_tensor(target, like=x), weight, ignore_index, reduction)


def mse_loss(input: Tensor, target: Tensor, size_average=None, reduce=None,  # noqa: A002
             reduction: str = "mean") -> Tensor:
    reduction = _legacy_reduction(size_average, reduce, reduction)
    x, y = _t(input), _t(target)
    if x.shape != y.shape:
        warnings.warn(f"Using a target size ({list(y.shape)}) that is different to the input "
                      f"size ({list(x.shape)}). This will likely lead to incorrect results due "
                      f"to broadcasting. Please ensure they have the same size.", stacklevel=2)
    return C.mse_loss(x, y, reduction=reduction)


@autocast_op(FP32)
def l1_loss(input: Tensor, target: Tensor, size_average=None, reduce=None,  # noqa: A002
            reduction: str = "mean") -> Tensor:
    reduction = _legacy_reduction(size_average, reduce, reduction)
    return _reduce(ops.abs(ops.sub(input, target)), reduction, "l1_loss")


@autocast_op(FP32)
def binary_cross_entropy_with_logits(input: Tensor, target: Tensor,  # noqa: A002
                                     weight: Tensor | None = None, size_average=None,
                                     reduce=None, reduction: str = "mean",
                                     pos_weight: Tensor | None = None) -> Tensor:
    """(1 - y) x + (1 + (pw - 1) y) softplus(-x), torch's stable form."""
    reduction = _legacy_reduction(size_average, reduce, reduction)
    x, y = _t(input), _t(target)
    if x.shape != y.shape:
        raise ops._err("binary_cross_entropy_with_logits", f"target size {list(y.shape)} must "
                       f"be the same as input size {list(x.shape)}")
    sp = C.softplus(ops.neg(x))
    if pos_weight is None:
        loss = ops.add(ops.mul(ops.sub(1.0, y), x), sp)
    else:
        coef = ops.add(ops.mul(ops.sub(pos_weight, 1.0), y), 1.0)
        loss = ops.add(ops.mul(ops.sub(1.0, y), x), ops.mul(coef, sp))
    if weight is not None:
        loss = ops.mul(loss, weight)
    if y.dtype.is_float and loss.dtype is not y.dtype and loss.dtype.is_float:
        # torch computes in place into `1 - target`: the loss has the target's dtype (a
        # float64 input with a float32 target gives float32)
        loss = ops.cast(loss, y.dtype)
    return rename(_reduce(loss, reduction, "binary_cross_entropy_with_logits"),
                  "BinaryCrossEntropyWithLogitsBackward0")


# -- one_hot, pad ----------------------------------------------------------------------------
def pad(input: Tensor, pad: tuple[int, ...], mode: str = "constant",  # noqa: A002
        value: float | None = None) -> Tensor:
    """torch's spelling: `pad` lists (left, right) for the last dim, then the one before, ...
    mode: 'constant' (value, default 0), 'reflect', 'replicate' or 'circular'."""
    x = _t(input)
    pad = tuple(int(p) for p in pad)
    if len(pad) % 2 or len(pad) // 2 > x.ndim:
        raise ops._err("pad", f"padding {list(pad)} must have an even length of at most "
                       f"2 * ndim for {ops._fmt(x)}")
    k = len(pad) // 2
    widths = [(0, 0)] * (x.ndim - k) + [(pad[2 * i], pad[2 * i + 1]) for i in range(k)][::-1]
    if mode == "constant":
        return ops.pad(x, widths, 0.0 if value is None else value)
    if value not in (None, 0):
        raise ops._err("pad", f"padding mode {mode!r} doesn't take in value argument")
    if mode not in ("reflect", "replicate", "circular"):
        raise ops._err("pad", f"mode must be 'constant', 'reflect', 'replicate' or 'circular', "
                       f"got {mode!r}", NotImplementedError)
    x0 = x
    for axis, (lo, hi) in enumerate(widths):
        if lo == 0 and hi == 0:
            continue
        n = x.shape[axis]
        if mode == "reflect" and (lo >= n or hi >= n):
            raise ops._err("pad", f"padding ({lo}, {hi}) should be less than the input size "
                           f"{n} of dim {axis} in reflect mode")
        kept = n - max(-lo, 0) - max(-hi, 0)        # what is left after negative pads crop
        if mode == "circular" and (lo > kept or hi > kept):
            raise ops._err("pad", f"padding ({lo}, {hi}) can wrap around at most once (input "
                           f"size {n} of dim {axis}, {kept} after cropping)")
        if n == 0:
            raise ops._err("pad", f"cannot pad an empty dim {axis} in {mode} mode")
        pos = np.arange(-lo, n + hi)
        if mode == "replicate":
            src = np.clip(pos, 0, n - 1)
        elif mode == "circular":
            # torch crops the negative sides first and wraps within what is left
            c0, m = max(-lo, 0), n - max(-lo, 0) - max(-hi, 0)
            src = c0 + np.arange(-max(lo, 0), m + max(hi, 0)) % max(m, 1)
        else:
            period = 2 * (n - 1) if n > 1 else 1
            m = np.abs(pos) % period
            src = np.where(m < n, m, period - m)
        key = (slice(None),) * axis + (ops.as_tensor(src.astype(np.int64), like=x, const=True),)
        x = x[key]
    if x is x0:
        x = x.clone()               # (all widths 0: still a new tensor, as torch, not x)
    if mode != "circular":          # (torch's circular padding ends in a CopySlices)
        rename(x, f"{'Reflection' if mode == 'reflect' else 'Replication'}Pad{k}DBackward0", input)
    return x


# -- attention -------------------------------------------------------------------------------
def scaled_dot_product_attention(query: Tensor, key: Tensor, value: Tensor,
                                 attn_mask: Tensor | None = None, dropout_p: float = 0.0,
                                 is_causal: bool = False, scale: float | None = None,
                                 enable_gqa: bool = False) -> Tensor:
    """softmax(q k^T * scale + mask) v over the last two dims (torch's math reference). A bool
    mask is True where attention is allowed; a float mask is added. Rows with every position
    masked give 0 (as torch's math path)."""
    q, k, v = _t(query), _t(key), _t(value)
    if q.ndim < 2 or k.ndim < 2 or v.ndim < 2:
        raise ops._err("scaled_dot_product_attention", f"query, key and value need at least 2 "
                       f"dims, got {ops._fmt(q)}, {ops._fmt(k)}, {ops._fmt(v)}")
    if is_causal and attn_mask is not None:
        raise ops._err("scaled_dot_product_attention", "Explicit attn_mask should not be set "
                       "when is_causal=True", RuntimeError)
    if enable_gqa and q.ndim >= 3 and k.shape[-3] != q.shape[-3]:
        k, v = _repeat_heads(k, q.shape[-3]), _repeat_heads(v, q.shape[-3])
    if q.shape[-1] != k.shape[-1]:
        raise ops._err("scaled_dot_product_attention", f"query {ops._fmt(q)} and key "
                       f"{ops._fmt(k)} must have the same last dim")
    factor = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    mask = None if attn_mask is None else _t(attn_mask)
    if dropout_p == 0.0 and not _autocast_state.active:
        # one op with one backward node, as torch's fused attention (see tracer/fused.py);
        # under autocast its matmuls and softmax keep their own precisions, op by op
        return _fused_attention(q, k, v, mask, is_causal, factor)
    return _attention(q, k, v, mask, is_causal, factor, dropout_p)


def _attention(q: Tensor, k: Tensor, v: Tensor, attn_mask: Tensor | None, is_causal: bool,
               factor: float, dropout_p: float = 0.0) -> Tensor:
    """softmax(q k^T * factor + mask) v: torch's math reference."""
    L, S = q.shape[-2], k.shape[-2]
    scores = ops.mul(ops.matmul(q, ops.swapaxes(k, -2, -1)), factor)
    allowed = None
    if is_causal:
        allowed = ops.as_tensor(np.tril(np.ones((L, S), bool)), like=scores, const=True)
    elif attn_mask is not None:
        m = _t(attn_mask)
        if m.dtype is dt.bool_:
            allowed = m
        else:
            scores = ops.add(scores, m)
    if allowed is not None:
        scores = ops.where(allowed, scores, float("-inf"))
    attn = _softmax(scores, -1)
    if attn_mask is not None:
        # a row with no allowed position: 0, not softmax's 0/0 (torch's _safe_softmax); a
        # causal mask always allows the first position
        any_ok = ops.ne(ops.amax(ops.stop_gradient(scores), -1, True), float("-inf"))
        attn = ops.where(any_ok, attn, 0.0)
    if dropout_p > 0.0:
        attn = _dropout(attn, dropout_p, True)
    return ops.matmul(attn, v)


def _attention_name(q, *a, **k) -> str:
    # torch's fused kernels: flash attention on the CPU, memory-efficient attention for
    # float32/float64 on CUDA (flash there only takes 16-bit floats)
    if q.device.type == "cpu":
        return "ScaledDotProductFlashAttentionForCpuBackward0"
    return "ScaledDotProductFlashAttentionBackward0" if q.dtype in dt.HALF else \
        "ScaledDotProductEfficientAttentionBackward0"


_fused_attention = composite(_attention_name)(_attention)


def _repeat_heads(t: Tensor, heads: int) -> Tensor:
    h = t.shape[-3]
    if heads % h:
        raise ops._err("scaled_dot_product_attention", f"enable_gqa: {heads} query heads are "
                       f"not a multiple of {h} key/value heads")
    rep = heads // h
    e = ops.unsqueeze(t, -3)
    e = ops.broadcast_to(e, t.shape[:-2] + (rep,) + t.shape[-2:])
    return ops.reshape(e, t.shape[:-3] + (heads,) + t.shape[-2:])
