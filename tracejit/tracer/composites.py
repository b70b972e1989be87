"""Composite ops built from primitives. In eager mode with gradients each runs as one fused op
with one backward node with PyTorch's name (MeanBackward0, SoftmaxBackward0, ...), derived
from this one definition (tracer/fused.py); when traced they inline into primitives, which
fusion then merges."""
from __future__ import annotations

import functools
import math

import numpy as np

from ..ir import dtypes as dt
from ..ir.core import user_location
from .autocast import FP32, atomic, autocast_op
from .autograd import grad as autograd_grad
from .backward_nodes import Node, SavedTensor
from .float_only import float_only, no_bool
from .forward_ad import FWD
from .grad_handles import handle
from .lazy_copies import fresh
from .state import SPECIAL_MODES, STATE, enable_grad
from .tensor_base import SUBCLASSES, TensorBase as Tensor
from . import fused, fused_nograd, ops


class CompositeNode(Node):
    """Backward of a composite that fused.py does not run fused (an argument that is not
    hashable, random numbers inside, a checkpoint recomputing): differentiates the primitives
    it recorded inside."""

    def __init__(self, name, fn, args, kwargs, inner_in, inner_out) -> None:
        super().__init__([a for a in _tensors(args, kwargs)])
        self._name = name
        self.fn = fn
        self.args = [SavedTensor(a) if isinstance(a, Tensor) else a for a in args]
        self.kwargs = {k: SavedTensor(v) if isinstance(v, Tensor) else v
                       for k, v in kwargs.items()}
        self.inner_in, self.inner_out = inner_in, inner_out

    def name(self) -> str:
        return self._name

    def apply(self, grads, create_graph):
        # recomputing reads every input, so each must be unchanged; otherwise the inner graph's
        # own nodes check (they share the inputs' version counters) just what their rules read
        if create_graph:        # (handles: the inner grad must not run the inputs' hooks)
            unpack = (lambda a: (lambda t: handle(t) if t._requires_grad else t)(a.unpack(self))
                      if isinstance(a, SavedTensor) else a)
        else:
            unpack = (lambda a: a.tensor if isinstance(a, SavedTensor) else a)
        args = [unpack(a) for a in self.args]
        kwargs = {k: unpack(v) for k, v in self.kwargs.items()}
        tensors = _tensors(args, kwargs)
        if create_graph:   # recompute on the real inputs so the result is differentiable again
            with enable_grad():
                out = self.fn(*args, **kwargs)
            wrt = [t for t in tensors if t._requires_grad]
        else:
            out = self.inner_out
            wrt = [l for l, t in zip(self.inner_in, tensors) if t._requires_grad]
        gs = iter(autograd_grad([out], wrt, [grads[0]], retain_graph=True,
                                create_graph=create_graph, allow_unused=True))
        return [next(gs) if t._requires_grad else None for t in tensors]

    def release(self) -> None:
        super().release()
        self.args = self.kwargs = self.inner_in = self.inner_out = None


def _own_result(out, ts: list) -> Tensor:
    """A composite's result that is one of its inputs or reads their memory, as a new tensor
    of its own (see lazy_copies.fresh)."""
    if not isinstance(out, Tensor):
        return out
    d = fresh(out._data, [t._data for t in ts])
    return out if d is out._data and all(out is not t for t in ts) else Tensor(d)


def _tensors(args, kwargs) -> list[Tensor]:
    return [a for a in (*args, *kwargs.values()) if isinstance(a, Tensor)]


def _substituted(args, kwargs, subst: dict) -> tuple[tuple, dict]:
    def sub(a):
        return subst.get(id(a), a) if isinstance(a, Tensor) else a
    return tuple(sub(a) for a in args), {k: sub(v) for k, v in kwargs.items()}


def _leaf(a):
    if not isinstance(a, Tensor):
        return a
    leaf = Tensor(a._data, requires_grad=a._requires_grad)
    leaf._version = a._version         # in-place changes to the inputs are still detected
    return leaf


def composite(node_name, keeps_inputs: bool = True, out_vjp=None):
    """Mark `fn` as a composite whose eager backward node is called `node_name` (a string, or a
    function of the call's arguments). A composite is one op to autocast: its inner ops do
    not autocast on their own. keeps_inputs=False: PyTorch's node keeps the op's result, not
    its input, so changing the input in place after the call is legal; the fused node keeps a
    copy of any input its backward reads (as many bytes as torch's saved result), or, given
    out_vjp(y, g) (the gradient of the one tensor input, from the output y and its cotangent
    g, in tracejit ops), the output itself: no copy, and an in-place change of the output
    before backward is an error, as in PyTorch."""
    named = callable(node_name)

    def deco(fn):
        fn = atomic(fn)

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            # (sigmoid(x): one tensor argument, _tensors and any() without their generic walks)
            if not kwargs and len(args) == 1 and type(args[0]) in SUBCLASSES:
                ts = args
                wants = args[0]._requires_grad
            else:
                ts = _tensors(args, kwargs)
                wants = any(t._requires_grad for t in ts)
            if SPECIAL_MODES[0] and (STATE.traces or FWD.levels):
                # tracing: no eager node (captures are inputs); dual tensors: tangents go
                # through the inner ops
                return fn(*args, **kwargs)
            if SPECIAL_MODES[0] and STATE.subst:
                # a checkpoint recomputing: the node must hang off its stand-ins for the tensors
                # it differentiates (the inner ops substitute too late: _leaf cuts the graph
                # at the originals, and a parameter read by F.linear got no gradient)
                args, kwargs = _substituted(args, kwargs, STATE.subst)
                ts = _tensors(args, kwargs)
                wants = any(t._requires_grad for t in ts)
            if not wants or not STATE.grad_enabled:
                if fused_nograd.large(ts):      # one compiled loop if elementwise only
                    out = fused_nograd.run(fn, fn.__name__, args, kwargs)
                    if out is not None:
                        return out
                return _own_result(fn(*args, **kwargs), ts)
            name = node_name(*args, **kwargs) if named else node_name
            out = fused.run(fn, name, args, kwargs, not keeps_inputs, out_vjp)
            if out is not None:          # one fused op, one node (see fused.py)
                return out
            inner_args = [_leaf(a) for a in args]
            inner_kwargs = {k: _leaf(v) for k, v in kwargs.items()}
            out = fn(*inner_args, **inner_kwargs)
            if not out._requires_grad:
                return _own_result(out, ts)
            res = Tensor(fresh(out._data, [t._data for t in ts]))
            res.grad_fn = CompositeNode(name, fn, list(args), kwargs,
                                        _tensors(inner_args, inner_kwargs), out)
            res._requires_grad = True
            return res
        return wrapper
    return deco


def _reduce_name(base):
    return lambda x, axis=None, *a, dim=None, **k: \
        f"{base}Backward0" if (axis if dim is None else dim) is None else f"{base}Backward1"


@composite(_reduce_name("Mean"))
def mean(x, axis=None, keepdims=False, *, dim=None, keepdim=None, dtype=None):
    """The mean; `dtype=` casts first (torch's). Integer and bool tensors raise without a
    float `dtype=`, as torch (their mean has no dtype to be computed in)."""
    x = ops.as_tensor(x)
    if dtype is not None:
        x = ops.cast(x, dtype)
    if not x.dtype.is_float:
        raise TypeError(f"mean: could not infer the output dtype of {ops._fmt(x)}: the input "
                        f"must be floating point, as in torch; pass dtype=tj.float32 or call "
                        f".float() first (at {user_location()})")
    low = x.dtype if x.dtype in dt.HALF else None
    if low is not None:         # torch sums and divides in float32 and rounds once: the
        x = ops.cast(x, dt.f32)  # float16 sum of 40000 twos was inf, so was their mean
    axes = ops._axes(x, axis, dim, "mean")
    n = math.prod(x.shape[a] for a in axes)
    m = ops.div(ops.sum(x, axes, keepdims, keepdim=keepdim), float(n) if n else float("nan"))
    return m if low is None else ops.cast(m, low)


def centered(x, axes: tuple, n: int):
    """x minus its mean over `axes` (n elements each), with every element of a constant row
    exactly 0, as torch's Welford-based var/layer_norm/batch_norm kernels give (see
    centered_mean)."""
    return centered_mean(x, axes, n)[0]


def centered_mean(x, axes: tuple, n: int):
    """(x minus its mean over `axes`, that mean kept over `axes`), n elements per row, with a
    constant row centered to exact zeros. Plain sum(x) / n of a float32 row of three 1000.1s
    is an ulp off, and layer_norm divides that by sqrt(eps): 0.019 where torch gives 0. One
    refinement pass fixes it: m' = m + mean(x - m) (x - m is exact for a constant row, so m'
    is x itself). The correction is a constant to the gradient (its derivative is 0 in exact
    arithmetic). A shift by the row's first element did the same, but that slice let fusion
    recompute a transformer's whole residual stream inside each layer's kernel (kernels that
    grow with depth)."""
    if n == 0:
        m = ops.div(ops.sum(x, axes, True), float("nan"))
        return ops.sub(x, m), m
    m = ops.div(ops.sum(x, axes, True), float(n))
    fix = ops.stop_gradient(ops.div(ops.sum(ops.sub(x, m), axes, True), float(n)))
    m = ops.add(m, fix)
    return ops.sub(x, m), m


@composite("VarBackward0")
def var(x, axis=None, keepdims=False, *, dim=None, keepdim=None, correction=None, unbiased=None,
        ddof=None):
    """Variance; like PyTorch the default is unbiased (correction=1); ddof= as NumPy."""
    x = ops.as_tensor(x)
    float_only("var", x)        # (as torch: std and var have no integer or bool kernels)
    low = x.dtype if x.dtype in dt.HALF else None
    if low is not None:         # in float32 as torch (float16 sums overflowed), rounded once
        x = ops.cast(x, dt.f32)
    corr = 1 if correction is None else correction
    if unbiased is not None:
        corr = 1 if unbiased else 0
    if ddof is not None:
        corr = ddof
    axes = ops._axes(x, axis, dim, "var")
    n = math.prod(x.shape[a] for a in axes)
    d = centered(x, axes, n)
    denom = float(n - corr) if n - corr > 0 else float("nan")
    v = ops.div(ops.sum(ops.mul(d, d), axes, keepdims, keepdim=keepdim), denom)
    return v if low is None else ops.cast(v, low)


def _sigmoid_vjp(y, g):
    """PyTorch's sigmoid_backward, g (1 - y) y, in its order; 16-bit floats in float32 (its
    opmath), rounded once."""
    low = y.dtype in dt.HALF
    if low:
        y32, g = ops.cast(y, dt.f32), ops.cast(g, dt.f32)
    else:
        y32 = y
    gx = ops.mul(ops.mul(g, ops.sub(1.0, y32)), y32)
    return ops.cast(gx, y.dtype) if low else gx


@composite("SigmoidBackward0", keeps_inputs=False, out_vjp=_sigmoid_vjp)
def sigmoid(x):
    x = ops.as_tensor(x)
    if not x.dtype.is_float:          # integers and bools give float32, as PyTorch
        x = ops.cast(x, dt.f32)
    pos = ops.ge(x, 0)
    # z = exp(-|x|) never overflows; -|x| written with `where`, not abs, so that the
    # derivative at 0 is sigmoid'(0) = 1/4 rather than abs's subgradient
    z = ops.exp(ops.where(pos, ops.neg(x), x))
    r = ops.div(1.0, ops.add(z, 1.0))
    return ops.where(pos, r, ops.mul(z, r))


def _relu_vjp(y, g):
    """PyTorch's threshold_backward on the saved result: g where y > 0 (and where y is NaN)."""
    return ops.where(ops.le(y, 0), 0, g)


@composite("ReluBackward0", out_vjp=_relu_vjp)
def relu(x):
    """max(x, 0) with relu'(0) = 0; NaN stays NaN, with relu'(NaN) = 1 (as PyTorch)."""
    x = ops.as_tensor(x)
    no_bool("relu", x)
    return ops.where(ops.le(x, 0), 0, x)


def log1p_value(s):
    """log(1 + s) of a value without gradient, exact for tiny s: with u = 1 + s rounded,
    log(u) * s / (u - 1) (s where u == 1). Shared with tracer/math_ops.log1p."""
    u = ops.add(s, 1.0)
    one = ops.eq(u, 1.0)
    return ops.where(one, s, ops.mul(ops.log(u), ops.div(s, ops.where(one, 1.0, ops.sub(u, 1.0)))))


def _log1p01(e):
    """log(1 + e) for e in [0, 1] (log1p_value), with the gradient of log(1 + e): its term
    t - stop_gradient(t) is exactly 0 forward."""
    v = log1p_value(ops.stop_gradient(e))
    t = ops.log(ops.add(e, 1.0))
    return ops.add(v, ops.sub(t, ops.stop_gradient(t)))


@autocast_op(FP32)
@composite("SoftplusBackward0")
def softplus(x, beta: float = 1.0, threshold: float = 20.0):
    """log(1 + exp(beta x)) / beta, and x itself where beta x > threshold (as torch)."""
    x = ops.as_tensor(x)
    float_only("softplus", x)
    z = ops.mul(x, beta) if beta != 1 else x
    pos = ops.gt(z, 0)
    # each branch sees a clamped input (no overflow, finite gradients) and is smooth at 0
    zp = ops.where(pos, z, 0.0)
    zn = ops.where(pos, 0.0, z)
    # (log1p, not log(1 + e): that rounds exp(z) < 6e-8 away, softplus(-25) was 0, not 1.4e-11)
    up = ops.add(zp, _log1p01(ops.exp(ops.neg(zp))))
    down = _log1p01(ops.exp(zn))
    sp = ops.where(pos, up, down)
    if beta != 1:
        sp = ops.div(sp, beta)
    return ops.where(ops.gt(z, threshold), x, sp)


@composite("GeluBackward0")
def gelu(x, approximate: str = "none"):
    """GELU: exact, x * Phi(x) through erf (PyTorch's default), or approximate='tanh'."""
    if approximate not in ("none", "tanh"):
        raise ops._err("gelu", f"approximate must be 'none' or 'tanh', got {approximate!r}")
    x = ops.as_tensor(x)
    float_only("gelu", x)
    if approximate == "none":
        return ops.mul(ops.mul(x, 0.5), ops.add(ops.erf(ops.mul(x, math.sqrt(0.5))), 1.0))
    inner = ops.mul(ops.add(x, ops.mul(ops.mul(ops.mul(x, x), x), 0.044715)),
                    math.sqrt(2.0 / math.pi))
    return ops.mul(ops.mul(x, 0.5), ops.add(ops.tanh(inner), 1.0))


def _finite_or_zero(m):
    return ops.where(ops.eq(ops.sub(m, m), 0), m, 0)      # inf - inf and nan are not 0


def _row_shift(x, axes, inf_rows_nan: bool = False):
    """The row maximum that keeps exp() from overflowing; 0 for empty rows, which have none
    (their softmax is empty and their logsumexp -inf, as torch). `inf_rows_nan` (softmax,
    log_softmax): a maximum of +inf is kept, so that row comes out all NaN as torch's
    (x - inf: -inf or NaN); else 0 for any infinite or NaN maximum (logsumexp's inf)."""
    if any(x.shape[a] == 0 for a in axes):
        return 0.0
    m = ops.stop_gradient(ops.amax(x, axes, True))
    if inf_rows_nan:
        return ops.where(ops.eq(m, float("-inf")), 0, m)
    return _finite_or_zero(m)


@autocast_op(FP32)
@composite("LogsumexpBackward0")
def logsumexp(x, axis=None, keepdims=False, *, dim=None, keepdim=None):
    x = ops.as_tensor(x)
    if not x.dtype.is_float:
        x = ops.cast(x, dt.f32)
    axes = ops._axes(x, axis, dim, "logsumexp")
    m = _row_shift(x, axes)
    s = ops.log(ops.sum(ops.exp(ops.sub(x, m)), axes, True))
    r = ops.add(s, m)
    return r if ops._kd(keepdims, keepdim) else ops.squeeze(r, axes) if axes else r


@autocast_op(FP32)
# keeps_inputs=False: PyTorch keeps the result only; the fused backward keeps a copy of the
# input where the cut saves it (a size-0 input, or a 16-bit input with dtype=float32)
@composite("SoftmaxBackward0", keeps_inputs=False)
def softmax(x, axis: int = -1, *, dim=None, dtype=None):
    """Softmax over an axis; `dtype` casts the input first (as torch)."""
    x = ops.as_tensor(x) if dtype is None else ops.cast(x, dtype)
    float_only("softmax", x)
    axes = ops._axes(x, axis, dim, "softmax")
    e = ops.exp(ops.sub(x, _row_shift(x, axes, inf_rows_nan=True)))
    # one division per row, a multiply per element
    return ops.mul(e, ops.div(1.0, ops.sum(e, axes, True)))


@autocast_op(FP32)
@composite("LogSoftmaxBackward0", keeps_inputs=False)   # (as softmax)
def log_softmax(x, axis: int = -1, *, dim=None, dtype=None):
    x = ops.as_tensor(x) if dtype is None else ops.cast(x, dtype)
    float_only("log_softmax", x)
    axes = ops._axes(x, axis, dim, "log_softmax")
    # (x - m) - log(sum(exp(x - m))): a row holding +inf is all NaN, as torch's
    s = ops.sub(x, _row_shift(x, axes, inf_rows_nan=True))
    return ops.sub(s, ops.log(ops.sum(ops.exp(s), axes, True)))


@autocast_op(FP32)
@composite("NativeLayerNormBackward0")
def layer_norm(x, normalized_shape=None, weight=None, bias=None, eps: float = 1e-5):
    """Normalize over the trailing `normalized_shape` dims (default: the last one)."""
    x = ops.as_tensor(x)
    float_only("layer_norm", x)
    if normalized_shape is None:
        normalized_shape = x.shape[-1:]
    if isinstance(normalized_shape, int):
        normalized_shape = (normalized_shape,)
    k = len(normalized_shape)
    if tuple(x.shape[x.ndim - k:]) != tuple(normalized_shape):
        raise ops._err("layer_norm", f"normalized_shape {list(normalized_shape)} does not match "
                       f"the trailing dims of {ops._fmt(x)}")
    axes = tuple(range(x.ndim - k, x.ndim))
    n = float(math.prod(normalized_shape))
    low = x.dtype if x.dtype in dt.HALF else None
    if low is not None:
        # torch's kernel computes 16-bit inputs in float32 and rounds once; in float16 the
        # gradient of 1/sqrt(v + eps) overflowed where v is 0 (one element: NaN, torch 0)
        x = ops.cast(x, dt.f32)
        weight = None if weight is None else ops.cast(ops.as_tensor(weight), dt.f32)
        bias = None if bias is None else ops.cast(ops.as_tensor(bias), dt.f32)
    d = centered(x, axes, int(n))
    v = ops.div(ops.sum(ops.mul(d, d), axes, True), n)
    y = ops.mul(d, ops.div(1.0, ops.sqrt(ops.add(v, eps))))   # a division per row only
    if weight is not None:
        y = ops.mul(y, weight)
    if bias is not None:
        y = ops.add(y, bias)
    return y if low is None else ops.cast(y, low)


def _reduce(loss, reduction: str, op: str):
    if reduction == "mean":
        return mean(loss)
    if reduction == "sum":
        return ops.sum(loss)
    if reduction == "none":
        return loss
    raise ValueError(f"{op}: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


@autocast_op(FP32)
@composite("MseLossBackward0")
def mse_loss(input, target, reduction: str = "mean"):    # noqa: A002
    d = ops.sub(input, target)
    return _reduce(ops.mul(d, d), reduction, "mse_loss")


mse = mse_loss
