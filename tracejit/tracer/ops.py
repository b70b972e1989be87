"""The op functions users call (`tj.add`, `tj.sum`, `tj.matmul`, ...): NumPy broadcasting and
type promotion on top of the strict primitives. This module is the one namespace the op
modules call (`ops.add`, `ops.reshape`, `ops.as_tensor`): elementwise ops, reductions and pad
are defined here; how operands are taken and promoted is in operands.py, the shape ops are in
shape_ops.py, matmul in matmul_op.py."""
from __future__ import annotations

import math
import numbers
from typing import Any, Sequence

import numpy as np

from ..ir import dtypes as dt
from ..ir.core import user_location
from ..ir.primitives import P, bind
from . import broadcast_add
from .autocast import FP32, autocast_op
from .backward_nodes import PrimNode
from .node_names import rename
from .state import STATE
from .operands import _axes, _err, _fmt, _is_scalar, as_tensor, cast, result_dtype, wrap_int
from .shape_ops import (broadcast_to, cat, concatenate, expand, flatten,  # noqa: F401
                        permute, reshape, squeeze, stack, swapaxes, transpose, unsqueeze)
from .tensor_base import SUBCLASSES, TensorBase as Tensor
from .matmul_op import matmul  # noqa: F401  (a @ b: matmul_op.py; op modules call ops.matmul)


def _operands(op: str, xs: Sequence[Any], dtype: dt.DType | None = None):
    like = next((x for x in xs if isinstance(x, Tensor) and x._traced), None)
    if like is None:       # constants go to the device of an eager GPU operand
        like = next((x for x in xs if isinstance(x, Tensor) and type(x._data) is not np.ndarray),
                    None)
    if dtype is None:
        dtype = result_dtype(*xs)
    ts = [as_tensor(x, dtype, like) for x in xs]
    try:
        shape = ts[0].shape
        if any(t.shape != shape for t in ts):
            shape = np.broadcast_shapes(*(t.shape for t in ts))
    except ValueError:
        raise _err(op, "shapes " + ", ".join(_fmt(t) for t in ts) + " are not broadcastable") \
            from None
    return [broadcast_to(t, shape) for t in ts]


_SPLATS: dict = {}       # (number, dtype, shape) -> read-only constant Tensor (small shapes)


def _splat_scalar(x: Tensor, v, d: dt.DType) -> Tensor:
    """A Python number as a tensor of x's shape and dtype d."""
    if type(v) is int and d.kind == "i":
        v = wrap_int(v, d)
    data = x._data
    if type(data) is np.ndarray:
        if data.size > 4096:
            return Tensor(np.broadcast_to(np.asarray(v, d.np), data.shape))
        # a loop's `y * 1.01` gets the same read-only constant each time (no array, Tensor
        # or fill per op). Not inside a trace (a constant belongs to its trace) and not for
        # zeros (0.0 == -0.0 as keys); nothing writes to it: it is an op's operand only
        key = (v, d, data.shape)
        if v and not STATE.traces:
            hit = _SPLATS.get(key)
            if hit is not None:
                return hit
        a = np.empty(data.shape, d.np)      # (np.full costs twice an empty array's fill)
        a.fill(v)
        t = Tensor(a)
        if v and not STATE.traces:
            a.flags.writeable = False
            if len(_SPLATS) >= 256:
                _SPLATS.clear()
            _SPLATS[key] = t
        return t
    return broadcast_to(as_tensor(v, d, x), x.shape)


# PyTorch's graph for an op with a Python number: the tensor comes first in `5 * t` and
# `5 + t` (they are t.__rmul__(5), t.__radd__(5)), and `5 / t` is t.reciprocal() * 5
_COMMUTATIVE = frozenset(("add", "mul"))
_BROADCAST_ADD = frozenset(("add", "sub"))


def _binary(op: str, a, b, kind: str):
    """kind: "arith" (bool computes as int64), "float" (true division), "pow" (integers stay
    integers), "any", "cmp"."""
    ta, tb = type(a), type(b)
    if ta in SUBCLASSES and tb in SUBCLASSES:
        da, db = a._data, b._data
        if type(da) is np.ndarray and type(db) is np.ndarray and da.dtype is db.dtype and \
                da.dtype.kind == "f" and not (a._weak or b._weak):
            # host floats of one dtype (most ops of a model): what the checks below conclude
            # for them, without the dtype lookups
            sa, sb = da.shape, db.shape
            if sa == sb:
                return a.__tj_bind__(getattr(P, op), (a, b), {})
            out = _one_dtype(op, a, b, sa, sb)
            if out is not None:
                return out
    if ta in SUBCLASSES:
        ta = Tensor
    if tb in SUBCLASSES:
        tb = Tensor
    if tb is Tensor and ta is not Tensor and _is_scalar(a) and ta is not bool:
        if op in _COMMUTATIVE:
            a, b = b, a
            ta, tb = tb, ta
        elif op == "div":
            return mul(_unary("reciprocal", b, True), a)
    if ta is Tensor and not a._weak:
        d = a.dtype
        ok = d.is_float or (kind != "float" and (d is not dt.bool_ or kind == "any"))
        if ok and tb is Tensor and not b._weak and b.dtype is d:
            sa, sb = a._data.shape, b._data.shape
            if sa == sb:
                # the common case: nothing to promote or broadcast (a Tensor binds it itself)
                return a.__tj_bind__(getattr(P, op), (a, b), {})
            out = _one_dtype(op, a, b, sa, sb)
            if out is not None:
                return out
        if ok and (tb is float and d.is_float or tb is int and d is not dt.bool_):
            return _scalar_operand(a.__tj_bind__(getattr(P, op), (a, _splat_scalar(a, b, d)),
                                                 {}), 1)
    elif tb is Tensor and not b._weak and (ta is float or ta is int):
        d = b.dtype
        if d.is_float or (kind != "float" and d is not dt.bool_ and ta is int):
            s = _splat_scalar(b, a, d)
            return _scalar_operand(b.__tj_bind__(getattr(P, op), (s, b), {}), 0)
    dtype = {"arith": _arith_dtype, "float": _float_dtype, "cmp": _arith_dtype,
             "pow": _pow_dtype, "any": lambda *x: None}[kind](a, b)
    x, y = _operands(op, (a, b), dtype)
    out = bind(P.get(op), x, y)
    for i, v in enumerate((a, b)):
        if _is_scalar(v) and not isinstance(v, Tensor):
            _scalar_operand(out, i)
    if (ta is Tensor and a._weak or tb is Tensor and b._weak) and \
            all(t is not Tensor or v._weak for t, v in ((ta, a), (tb, b))):
        out._weak = True        # a traced Python scalar with a number: still weak (s * 2)
    return out


def _one_dtype(op: str, a: Tensor, b: Tensor, sa: tuple, sb: tuple) -> Tensor | None:
    """a op b for tensors of one dtype that op takes and of shapes sa != sb that broadcast
    (x + bias); None where they do not (the caller's general path raises the error)."""
    shape = _broadcast_pair(sa, sb)
    if shape is None:
        return None
    if op in _BROADCAST_ADD and broadcast_add.applies(a, b, math.prod(shape)):
        return broadcast_add.apply(op, a, b)        # one op, one node
    return a.__tj_bind__(getattr(P, op), (broadcast_to(a, shape), broadcast_to(b, shape)), {})


def _broadcast_pair(sa: tuple, sb: tuple) -> tuple | None:
    """NumPy's broadcast of two shapes, or None where they do not broadcast (the caller's
    general path then raises its error). np.broadcast_shapes costs ~1.5 us."""
    if len(sa) < len(sb):
        sa, sb = sb, sa
    lead = len(sa) - len(sb)
    out = list(sa)
    for i, d in enumerate(sb):
        o = sa[lead + i]
        if o == 1:
            out[lead + i] = d
        elif d != 1 and d != o:
            return None
    return tuple(out)


def _scalar_operand(out: Tensor, i: int) -> Tensor:
    """Tell out's backward node that operand i was a Python number (see PrimNode)."""
    node = out.grad_fn
    if isinstance(node, PrimNode):
        node.scalar_operand(i)
    return out


def _times(b, alpha):
    """torch's `alpha=` of add and sub: the second operand scaled first."""
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Number):
        raise TypeError(f"add/sub: alpha must be a number, got {alpha!r} (at {user_location()})")
    if alpha == 1:
        return b
    return b * alpha if _is_scalar(b) else mul(b, alpha)


def _float_dtype(*xs) -> dt.DType:
    d = result_dtype(*xs)
    return d if d.is_float else dt.f32


def _arith_dtype(*xs) -> dt.DType:
    d = result_dtype(*xs)
    return dt.i64 if d is dt.bool_ else d


def _pow_dtype(*xs) -> dt.DType:
    d = result_dtype(*xs)
    return dt.i64 if d is dt.bool_ else d


def _is_bool(x) -> bool:
    """A bool tensor, bool array or Python/NumPy bool."""
    if isinstance(x, (Tensor, np.ndarray)):
        return x.dtype is dt.bool_ if isinstance(x, Tensor) else x.dtype == np.bool_
    return isinstance(x, bool)         # (torch reads a NumPy bool as a float number)


def _all_bool(a, b) -> bool:
    return _is_bool(a) and _is_bool(b) and (isinstance(a, Tensor) or isinstance(b, Tensor))


def add(a, b, *, alpha=1):
    """a + alpha * b; on two bools it is logical or and stays bool (PyTorch, NumPy, JAX)."""
    if type(a) in SUBCLASSES and type(alpha) is int and alpha == 1 and (
            type(a._data) is np.ndarray and a._data.dtype.kind == "f" or a.dtype is not dt.bool_):
        return _binary("add", a, b, "arith")         # (not two bools, nothing to scale)
    if _all_bool(a, b):
        _times(b, alpha)           # alpha is still checked; torch ignores it for bools
        return _binary("maximum", a, b, "any")
    return _binary("add", a, _times(b, alpha), "arith")


def sub(a, b, *, alpha=1):
    """a - alpha * b. A bool tensor or Python bool operand is an error, as in PyTorch (use ~
    or ^); a NumPy bool scalar or array is a number (torch hands those to NumPy)."""
    if type(a) in SUBCLASSES and type(alpha) is int and alpha == 1 and \
            a.dtype is not dt.bool_ and (type(b) is float or type(b) is int or
                                         type(b) in SUBCLASSES and b.dtype is not dt.bool_):
        return _binary("sub", a, b, "arith")         # (no bool operand, nothing to scale)
    if any(isinstance(x, Tensor) and x.dtype is dt.bool_ or type(x) is bool for x in (a, b)):
        raise _err("sub", f"subtraction with a bool tensor or bool is not supported ({_fmt(a)} - "
                   f"{_fmt(b)}); to invert a mask use ~ or logical_not, for two masks ^ or "
                   f"logical_xor", TypeError)
    return _binary("sub", a, _times(b, alpha), "arith")


def mul(a, b):
    """a * b; on two bools it is logical and and stays bool (PyTorch, NumPy, JAX)."""
    if type(a) in SUBCLASSES and (type(a._data) is np.ndarray and a._data.dtype.kind == "f" or
                                  a.dtype is not dt.bool_):
        return _binary("mul", a, b, "arith")         # (not two bools)
    if _all_bool(a, b):
        return _binary("minimum", a, b, "any")
    return _binary("mul", a, b, "arith")


def div(a, b, *, rounding_mode: str | None = None):
    """a / b (true division: integers give float32); rounding_mode="floor" is floor_divide,
    "trunc" rounds toward 0 (integers stay integers), both with a zero gradient, as torch."""
    if rounding_mode is None:
        return _binary("div", a, b, "float")
    if rounding_mode == "floor":
        return floor_divide(a, b)
    if rounding_mode != "trunc":
        raise _err("div", f"div expected rounding_mode to be one of None, 'trunc', or 'floor' "
                   f"but found {rounding_mode!r}", RuntimeError)
    _int_divisor_check("div", a, b)
    if not (_float_operand(a) or _float_operand(b)):
        # a - fmod(a, b) is an exact multiple of b (never past a): its floor quotient is a/b's
        # truncation
        return floor_divide(sub(a, fmod(a, b)), b)
    return trunc_division(a, b)


def trunc_division(a, b):
    """trunc(a / b) with torch's zero gradients: math_ops.py installs it (it needs trunc and
    the exact-gradient helper there, and math_ops imports this module)."""
    raise NotImplementedError("tracer.math_ops installs trunc_division")


def _float_operand(x) -> bool:
    return isinstance(x, float) or isinstance(x, Tensor) and x.dtype.is_float


def _int_divisor_check(op: str, a, b) -> None:
    """torch's CPU kernels raise on an integer division by zero; eagerly, so does tracejit
    (in a trace the values are unknown and the generated code gives 0, NumPy's answer)."""
    if _float_operand(a) or _float_operand(b) or isinstance(a, Tensor) and 0 in a.shape:
        return                    # (an empty dividend divides nothing)
    data = b._data if isinstance(b, Tensor) else b
    if isinstance(data, (np.ndarray, numbers.Integral)) and not np.all(data):
        raise _err(op, f"ZeroDivisionError: integer division by zero ({_fmt(a)} by "
                   f"{_fmt(b)})", RuntimeError)


@autocast_op(FP32)
def pow(a, b):       # noqa: A001
    """a ** b, PyTorch's dtypes: integers (and bools, as int64) give an integer power that
    wraps on overflow; a negative integer exponent gives 0 except for bases 1 and -1, and a
    negative Python int exponent of an integer tensor is an error. Floats give a float."""
    if _all_bool(a, b) and isinstance(b, Tensor) and not b._weak:
        # (torch: a bool tensor to a Python bool power is fine, a bool exponent tensor not)
        raise _err("pow", f"not implemented for two bool tensors or a bool to a bool tensor "
                   f"power ({_fmt(a)} ** {_fmt(b)})", TypeError)
    if isinstance(b, numbers.Integral) and not isinstance(b, (bool, np.bool_)) and b < 0 \
            and isinstance(a, Tensor) and not _pow_dtype(a, b).is_float:
        raise _err("pow", f"Integers to negative integer powers are not allowed "
                   f"({_fmt(a)} ** {b}); use a float base or exponent")
    if isinstance(a, Tensor) and a.dtype is dt.bool_ and (
            type(b) is bool or isinstance(b, Tensor) and b._weak and b.dtype is dt.bool_):
        # torch: a bool tensor to a Python bool power stays bool (computed as int64)
        return cast(_binary("pow", a, b, "pow"), dt.bool_)
    return _binary("pow", a, b, "pow")


def maximum(a, b): return _binary("maximum", a, b, "any")
def minimum(a, b): return _binary("minimum", a, b, "any")
def lt(a, b): return _binary("lt", a, b, "cmp")
def le(a, b): return _binary("le", a, b, "cmp")
def gt(a, b): return _binary("gt", a, b, "cmp")
def ge(a, b): return _binary("ge", a, b, "cmp")
def eq(a, b): return _binary("eq", a, b, "any")
def ne(a, b): return _binary("ne", a, b, "any")


def floor_divide(a, b):
    """a // b rounded toward -inf (Python's rule, as torch); integer division by zero raises
    eagerly (torch's CPU kernel's RuntimeError) and gives 0 in compiled code; int_min // -1
    wraps. No gradient."""
    _int_divisor_check("floor_divide", a, b)
    return _binary("floor_divide", a, b, "arith")


def remainder(a, b):
    """a % b with the sign of b (Python's rule, as torch.remainder); integer % 0 raises
    eagerly, as torch, and gives 0 in compiled code."""
    _int_divisor_check("remainder", a, b)
    return _binary("remainder", a, b, "arith")


def fmod(a, b):
    """C's fmod: the remainder of the truncated division, with the sign of a."""
    _int_divisor_check("fmod", a, b)
    return _binary("fmod", a, b, "arith")


def _unary(op: str, x, float_only: bool = False):
    if type(x) in SUBCLASSES:
        dx = x._data
        if type(dx) is np.ndarray and dx.dtype.kind == "f":        # (host floats: no lookup)
            return x.__tj_bind__(getattr(P, op), (x,), {})
        d = x.dtype
        if d.is_float or (not float_only and d is not dt.bool_):
            # the common case: nothing to cast or refuse (the Tensor binds it itself)
            return x.__tj_bind__(getattr(P, op), (x,), {})
    x = as_tensor(x)
    if float_only and not x.dtype.is_float:
        x = cast(x, dt.f32)
    elif x.dtype is dt.bool_ and op in ("neg", "abs"):     # PyTorch refuses both
        raise _err(op, f"not supported on a bool tensor ({_fmt(x)}); to invert a mask use ~ "
                   f"or logical_not", TypeError)
    elif x.dtype is dt.bool_ and op == "sign":
        return ne(x, False)             # PyTorch: sign of a bool is the bool (a new tensor)
    elif x.dtype is dt.bool_ and op not in ("stop_gradient",):
        x = cast(x, dt.i64)
    return bind(P.get(op), x)


def neg(x): return _unary("neg", x)
@autocast_op(FP32)
def exp(x): return _unary("exp", x, True)
@autocast_op(FP32)
def log(x): return _unary("log", x, True)
def sin(x): return _unary("sin", x, True)
def cos(x): return _unary("cos", x, True)
def tanh(x): return _unary("tanh", x, True)
def erf(x): return _unary("erf", x, True)
def erfc(x): return _unary("erfc", x, True)
def sqrt(x): return _unary("sqrt", x, True)
def abs(x): return _unary("abs", x)         # noqa: A001
def sign(x): return _unary("sign", x)
def stop_gradient(x): return as_tensor(x).detach()


def where(cond, a, b):
    like = next((x for x in (cond, a, b) if isinstance(x, Tensor) and x._traced), None)
    cond = as_tensor(cond, like=like)
    if cond.dtype is not dt.bool_:
        cond = ne(cond, 0)
    x, y = _operands("where", (a, b), result_dtype(a, b))
    try:
        shape = np.broadcast_shapes(cond.shape, x.shape)
    except ValueError:
        raise _err("where", f"condition {_fmt(cond)} does not broadcast with branches "
                   f"{_fmt(x)}") from None
    return bind(P.where, broadcast_to(cond, shape), broadcast_to(x, shape), broadcast_to(y, shape))


def logical_not(x): return eq(cast(x, dt.bool_), False)
def logical_and(a, b): return where(cast(a, dt.bool_), cast(b, dt.bool_), False)
def logical_or(a, b): return where(cast(a, dt.bool_), True, cast(b, dt.bool_))


def clip(x, min=None, max=None):     # noqa: A002
    """Clamp to [min, max] (max wins if min > max); the gradient passes where
    min <= x <= max (as torch.clamp). NaN wins, as in NumPy and PyTorch: a NaN in x or in a
    bound gives NaN, and x gets no gradient there. The result has torch's promoted dtype of x
    and the bounds (bool x with int bounds is int64, int x with float bounds float32): bounds
    cast to x's dtype made clamp(bool_t, -3, 3) all True and clamp(int_t, -1.5, 1.5) round
    the bounds, and clamp_ then raises as torch where the promoted type is not x's."""
    x = as_tensor(x)
    promoted = result_dtype(x, *(b for b in (min, max) if b is not None))
    if promoted is not x.dtype:
        x = cast(x, promoted)
    if x.dtype.is_float and (min is not None or max is not None) and \
            all(b is None or (type(b) in (float, int) and b == b) for b in (min, max)):
        # bounds that are Python numbers, not NaN (the common case): compared as numbers,
        # with no constant tensors and no NaN test of the bounds (two ops each before)
        y = x
        if min is not None:
            y = where(lt(y, min), min, y)
        if max is not None:
            y = where(gt(y, max), max, y)
        return rename(where(ne(x, x), float("nan"), y), "ClampBackward1")
    y = x
    nan_bound = None
    for bound, loses in ((min, lt), (max, gt)):
        if bound is None:
            continue
        b = as_tensor(bound, x.dtype, x)
        y = where(loses(y, b), b, y)
        if x.dtype.is_float:
            unordered = ne(b, b)
            nan_bound = unordered if nan_bound is None else logical_or(nan_bound, unordered)
    if not x.dtype.is_float or (min is None and max is None):
        return y
    # the comparisons above are false for NaN, which would pass x's NaN through as if it were
    # in range (with its gradient) and ignore a NaN bound
    nan = ne(x, x) if nan_bound is None else logical_or(ne(x, x), nan_bound)
    # torch's overloads: clamp(Tensor, Tensor) and clamp(Scalar, Scalar)
    return rename(where(nan, float("nan"), y), "ClampBackward0" if any(
        isinstance(b, Tensor) for b in (min, max)) else "ClampBackward1")


# -- reductions ---------------------------------------------------------------------------------
def _keep(x: Tensor, r: Tensor, axes, keepdims: bool) -> Tensor:
    if not keepdims:
        return r
    return reshape(r, tuple(1 if i in axes else d for i, d in enumerate(x.shape)))


def _kd(keepdims, keepdim):
    return bool(keepdim if keepdim is not None else keepdims)


@autocast_op(FP32)
def sum(x, axis=None, keepdims=False, *, dim=None, keepdim=None, dtype=None):  # noqa: A001
    x = as_tensor(x)
    if dtype is not None:
        x = cast(x, dtype)
    elif not x.dtype.is_float:
        x = cast(x, dt.i64)
    axes = _axes(x, axis, dim, "sum")
    out = _keep(x, bind(P.sum, x, axes=axes), axes, _kd(keepdims, keepdim))
    if out.grad_fn is not None and (axis is not None or dim is not None):
        rename(out, "SumBackward1", x)      # torch's sum(dim) overload, all dims or keepdim too
    return out


def _extreme(op: str, x, axis, keepdims, dim, keepdim):
    x = as_tensor(x)
    if x.dtype is dt.bool_:     # reduced as int64; the result stays bool, as PyTorch's
        return cast(_extreme(op, cast(x, dt.i64), axis, keepdims, dim, keepdim), dt.bool_)
    axes = _axes(x, axis, dim, "a" + op)
    return _keep(x, bind(P.get(op), x, axes=axes), axes, _kd(keepdims, keepdim))


def amax(x, axis=None, keepdims=False, *, dim=None, keepdim=None):
    """Maximum over axes (values only); ties share the gradient evenly. The user-facing
    `max`, which also gives indices, is in selection.py."""
    return _extreme("max", x, axis, keepdims, dim, keepdim)


def amin(x, axis=None, keepdims=False, *, dim=None, keepdim=None):
    return _extreme("min", x, axis, keepdims, dim, keepdim)


def pad(x, pad_width, value: float = 0.0) -> Tensor:
    """NumPy-style constant padding: pad_width is ((lo, hi), ...) per axis, or one (lo, hi)."""
    x = as_tensor(x)
    pw = np.broadcast_to(np.asarray(pad_width, dtype=np.int64).reshape(-1, 2)
                         if np.ndim(pad_width) else np.full((1, 2), pad_width), (x.ndim, 2))
    if (pw < 0).any():          # negative padding crops, as torch.nn.functional.pad
        cut = np.maximum(-pw, 0)
        if any(lo + hi > n for (lo, hi), n in zip(cut.tolist(), x.shape)):
            raise _err("pad", f"padding {pw.tolist()} crops more than all of {_fmt(x)}")
        x = bind(P.slice, x, starts=tuple(int(c) for c in cut[:, 0]),
                 stops=tuple(int(n - c) for n, c in zip(x.shape, cut[:, 1])),
                 steps=(1,) * x.ndim)
        pw = np.maximum(pw, 0)
    lo, hi = tuple(int(v) for v in pw[:, 0]), tuple(int(v) for v in pw[:, 1])
    out = bind(P.pad, x, lo=lo, hi=hi, interior=(0,) * x.ndim)
    if value != 0:
        mask = bind(P.pad, as_tensor(np.ones(x.shape, bool), like=x, const=True), lo=lo, hi=hi,
                    interior=(0,) * x.ndim)
        # the fill takes the input's dtype (as torch), never promotes it
        out = where(mask, out, as_tensor(value, out.dtype, like=out))
    return out
