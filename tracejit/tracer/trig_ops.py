"""torch's trigonometric, hyperbolic and base-2/10 functions (tan, atan, atan2, asin, acos,
sinh, cosh, asinh, acosh, atanh, log2, log10, exp2: ir/prims_libm.py's primitives, the C
library's functions), logaddexp2, copysign, signbit, sgn, the NumPy-style aliases (arcsin,
multiply, ...) and the in-place forms (tan_, atan2_, ...). Integer and bool inputs compute in
float32, as torch's."""
from __future__ import annotations

import math

import numpy as np

from ..ir import dtypes as dt
from ..ir.primitives import P
from . import ops
from .autocast import FP32, autocast_op
from .math_inplace import _method
from .math_ops import _grad_as, _opmath, log1p
from .series_ops import isinf
from .tensor_base import TensorBase as Tensor

_UNARY = ("tan", "atan", "asin", "acos", "sinh", "cosh", "asinh", "acosh", "atanh", "log2",
          "log10", "exp2")

_AUTOCAST_FP32 = ("acos", "asin", "cosh", "sinh", "tan", "log2", "log10")


def _unary(name: str):
    def f(input) -> Tensor:  # noqa: A002
        return ops._unary(name, input, True)
    f.__name__ = f.__qualname__ = name
    f.__doc__ = f"torch.{name}: the C library's {name} (integers compute in float32)."
    # (torch's autocast runs these in float32, as exp and log)
    return autocast_op(FP32)(f) if name in _AUTOCAST_FP32 else f


tan, atan, asin, acos, sinh, cosh, asinh, acosh, atanh, log2, log10, exp2 = \
    (_unary(n) for n in _UNARY)
arctan, arcsin, arccos, arcsinh, arccosh, arctanh = atan, asin, acos, asinh, acosh, atanh


def atan2(input, other) -> Tensor:  # noqa: A002
    """atan2(y, x) with broadcasting and torch's promotion (integers give float32); the
    gradient is 0 at (0, 0), as torch's."""
    return ops._binary("atan2", input, other, "float")


arctan2 = atan2


@_opmath
def logaddexp2(input, other) -> Tensor:  # noqa: A002
    """log2(2^a + 2^b) = max + log1p(2^-|a - b|) / ln 2, without overflow; equal infinities
    give themselves (torch's)."""
    a, b = ops.as_tensor(input), ops.as_tensor(other)
    if not (a.dtype.is_float or b.dtype.is_float):
        a, b = ops.cast(a, dt.f32), ops.cast(b, dt.f32)
    d = ops.result_dtype(a, b)
    a, b = ops.cast(a, d), ops.cast(b, d)
    m = ops.maximum(a, b)
    r = ops.add(m, ops.mul(log1p(exp2(ops.neg(ops.abs(ops.sub(a, b))))), 1.0 / math.log(2.0)))
    same_inf = ops.logical_and(ops.eq(a, b), isinf(a))
    return ops.where(same_inf, a, r)


def signbit(input) -> Tensor:  # noqa: A002
    """True where the sign bit is set: negatives, -0.0 and negative NaNs (integers: x < 0)."""
    x = ops.as_tensor(input)
    if x.dtype is dt.bool_:
        return ops.ne(x, x)
    if not x.dtype.is_float:
        return ops.lt(x, 0)
    return ops.bind(P.signbit, ops.stop_gradient(x))


def copysign(input, other) -> Tensor:  # noqa: A002
    """|a| with b's sign (integers compute in float32); torch's gradients: g * result / a
    (0 where a == 0) to a, none to b."""
    a, b = ops.as_tensor(input), ops.as_tensor(other)
    d = ops.result_dtype(a, b)
    if not d.is_float:
        d = dt.f32
    shape = tuple(np.broadcast_shapes(tuple(a.shape), tuple(b.shape)))
    a, b = ops.broadcast_to(ops.cast(a, d), shape), ops.broadcast_to(ops.cast(b, d), shape)
    flip = ops.ne(signbit(a), signbit(b))
    sa = ops.stop_gradient(a)
    v = ops.where(flip, ops.neg(sa), sa)
    return _grad_as(v, [a], lambda ya: [ops.where(ops.eq(ops.stop_gradient(ya), 0), 0.0,
                                                  ops.where(flip, -1.0, 1.0))])


def sgn(input) -> Tensor:  # noqa: A002
    """sign, for real tensors (torch.sgn's x / |x| is sign there)."""
    return ops.sign(input)


multiply, subtract, divide, negative = ops.mul, ops.sub, ops.div, ops.neg

INPLACE = {n + "_": globals()[n] for n in (*_UNARY, "arctan", "arcsin", "arccos", "arcsinh",
                                            "arccosh", "arctanh", "atan2", "arctan2",
                                            "copysign", "sgn")}
INPLACE.update(negative_=ops.neg)
for _n, _f in INPLACE.items():
    globals()[_n] = _method(_n, _f)

__all__ = [*_UNARY, "arctan", "arcsin", "arccos", "arcsinh", "arccosh", "arctanh", "atan2",
           "arctan2", "logaddexp2", "signbit", "copysign", "sgn", "multiply", "subtract",
           "divide", "negative", *INPLACE]
