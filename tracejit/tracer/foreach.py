"""torch's `_foreach_*` list ops (`torch._foreach_lerp_(ema, params, 1 - decay)` in timm's and
diffusers' EMA updates, `_foreach_mul_`/`_foreach_add_` in hand-written optimizers, `_foreach_norm`
in gradient clipping): each applies its Tensor method to every tensor of a list.

The second operand is one number or 0-d tensor for all, or a list (of numbers or tensors, one
per tensor; their lengths must agree). In-place forms write each tensor as its method does
(views, version counters, autograd, and captures inside @tj.compile as for `t.add_`) and return
the list; the others return a tuple of new tensors, as torch."""
from __future__ import annotations

from typing import Any, Callable, Sequence

from ..ir.core import user_location
from .norms import vector_norm
from .tensor_base import TensorBase as Tensor

_BINARY = ("add", "sub", "mul", "div", "pow", "maximum", "minimum", "clamp_min", "clamp_max")
_UNARY = ("abs", "neg", "sqrt", "rsqrt", "exp", "log", "log1p", "expm1", "sigmoid", "sign",
          "reciprocal", "sin", "cos", "tanh", "floor", "ceil", "round", "trunc", "frac", "erf")
_TERNARY = ("lerp", "addcmul", "addcdiv")


def _tensors(op: str, xs: Any) -> list[Tensor]:
    if isinstance(xs, Tensor) or not isinstance(xs, (list, tuple)) or \
            not all(isinstance(x, Tensor) for x in xs):
        raise TypeError(f"{op}: expects a list or tuple of tensors, got "
                        f"{type(xs).__name__} (at {user_location()})")
    return list(xs)


def _per_tensor(op: str, n: int, arg: Any) -> list[Any]:
    """`arg` once per tensor: a list is zipped (same length), anything else repeated."""
    if isinstance(arg, (list, tuple)):
        if len(arg) != n:
            kind = "tensors" if arg and isinstance(arg[0], Tensor) else "scalars"
            raise RuntimeError(f"{op}: the tensor list has {n} tensors but the list of {kind} "
                               f"has {len(arg)} (at {user_location()})")
        return list(arg)
    return [arg] * n


def _apply(op: str, name: str, inplace: bool, xs, args, kwargs, values=None) -> Any:
    xs = _tensors(op, xs)
    columns = [_per_tensor(op, len(xs), a) for a in args]
    if values is not None:
        values = _per_tensor(op, len(xs), values)
    out = []
    for i, x in enumerate(xs):
        row = [c[i] for c in columns]
        if values is not None:
            kwargs = {**kwargs, "value": values[i]}
        if inplace:
            method = getattr(x, name + "_", None)
            if method is not None:
                method(*row, **kwargs)
            else:                           # (maximum_, minimum_: no Tensor method in torch)
                x.copy_(getattr(x, name)(*row, **kwargs))
            out.append(x)
        else:
            out.append(getattr(x, name)(*row, **kwargs))
    return out if inplace else tuple(out)


def _make(name: str, inplace: bool, arity: int) -> Callable:
    op = f"_foreach_{name}{'_' if inplace else ''}"

    def foreach(self: Sequence[Tensor], *args, **kwargs):
        if name in ("addcmul", "addcdiv") and len(args) == 3:
            # (torch's positional `scalars`: one value per tensor, or one for all)
            *args, scalars = args
            return _apply(op, name, inplace, self, args, kwargs, values=scalars)
        if len(args) != arity:
            raise TypeError(f"{op}: expects {arity} operand(s) after the tensor list, got "
                            f"{len(args)} (at {user_location()})")
        return _apply(op, name, inplace, self, args, kwargs)
    foreach.__name__ = foreach.__qualname__ = op
    foreach.__doc__ = f"`Tensor.{name}{'_' if inplace else ''}` over a list of tensors."
    return foreach


def _foreach_zero_(self: Sequence[Tensor]) -> list[Tensor]:
    return _apply("_foreach_zero_", "zero", True, self, (), {})


def _foreach_copy_(self: Sequence[Tensor], src: Sequence[Tensor],
                   non_blocking: bool = False) -> list[Tensor]:
    return _apply("_foreach_copy_", "copy", True, self, (src,), {})


def _foreach_norm(self: Sequence[Tensor], ord: float = 2, dtype=None) -> tuple[Tensor, ...]:  # noqa: A002
    """Each tensor's vector `ord`-norm, a 0-d tensor each (torch.linalg.vector_norm)."""
    return tuple(vector_norm(x, ord, dtype=dtype) for x in _tensors("_foreach_norm", self))


_FUNCTIONS: dict[str, Callable] = {"_foreach_zero_": _foreach_zero_,
                                   "_foreach_copy_": _foreach_copy_,
                                   "_foreach_norm": _foreach_norm}
for _names, _arity in ((_BINARY, 1), (_UNARY, 0), (_TERNARY, 2)):
    for _n in _names:
        for _inplace in (False, True):
            _f = _make(_n, _inplace, _arity)
            _FUNCTIONS[_f.__name__] = _f
globals().update(_FUNCTIONS)
__all__ = sorted(_FUNCTIONS)
