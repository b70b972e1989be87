"""Which PyTorch OpInfo (torch.testing._internal.common_methods_invocations.op_db) is which
tracejit op, with the adapters where the spellings differ, and the explicit rules for samples
that use a feature tracejit does not have at all. Nothing here may hide a wrong value: a rule
drops a sample only for a feature tracejit rejects by design, each with its reason."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import tracejit as tj


@dataclass
class Entry:
    fn: Callable                                   # called as fn(input, *args, **kwargs)
    # sample -> reason why tracejit cannot take it at all, or None (torch-side sample objects)
    unsupported: Callable[[Any], str | None] = lambda s: None
    # sample -> reason why it cannot run inside @tj.compile by design, or None
    not_compilable: Callable[[Any], str | None] = lambda s: None
    int_ok: bool = True                            # tracejit takes integer inputs for this op
    grad: bool = True                              # compare gradients (a differentiable op)


def _kw(*allowed: str) -> Callable[[Any], str | None]:
    """A rule: the sample passes only keyword arguments tracejit takes."""
    def rule(s):
        bad = sorted(k for k in s.kwargs if k not in allowed)
        return f"keyword arguments {bad} have no tracejit counterpart" if bad else None
    return rule


def _alpha(op):
    """torch.add/sub(x, y, alpha=a) is x op a*y."""
    def fn(x, y, alpha=1):
        return op(x, y if alpha == 1 else y * alpha)
    return fn


def _torch_pad_to_numpy(ndim: int, pad: tuple[int, ...]) -> list[tuple[int, int]]:
    """F.pad's (last_lo, last_hi, prev_lo, prev_hi, ...) as NumPy's per-axis pad widths."""
    widths = [(0, 0)] * ndim
    for i in range(len(pad) // 2):
        widths[ndim - 1 - i] = (pad[2 * i], pad[2 * i + 1])
    return widths


def _pad(x, pad, mode="constant", value=None):
    return tj.pad(x, _torch_pad_to_numpy(x.ndim, tuple(pad)), 0.0 if value is None else value)


def _var(x, dim=None, unbiased=None, keepdim=False, *, correction=None):
    return tj.var(x, dim, keepdim, unbiased=unbiased, correction=correction)


def _clamp(x, min=None, max=None):           # noqa: A002
    return tj.clamp(x, min, max)


def _getitem_has_bool_mask(s) -> str | None:
    keys = s.args[0] if isinstance(s.args[0], tuple) else (s.args[0],)
    for k in keys:
        if getattr(k, "dtype", None) is not None and str(k.dtype) == "torch.bool":
            return "boolean-mask indexing has a data-dependent shape: eager mode only"
    return None


def _softplus(x, beta=1, threshold=20):
    """F.softplus(x, beta, threshold): softplus(beta x) / beta, linear above the threshold."""
    return tj.where(x * beta > threshold, x, tj.softplus(x * beta) / beta)


def _cat_legacy_empty(s) -> str | None:
    """torch.cat still skips 1-D empty tensors of any other rank (a legacy rule it warns about
    deprecating); tracejit follows NumPy and asks for matching ranks (a clear ValueError)."""
    ts = s.input
    ranks = {t.ndim for t in ts}
    if len(ranks) > 1 and any(t.ndim == 1 and t.numel() == 0 for t in ts):
        return "torch.cat's legacy skipping of 1-D empty tensors"
    return None


def _ln(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    return tj.layer_norm(x, normalized_shape, weight, bias, eps)


def _squeeze(x, dim=None):
    if isinstance(dim, (tuple, list)):
        for d in sorted((d % x.ndim for d in dim), reverse=True) if x.ndim else ():
            x = tj.squeeze(x, d)
        return x
    return tj.squeeze(x, dim)


def _permute(x, *dims):
    return tj.permute(x, *dims)


def _cast(method: str):
    def fn(x, memory_format=None):              # memory formats do not change values
        return getattr(x, method)()
    return fn


def _int_cast_undefined(bits: int):
    """A float -> int cast of NaN, inf or a value out of the integer range is undefined
    behaviour in torch's C++ (on x86 it gives INT_MIN); tracejit saturates and maps NaN to 0,
    the same on every backend, by design (README, 'Semantics worth knowing')."""
    def rule(s) -> str | None:
        x = s.input
        if not x.is_floating_point():
            return None
        v = x.detach().double()
        if not v.isfinite().all() or (v.abs() >= 2.0 ** (bits - 1)).any():
            return "float -> int cast of NaN/inf/out-of-range values (undefined in torch)"
        return None
    return rule


def _complex_operand(s) -> str | None:
    if any(isinstance(v, complex) for v in (s.input, *s.args)):
        return "a complex scalar: tracejit has no complex dtypes"
    return None


def _embedding(weight, idx):
    return weight[idx]


def _unspecified_order(s) -> str | None:
    """Which of equal elements comes first is unspecified for an unstable sort (and topk);
    then the indices may differ from torch's and both be right."""
    if s.kwargs.get("stable"):
        return None
    x = s.input.detach()
    if x.numel() != x.unique().numel():
        return "ties in an unstable sort: the order of equal elements is unspecified"
    return None


def _creation(fn):
    """torch's creation ops take device=; tracejit's too, but the samples' 'cpu' is implied."""
    def call(*args, device=None, **kwargs):
        return fn(*args, **kwargs)
    return call


def _mse(x, y, reduction="mean"):
    return tj.mse_loss(x, y, reduction=reduction)


# -- ops composed from existing primitives (masking.py, layout.py, norms.py, einsum.py) ----------
def _tensor_arg(i: int, why: str) -> Callable[[Any], str | None]:
    """A rule for compilation: the sample passes a tensor where the op needs a Python int."""
    def rule(s):
        v = s.args[i] if len(s.args) > i else None
        return why if getattr(v, "ndim", None) is not None else None
    return rule


def _eye(n, m=None, *, dtype=None, device=None, requires_grad=False):
    return tj.eye(n, m, dtype=dtype, device=device, requires_grad=requires_grad)


def _copysign_nonfinite(s) -> str | None:
    """copysign's gradient is math_ops._grad_as's: 0 where the input is inf or NaN (torch's is
    NaN there, from inf / inf); the values there are checked in tests/tracer/test_trig_math.py."""
    if s.input.requires_grad and not s.input.detach().isfinite().all():
        return "an inf or NaN input: tracejit's composed gradient is 0 there, torch's NaN"
    return None


TABLE: dict[str, Entry] = {
    # elementwise unary
    "abs": Entry(tj.abs),
    "neg": Entry(tj.neg),
    "positive": Entry(lambda x: +x),
    "exp": Entry(tj.exp),
    "log": Entry(tj.log),
    "sin": Entry(tj.sin),
    "cos": Entry(tj.cos),
    "tanh": Entry(tj.tanh),
    "sqrt": Entry(tj.sqrt),
    "sign": Entry(tj.sign),
    "sigmoid": Entry(tj.sigmoid),
    "nn.functional.relu": Entry(tj.relu),
    "nn.functional.softplus": Entry(_softplus),
    "nn.functional.gelu": Entry(lambda x, approximate="none": tj.gelu(x, approximate)),
    "logical_not": Entry(tj.logical_not, grad=False),
    "clone": Entry(lambda x, memory_format=None: x.clone()),   # formats do not change values
    "contiguous": Entry(lambda x, memory_format=None: x.contiguous()),
    # elementwise binary
    "add": Entry(_alpha(tj.add)),
    "sub": Entry(_alpha(tj.sub)),
    "rsub": Entry(lambda x, y, alpha=1: tj.sub(y, x if alpha == 1 else x * alpha)),
    "mul": Entry(tj.mul),
    "div.no_rounding_mode": Entry(tj.div),
    "div.floor_rounding": Entry(tj.div),
    "div.trunc_rounding": Entry(tj.div),
    "floor_divide": Entry(tj.floor_divide),
    "remainder": Entry(tj.remainder),
    "fmod": Entry(tj.fmod),
    "__rmod__": Entry(lambda x, s: s % x),
    "true_divide": Entry(tj.div),
    "pow": Entry(tj.pow),
    "maximum": Entry(tj.maximum),
    "minimum": Entry(tj.minimum),
    "max.binary": Entry(tj.maximum),
    "min.binary": Entry(tj.minimum),
    "eq": Entry(tj.eq, grad=False),
    "ne": Entry(tj.ne, grad=False),
    "lt": Entry(tj.lt, grad=False),
    "le": Entry(tj.le, grad=False),
    "gt": Entry(tj.gt, grad=False),
    "ge": Entry(tj.ge, grad=False),
    "logical_and": Entry(tj.logical_and, grad=False),
    "logical_or": Entry(tj.logical_or, grad=False),
    "__radd__": Entry(lambda x, s: s + x),
    "__rsub__": Entry(lambda x, s: s - x),
    "__rmul__": Entry(lambda x, s: s * x),
    "__rdiv__": Entry(lambda x, s: s / x),
    "__rpow__": Entry(lambda x, s: s ** x),
    "__rmatmul__": Entry(lambda x, s: s @ x),
    "clamp": Entry(_clamp),
    "clamp_min": Entry(lambda x, m: tj.clamp(x, m, None)),
    "clamp_max": Entry(lambda x, m: tj.clamp(x, None, m)),
    # torch's OpInfo op is where(self, condition, other) = torch.where(condition, self, other)
    "where": Entry(lambda x, cond, other: tj.where(cond, x, other), unsupported=_complex_operand),
    # reductions and row-wise composites
    "sum": Entry(tj.sum, unsupported=_kw("dim", "keepdim", "dtype")),
    "amax": Entry(tj.amax),
    "amin": Entry(tj.amin),
    "max.reduction_no_dim": Entry(tj.max),
    "min.reduction_no_dim": Entry(tj.min),
    "max.reduction_with_dim": Entry(tj.max),        # (values, indices) as torch
    "min.reduction_with_dim": Entry(tj.min),
    "argmax": Entry(tj.argmax, grad=False),
    "argmin": Entry(tj.argmin, grad=False),
    "mean": Entry(tj.mean, int_ok=False, unsupported=_kw("dim", "keepdim")),
    "var": Entry(_var, int_ok=False),
    "var.unbiased": Entry(lambda x, unbiased: tj.var(x, unbiased=unbiased), int_ok=False),
    "logsumexp": Entry(tj.logsumexp, int_ok=False),
    "softmax": Entry(tj.softmax, int_ok=False),
    "log_softmax": Entry(tj.log_softmax, int_ok=False),
    "softmax.with_dtype": Entry(tj.softmax),
    "log_softmax.with_dtype": Entry(tj.log_softmax),
    "nn.functional.layer_norm": Entry(_ln, int_ok=False),
    # convolution and pooling primitives, batch norm (tracejit.nn.functional)
    "nn.functional.conv2d": Entry(lambda *a, **k: tj.nn.functional.conv2d(*a, **k),
                                  int_ok=False),
    "nn.functional.max_pool2d": Entry(lambda *a, **k: tj.nn.functional.max_pool2d(*a, **k),
                                      int_ok=False),
    "nn.functional.avg_pool2d": Entry(lambda *a, **k: tj.nn.functional.avg_pool2d(*a, **k),
                                      int_ok=False),
    "nn.functional.adaptive_avg_pool2d": Entry(
        lambda *a, **k: tj.nn.functional.adaptive_avg_pool2d(*a, **k), int_ok=False),
    "nn.functional.batch_norm": Entry(lambda *a, **k: tj.nn.functional.batch_norm(*a, **k),
                                      int_ok=False),
    # 3-D pools and trilinear interpolate (conv3d, conv_transpose3d, max_pool3d and grid_sample
    # are checked in tests/nn: their OpInfo runs take minutes, or compare float32 sums of
    # ~100-sized terms at 1e-5 absolute)
    "nn.functional.avg_pool3d": Entry(lambda *a, **k: tj.nn.functional.avg_pool3d(*a, **k),
                                      int_ok=False),
    "nn.functional.adaptive_avg_pool3d": Entry(
        lambda *a, **k: tj.nn.functional.adaptive_avg_pool3d(*a, **k), int_ok=False),
    "nn.functional.interpolate.trilinear": Entry(
        lambda *a, **k: tj.nn.functional.interpolate(*a, **k), int_ok=False),
    "nn.functional.mse_loss": Entry(_mse, int_ok=False),
    "nn.functional.cross_entropy": Entry(tj.cross_entropy, int_ok=False),
    # shapes and layout
    "reshape": Entry(tj.reshape),
    "view": Entry(lambda x, shape: x.view(shape)),
    "broadcast_to": Entry(tj.broadcast_to),
    "expand": Entry(lambda x, shape: x.expand(shape)),
    "permute": Entry(_permute),
    "transpose": Entry(tj.transpose),
    "t": Entry(lambda x: x.t()),
    "mT": Entry(lambda x: x.mT),
    "squeeze": Entry(_squeeze),
    "squeeze.multiple": Entry(_squeeze),
    "unsqueeze": Entry(tj.unsqueeze),
    "flatten": Entry(tj.flatten),
    "cat": Entry(tj.cat, unsupported=_cat_legacy_empty),
    "stack": Entry(tj.stack),
    "nn.functional.pad.constant": Entry(_pad),
    "constant_pad_nd": Entry(lambda x, pad, value=0: _pad(x, pad, value=value)),
    # torch's OpInfo op is embedding(weight, idx); max_norm (which renormalises the weight in
    # place) and padding_idx have no tracejit counterpart
    "nn.functional.embedding": Entry(_embedding, int_ok=False, unsupported=_kw()),
    "__getitem__": Entry(lambda x, key: x[key], not_compilable=_getitem_has_bool_mask),
    "matmul": Entry(tj.matmul),
    "mm": Entry(tj.matmul),
    "bmm": Entry(tj.bmm),
    "mv": Entry(tj.matmul),
    "dot": Entry(tj.matmul),
    # sorting, scans and logical reductions
    "all": Entry(tj.all, grad=False),
    "any": Entry(tj.any, grad=False),
    "prod": Entry(tj.prod),
    "cumsum": Entry(tj.cumsum),
    "cumprod": Entry(tj.cumprod),
    "sort": Entry(tj.sort, unsupported=_unspecified_order),
    "argsort": Entry(tj.argsort, grad=False, unsupported=_unspecified_order),
    "topk": Entry(tj.topk, unsupported=_unspecified_order),
    "erf": Entry(tj.erf),
    "erfc": Entry(tj.erfc),
    # tracer/trig_ops.py
    **{n: Entry(getattr(tj, n)) for n in ("tan", "atan", "asin", "acos", "sinh", "cosh", "asinh",
                                           "acosh", "atanh", "log2", "log10", "exp2", "atan2",
                                           "logaddexp2")},
    "copysign": Entry(tj.copysign, unsupported=_copysign_nonfinite),
    # (torch's gradient of a real sgn is a ZeroTensor, which has no NumPy form to compare;
    # tracejit's is sign's zeros, which "sign" checks)
    "sgn": Entry(tj.sgn, grad=False),
    "signbit": Entry(tj.signbit, grad=False),
    # creation (forward only: nothing to differentiate)
    "arange": Entry(_creation(lambda start, end=None, step=1, dtype=None:
                              tj.arange(start, end, step, dtype=dtype))),
    "linspace": Entry(_creation(lambda start, end, steps, dtype=None:
                                tj.linspace(start, end, steps, dtype=dtype))),
    "full": Entry(_creation(lambda shape, value, dtype=None: tj.full(shape, value, dtype=dtype))),
    "zeros": Entry(_creation(lambda shape, dtype=None: tj.zeros(shape, dtype=dtype))),
    "ones": Entry(_creation(lambda shape, dtype=None: tj.ones(shape, dtype=dtype))),
    "zeros_like": Entry(_creation(lambda x, dtype=None: tj.zeros_like(x, dtype=dtype))),
    "ones_like": Entry(_creation(lambda x, dtype=None: tj.ones_like(x, dtype=dtype))),
    "full_like": Entry(_creation(lambda x, v, dtype=None: tj.full_like(x, v, dtype=dtype))),
    # composed from existing primitives: masks, pieces, layout, norms, einsum, constructors
    "masked_fill": Entry(lambda x, mask, value: x.masked_fill(mask, value)),
    "tril": Entry(tj.tril),
    "triu": Entry(tj.triu),
    "nn.functional.one_hot": Entry(tj.one_hot, grad=False,
                                   not_compilable=lambda s: "num_classes=-1 reads the data"
                                   if s.kwargs.get("num_classes", -1) == -1 else None),
    "eye": Entry(_eye, grad=False),
    "split": Entry(tj.split),
    "split.list_args": Entry(tj.split),
    "split_with_sizes": Entry(tj.split),
    "chunk": Entry(tj.chunk),
    "unbind": Entry(tj.unbind),
    "narrow": Entry(tj.narrow, not_compilable=_tensor_arg(
        1, "start given as a tensor: a data-dependent slice position")),
    "repeat": Entry(lambda x, *sizes: x.repeat(*sizes)),
    "tile": Entry(tj.tile),
    "flip": Entry(tj.flip),
    "fliplr": Entry(tj.fliplr),
    "flipud": Entry(tj.flipud),
    "roll": Entry(tj.roll),
    "std": Entry(tj.std, int_ok=False),
    "std.unbiased": Entry(tj.std, int_ok=False),
    "norm": Entry(tj.norm, int_ok=False),
    "norm.fro": Entry(tj.norm, int_ok=False),
    "norm.inf": Entry(tj.norm, int_ok=False),
    "linalg.vector_norm": Entry(tj.linalg.vector_norm, int_ok=False),
    # torch's OpInfo op is einsum(operands, equation)
    "einsum": Entry(lambda xs, eq: tj.einsum(eq, *xs)),
    "new_zeros": Entry(lambda x, *a, **k: x.new_zeros(*a, **k), grad=False),
    "new_ones": Entry(lambda x, *a, **k: x.new_ones(*a, **k), grad=False),
    "new_full": Entry(lambda x, *a, **k: x.new_full(*a, **k), grad=False),
    "expand_as": Entry(lambda x, other: x.expand_as(other)),
    "view_as": Entry(lambda x, other: x.view_as(other)),
    "reshape_as": Entry(lambda x, other: x.reshape_as(other)),
    "outer": Entry(tj.outer),
    "addmm": Entry(tj.addmm),
    "addmm.decomposed": Entry(tj.addmm),
    "baddbmm": Entry(tj.baddbmm),
    "addbmm": Entry(tj.addbmm),
    "tensordot": Entry(tj.tensordot),
    "kron": Entry(tj.kron),
    "diagonal": Entry(tj.diagonal),
    "diag": Entry(tj.diag),
    "trace": Entry(tj.trace),
    "hstack": Entry(tj.hstack),
    "vstack": Entry(tj.vstack),
    "dstack": Entry(tj.dstack),
    "column_stack": Entry(tj.column_stack),
    "atleast_1d": Entry(tj.atleast_1d),
    "atleast_2d": Entry(tj.atleast_2d),
    "atleast_3d": Entry(tj.atleast_3d),
    "tensor_split": Entry(tj.tensor_split, not_compilable=_tensor_arg(
        0, "indices given as a tensor: data-dependent piece sizes")),
    "hsplit": Entry(tj.hsplit),
    "vsplit": Entry(tj.vsplit),
    "dsplit": Entry(tj.dsplit),
    "movedim": Entry(tj.movedim),
    "select": Entry(tj.select),
    "index_select": Entry(tj.index_select),
    "rot90": Entry(tj.rot90),
    "count_nonzero": Entry(tj.count_nonzero, grad=False),
    "square": Entry(tj.square),
    "rsqrt": Entry(tj.rsqrt),
    "gather": Entry(lambda x, dim, index, sparse_grad=False: tj.gather(x, dim, index)),
    "take_along_dim": Entry(tj.take_along_dim),
    "scatter_add": Entry(tj.scatter_add),
    "meshgrid.variadic_tensors": Entry(lambda *ts, indexing=None: tj.meshgrid(
        *ts, indexing=indexing)),
    "meshgrid.list_of_tensors": Entry(lambda ts, indexing=None: tj.meshgrid(
        ts, indexing=indexing)),
    "ravel": Entry(tj.ravel),
    "repeat_interleave": Entry(tj.repeat_interleave),
    "cartesian_prod": Entry(tj.cartesian_prod),
    "dist": Entry(tj.dist, int_ok=False),
    "tril_indices": Entry(lambda r, c, offset=0, **k: tj.tril_indices(r, c, offset, **k),
                          grad=False),
    "triu_indices": Entry(lambda r, c, offset=0, **k: tj.triu_indices(r, c, offset, **k),
                          grad=False),
    # the *_copy and unsafe_* variants compute the same values as the plain ops
    "unsafe_split": Entry(tj.split),
    "unsafe_chunk": Entry(tj.chunk),
    "split_with_sizes_copy": Entry(tj.split),
    "unbind_copy": Entry(tj.unbind),
    "t_copy": Entry(tj.t),
    "permute_copy": Entry(_permute),
    "transpose_copy": Entry(tj.transpose),
    "unsqueeze_copy": Entry(tj.unsqueeze),
    # the number of nonzero elements is the result's shape: eager only, by design
    "nonzero": Entry(tj.nonzero, grad=False,
                     not_compilable=lambda s: "data-dependent result shape"),
    # casts
    "float": Entry(_cast("float")),
    "double": Entry(_cast("double")),
    "half": Entry(_cast("half")),
    "bfloat16": Entry(_cast("bfloat16")),
    "long": Entry(_cast("long"), grad=False, unsupported=_int_cast_undefined(64)),
    "int": Entry(_cast("int"), grad=False, unsupported=_int_cast_undefined(32)),
    "bool": Entry(_cast("bool"), grad=False),
}
