"""`Tensor`, the class users see: TensorBase's data and autograd core (tensor_base.py) plus
every method and operator, each listed here as a call into the op module that implements it.

This module sits above all op modules. They make their results as `TensorBase(data)`, which
builds an instance of this class: `register(Tensor)` below is the one link from the core up
to here (as PyTorch registers its Python `torch.Tensor` with the C core). Nothing else adds
attributes to the class (tests/test_import_layers.py checks it)."""
from __future__ import annotations

from functools import partial

import numpy as np

from ..ir import dtypes as dt
from ..ir.primitives import P
from . import composites as C
from . import bitwise, conversions, eager_views, fills, gathering, indexing, inplace, layout
from . import masking
from . import broadcast_add, norms, ops
from . import products, sampling, scans, selection, sorting, stacking, view_grad, views
from . import shape_views
from . import index_ops, search_ops, series_ops
from . import math_inplace, math_ops, memory_format
from . import trig_ops
from . import special_ops
from . import assorted_ops, hist_ops, scatter_ops, stats_ops
from . import linalg_ops, linalg_spectral
from .autograd import backward as _backward, register_post_accumulate_grad_hook
from .dispatch import apply_primitive as _apply_primitive, fast_binary as _fast_binary
from .tensor_base import TensorBase, register


def _reflected(f):
    """`other OP self` for Tensor.__rOP__."""
    def reflected(self, other):
        return f(other, self)
    reflected.__name__ = f"r{f.__name__}"
    return reflected


class Tensor(TensorBase):
    __slots__ = ()

    # -- the registry's binding protocol: a primitive applied to tensors (dispatch.py) -------
    def __tj_bind__(self, prim, args, params):
        return _apply_primitive(prim, args, params)

    # -- autograd -----------------------------------------------------------------------------
    def backward(self, gradient=None, retain_graph=None, create_graph=False, inputs=None) -> None:
        _backward([self], None if gradient is None else [gradient], retain_graph, create_graph,
                  inputs)

    register_post_accumulate_grad_hook = register_post_accumulate_grad_hook
    requires_grad_ = view_grad.requires_grad_    # (a base's views made before follow it)
    detach = view_grad.detach
    numpy = conversions.numpy       # a view's shares its base's memory

    @property
    def data(self) -> "Tensor":
        """The same storage, detached, with a version counter of its own (as PyTorch)."""
        return view_grad.data_of(self)

    @data.setter
    def data(self, other) -> None:
        if self._captured():            # inside a trace: written back after each call
            inplace.set_data(self, other)
            return
        views.forget(self)      # t takes other's storage; its views keep the old one
        self._data = other._data if isinstance(other, TensorBase) else np.asarray(other)

    # -- operators ----------------------------------------------------------------------------
    # (a + b of two host tensors of one float dtype and shape: dispatch.fast_binary's one frame)
    # (and of such tensors of two shapes that broadcast, ops._one_dtype straight away; x + bias
    # straight to broadcast_add's one op)
    __add__ = _fast_binary(P.add, ops.add, broadcast_add.front("add", ops._one_dtype))
    __sub__ = _fast_binary(P.sub, ops.sub, broadcast_add.front("sub", ops._one_dtype))
    __mul__ = _fast_binary(P.mul, ops.mul, partial(ops._one_dtype, "mul"))
    __truediv__ = _fast_binary(P.div, ops.div, partial(ops._one_dtype, "div"))
    __radd__, __rsub__ = _reflected(ops.add), _reflected(ops.sub)
    __rmul__, __rtruediv__ = _reflected(ops.mul), _reflected(ops.div)
    __pow__, __rpow__ = ops.pow, _reflected(ops.pow)
    __matmul__ = _fast_binary(P.matmul, ops.matmul, matrices=True)
    __rmatmul__ = _reflected(ops.matmul)
    __floordiv__, __rfloordiv__ = ops.floor_divide, _reflected(ops.floor_divide)
    __mod__, __rmod__ = ops.remainder, _reflected(ops.remainder)
    __neg__, __abs__ = ops.neg, ops.abs
    __lt__, __le__, __gt__, __ge__ = ops.lt, ops.le, ops.gt, ops.ge
    __eq__, __ne__ = ops.eq, ops.ne
    __hash__ = TensorBase.__hash__      # by identity (defining __eq__ would otherwise drop it)
    __and__ = __rand__ = bitwise_and = bitwise.bitwise_and
    __or__ = __ror__ = bitwise_or = bitwise.bitwise_or
    __xor__ = __rxor__ = bitwise_xor = bitwise.bitwise_xor
    __invert__ = bitwise_not = bitwise.bitwise_not
    __lshift__ = bitwise_left_shift = bitwise.bitwise_left_shift
    __rshift__ = bitwise_right_shift = bitwise.bitwise_right_shift
    __rlshift__, __rrshift__ = bitwise.rlshift, bitwise.rrshift
    logical_and, logical_or, logical_not = ops.logical_and, ops.logical_or, ops.logical_not
    logical_xor = bitwise.logical_xor
    __getitem__ = indexing.getitem_view
    __setitem__ = indexing.setitem

    def __pos__(self) -> "Tensor":
        return self

    # -- in place -----------------------------------------------------------------------------
    add_, sub_, mul_, div_ = (inplace.method(n) for n in ("add_", "sub_", "mul_", "div_"))
    pow_, clamp_, clip_ = (inplace.method(n) for n in ("pow_", "clamp_", "clip_"))
    bitwise_left_shift_, bitwise_right_shift_ = (
        inplace.method(n) for n in ("bitwise_left_shift_", "bitwise_right_shift_"))
    __ilshift__, __irshift__ = bitwise_left_shift_, bitwise_right_shift_
    zero_, fill_, copy_ = (inplace.method(n) for n in ("zero_", "fill_", "copy_"))
    exp_, tanh_, neg_ = (inplace.method(n) for n in ("exp_", "tanh_", "neg_"))
    sqrt_, abs_ = inplace.method("sqrt_"), inplace.method("abs_")
    normal_, uniform_, bernoulli_ = fills.normal_, fills.uniform_, fills.bernoulli_
    masked_fill_, tril_, triu_ = masking.masked_fill_, masking.tril_, masking.triu_
    index_add_, scatter_, scatter_add_ = (index_ops.index_add_, index_ops.scatter_,
                                          index_ops.scatter_add_)
    scatter_reduce_ = index_ops.scatter_reduce_

    def __iadd__(self, other) -> "Tensor":
        return self.add_(other)

    def __isub__(self, other) -> "Tensor":
        return self.sub_(other)

    def __imul__(self, other) -> "Tensor":
        return self.mul_(other)

    def __itruediv__(self, other) -> "Tensor":
        return self.div_(other)

    # -- elementwise --------------------------------------------------------------------------
    add, sub, mul, div, pow = ops.add, ops.sub, ops.mul, ops.div, ops.pow   # noqa: A003
    floor_divide, remainder, fmod = ops.floor_divide, ops.remainder, ops.fmod
    exp, log, sin, cos, tanh, sqrt = ops.exp, ops.log, ops.sin, ops.cos, ops.tanh, ops.sqrt
    abs, sign, neg, erf, erfc = ops.abs, ops.sign, ops.neg, ops.erf, ops.erfc   # noqa: A003
    maximum, minimum = ops.maximum, ops.minimum
    eq, ne, lt, le, gt, ge = ops.eq, ops.ne, ops.lt, ops.le, ops.gt, ops.ge
    clamp = clip = ops.clip
    square, rsqrt = stacking.square, stacking.rsqrt
    sigmoid, relu = C.sigmoid, C.relu

    def where(self, condition, other) -> "Tensor":
        return ops.where(condition, self, other)

    # -- reductions and scans -----------------------------------------------------------------
    sum, mean, var, std = ops.sum, C.mean, C.var, norms.std                  # noqa: A003
    prod, any, all = scans.prod, scans.any, scans.all                           # noqa: A003
    cumsum, cumprod = scans.cumsum, scans.cumprod
    max, min = selection.max, selection.min                                     # noqa: A003
    amax, amin, argmax, argmin = selection.amax, selection.amin, selection.argmax, selection.argmin
    softmax, log_softmax, logsumexp = C.softmax, C.log_softmax, C.logsumexp
    norm, dist, count_nonzero = norms.norm, norms.dist, stacking.count_nonzero
    sort, argsort, topk = sorting.sort, sorting.argsort, sorting.topk
    nonzero, multinomial = masking.nonzero, sampling.multinomial

    # -- products -----------------------------------------------------------------------------
    matmul, bmm = ops.matmul, layout.bmm
    outer = ger = products.outer
    dot, mv, kron, trace = products.dot, products.mv, products.kron, products.trace
    mm = products.mm
    addmm, baddbmm, addbmm = products.addmm, products.baddbmm, products.addbmm

    # -- views of the tensor (views.py records them, so in-place ops write through) ----------
    view, view_as = views.view, views.view_as
    reshape, reshape_as, flatten, unflatten = (views.reshape, views.reshape_as, views.flatten,
                                               views.unflatten)
    ravel = views.ravel
    permute, transpose, t = views.permute, views.transpose, eager_views.t
    swapaxes = swapdims = views.swapaxes
    movedim = moveaxis = views.movedim
    squeeze, unsqueeze = views.squeeze, views.unsqueeze
    expand, expand_as, broadcast_to = views.expand, views.expand_as, views.broadcast_to
    narrow, select, diagonal = views.narrow, views.select, views.diagonal
    split, chunk, unbind = views.split, views.chunk, views.unbind
    tensor_split, hsplit, vsplit, dsplit = views.tensor_split, views.hsplit, views.vsplit, \
        views.dsplit
    contiguous = views.contiguous
    is_contiguous = memory_format.is_contiguous
    unfold = shape_views.unfold
    T = property(eager_views.full_transpose)
    mT = property(eager_views.matrix_transpose)

    # -- copies: layout, gathering, masking ----------------------------------------------------
    repeat, repeat_interleave = layout.repeat, stacking.repeat_interleave
    flip, fliplr, flipud, roll, rot90 = (layout.flip, layout.fliplr, layout.flipud, layout.roll,
                                         stacking.rot90)
    gather, take_along_dim, scatter_add = (gathering.gather, gathering.take_along_dim,
                                           gathering.scatter_add)
    index_select, diag = stacking.index_select, products.diag
    masked_fill, tril, triu = masking.masked_fill, masking.tril, masking.triu
    index_add, scatter, scatter_reduce = (index_ops.index_add, index_ops.scatter,
                                          index_ops.scatter_reduce)
    masked_select = index_ops.masked_select
    kthvalue, median, unique = search_ops.kthvalue, search_ops.median, search_ops.unique
    isclose, allclose = search_ops.isclose, search_ops.allclose
    logcumsumexp, diff, cross = series_ops.logcumsumexp, series_ops.diff, series_ops.cross
    isnan, isinf, isfinite = series_ops.isnan, series_ops.isinf, series_ops.isfinite
    logaddexp = series_ops.logaddexp
    M = math_ops   # (math_ops.py: torch's everyday elementwise math)
    round, floor, ceil, trunc, fix = M.round, M.floor, M.ceil, M.trunc, M.fix  # noqa: A003
    frac, log1p, expm1, hypot, lerp = M.frac, M.log1p, M.expm1, M.hypot, M.lerp
    addcmul, addcdiv, nan_to_num, fmax, fmin = M.addcmul, M.addcdiv, M.nan_to_num, M.fmax, M.fmin
    aminmax, diag_embed, logit, xlogy, sinc = M.aminmax, M.diag_embed, M.logit, M.xlogy, M.sinc
    deg2rad, rad2deg, heaviside = M.deg2rad, M.rad2deg, M.heaviside
    clamp_min, clamp_max = M.clamp_min, M.clamp_max
    float_power, true_divide = M.float_power, M.true_divide
    M = math_inplace   # (their in-place forms)
    round_, floor_, ceil_, trunc_, fix_ = M.round_, M.floor_, M.ceil_, M.trunc_, M.fix_
    frac_, log1p_, expm1_, hypot_, lerp_ = M.frac_, M.log1p_, M.expm1_, M.hypot_, M.lerp_
    addcmul_, addcdiv_, nan_to_num_, logit_ = M.addcmul_, M.addcdiv_, M.nan_to_num_, M.logit_
    xlogy_, sinc_, deg2rad_, rad2deg_ = M.xlogy_, M.sinc_, M.deg2rad_, M.rad2deg_
    clamp_min_, clamp_max_, float_power_ = M.clamp_min_, M.clamp_max_, M.float_power_
    true_divide_, heaviside_ = M.true_divide_, M.heaviside_
    sigmoid_, relu_, log_, sin_, cos_ = M.sigmoid_, M.relu_, M.log_, M.sin_, M.cos_
    erf_, sign_, rsqrt_, square_, reciprocal_ = M.erf_, M.sign_, M.rsqrt_, M.square_, \
        M.reciprocal_
    del M
    R = trig_ops   # (trig_ops.py: tan, atan2, log2, copysign, the NumPy-style aliases)
    tan, atan, asin, acos, sinh, cosh = R.tan, R.atan, R.asin, R.acos, R.sinh, R.cosh
    asinh, acosh, atanh, log2, log10, exp2 = R.asinh, R.acosh, R.atanh, R.log2, R.log10, R.exp2
    arctan, arcsin, arccos, arcsinh, arccosh, arctanh = R.arctan, R.arcsin, R.arccos, \
        R.arcsinh, R.arccosh, R.arctanh
    atan2, arctan2, logaddexp2, copysign = R.atan2, R.arctan2, R.logaddexp2, R.copysign
    signbit, sgn = R.signbit, R.sgn
    multiply, subtract, divide, negative = R.multiply, R.subtract, R.divide, R.negative
    tan_, atan_, asin_, acos_, sinh_, cosh_ = R.tan_, R.atan_, R.asin_, R.acos_, R.sinh_, \
        R.cosh_
    asinh_, acosh_, atanh_, log2_, log10_, exp2_ = R.asinh_, R.acosh_, R.atanh_, R.log2_, \
        R.log10_, R.exp2_
    arctan_, arcsin_, arccos_, arcsinh_, arccosh_, arctanh_ = R.arctan_, R.arcsin_, \
        R.arccos_, R.arcsinh_, R.arccosh_, R.arctanh_
    atan2_, arctan2_, copysign_, sgn_, negative_ = R.atan2_, R.arctan2_, R.copysign_, \
        R.sgn_, R.negative_
    multiply_, subtract_, divide_ = mul_, sub_, div_
    del R
    Z = special_ops   # (special_ops.py: lgamma, digamma, polygamma, erfinv, the Bessel i0 ...)
    lgamma, digamma, erfinv, i0, mvlgamma = Z.lgamma, Z.digamma, Z.erfinv, Z.i0, Z.mvlgamma
    ldexp, frexp, nextafter = Z.ldexp, Z.frexp, Z.nextafter
    lgamma_, digamma_, erfinv_, i0_, mvlgamma_ = Z.lgamma_, Z.digamma_, Z.erfinv_, Z.i0_, \
        Z.mvlgamma_
    ldexp_, nextafter_, polygamma_ = Z.ldexp_, Z.nextafter_, Z.polygamma_

    def polygamma(self, n: int):
        """x.polygamma(n): torch.polygamma(n, x)."""
        return special_ops.polygamma(n, self)
    del Z
    reciprocal = stacking.reciprocal

    def tile(self, *dims) -> "Tensor":
        return layout.tile(self, dims[0] if len(dims) == 1 else dims)

    X = stats_ops   # (stats_ops/hist_ops/scatter_ops/assorted_ops: torch's extra functions)
    cummax, cummin, nansum, nanmean, mode = X.cummax, X.cummin, X.nansum, X.nanmean, X.mode
    quantile, nanquantile, cov, corrcoef = X.quantile, X.nanquantile, X.cov, X.corrcoef
    bincount, histc, histogram = hist_ops.bincount, hist_ops.histc, hist_ops.histogram
    X = scatter_ops
    take, put, put_, index_put, index_put_ = X.take, X.put, X.put_, X.index_put, X.index_put_
    masked_scatter, masked_scatter_, as_strided = X.masked_scatter, X.masked_scatter_, \
        X.as_strided
    diagonal_scatter, select_scatter, slice_scatter = X.diagonal_scatter, X.select_scatter, \
        X.slice_scatter
    X = assorted_ops
    renorm, renorm_, inner, vdot = X.renorm, X.renorm_, X.inner, X.vdot
    X = linalg_ops
    inverse, det, logdet, slogdet = X.inv, X.det, X.logdet, X.slogdet
    cholesky = X.cholesky_legacy
    pinverse = linalg_spectral.pinverse
    del X

    # -- dtype, device, new tensors ------------------------------------------------------------
    astype = to_dtype = ops.cast
    is_floating_point, is_complex = memory_format.is_floating_point, memory_format.is_complex
    element_size = memory_format.element_size
    nelement, ndimension = TensorBase.numel, TensorBase.dim
    type_as = layout.type_as
    float, double, half = (conversions.converter(dt.f32), conversions.converter(dt.f64),  # noqa: A003
                           conversions.converter(dt.f16))
    bfloat16 = conversions.converter(dt.bf16)
    int, long, bool = (conversions.converter(dt.i32), conversions.converter(dt.i64),  # noqa: A003
                       conversions.converter(dt.bool_))
    byte, char, short = (conversions.converter(dt.u8), conversions.converter(dt.i8),  # noqa: A003
                         conversions.converter(dt.i16))
    clone, to, cpu, cuda = conversions.clone, conversions.to, conversions.cpu, conversions.cuda
    new_zeros, new_ones = layout.new_filled(0), layout.new_filled(1)
    new_empty = layout.new_filled(0)
    new_full, new_tensor = layout.new_full, layout.new_tensor


register(Tensor)
