"""Shape ops (reshape, broadcast_to, permute, squeeze, concatenate, stack, ...) as plain
copies; views.py wraps the user-level spellings so that they record views. ops.py re-exports
them: the op modules call them as `ops.reshape`."""
from __future__ import annotations

import math

import numpy as np

from ..ir.primitives import P, bind
from .forward_ad import FWD
from .operands import _axes, _err, _fmt, as_tensor, result_dtype
from .lazy_copies import LinkedCounter
from .node_names import rename
from .state import STATE
from .tensor_base import TensorBase as Tensor


def _resolve_shape(x: Tensor, shape) -> tuple[int, ...]:
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    shape = tuple(map(int, shape))       # (map: a generator here was a third of a reshape)
    n = x.numel()                        # (once: a product over the shape each time)
    holes = shape.count(-1)
    if holes:
        if holes > 1:
            raise _err("reshape", f"only one dimension can be -1, got {list(shape)}")
        rest = -math.prod(shape)         # the other sizes' product (the -1 flips its sign)
        if rest <= 0 or n % rest:
            raise _err("reshape", f"cannot reshape {_fmt(x)} to {list(shape)}")
        i = shape.index(-1)
        shape = shape[:i] + (n // rest,) + shape[i + 1:]
    if math.prod(shape) != n or (shape and min(shape) < 0):
        raise _err("reshape", f"cannot reshape {_fmt(x)} to {list(shape)}")
    return shape


def reshape(x, *shape) -> Tensor:
    x = as_tensor(x)
    shape = _resolve_shape(x, shape)
    return x if shape == x.shape else bind(P.reshape, x, shape=shape)


def broadcast_to(x, shape) -> Tensor:
    x = as_tensor(x)
    shape = tuple(shape)
    if x.shape == shape:
        return x
    lead = len(shape) - x.ndim
    if lead < 0 or any(d not in (1, shape[lead + i]) for i, d in enumerate(x.shape)):
        raise _err("broadcast_to", f"cannot broadcast {_fmt(x)} to {list(shape)}")
    # (a checkpoint listening for the tensors its function reads needs the dispatch too)
    if type(x._data) is np.ndarray and not x._captured() and not FWD.levels and not (
            x._requires_grad and (STATE.grad_enabled or STATE.reads is not None)):
        out = Tensor(np.broadcast_to(x._data, shape))     # eager, no gradient: a read-only view
        out._vc = LinkedCounter(x._version)     # (of x's memory: see lazy_copies)
        return out
    return bind(P.broadcast, x, shape=shape)


def expand(x, *shape) -> Tensor:
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    lead = len(shape) - x.ndim
    shape = tuple(x.shape[i - lead] if s == -1 else s for i, s in enumerate(shape))
    return broadcast_to(x, shape)


def permute(x, *perm) -> Tensor:
    x = as_tensor(x)
    if len(perm) == 1 and isinstance(perm[0], (tuple, list)):
        perm = tuple(perm[0])
    perm = tuple(p % x.ndim if x.ndim else p for p in perm)
    if sorted(perm) != list(range(x.ndim)):
        raise _err("permute", f"{list(perm)} is not a permutation of the axes of {_fmt(x)}")
    return x if perm == tuple(range(x.ndim)) else bind(P.transpose, x, perm=perm)


def swapaxes(x, a: int, b: int) -> Tensor:
    x = as_tensor(x)
    if x.ndim == 0:             # PyTorch accepts dims 0 and -1 of a 0-d tensor
        _axes(x, a, None, "transpose"), _axes(x, b, None, "transpose")     # range checks
        return x
    a, b = _axes(x, a, None, "transpose")[0], _axes(x, b, None, "transpose")[0]
    perm = list(range(x.ndim))
    perm[a], perm[b] = perm[b], perm[a]
    return rename(permute(x, tuple(perm)), "TransposeBackward0", x)


def transpose(x, *axes) -> Tensor:
    """NumPy style `transpose(x, axes=None)` or PyTorch style `transpose(x, dim0, dim1)`."""
    x = as_tensor(x)
    if len(axes) == 2 and all(isinstance(a, int) for a in axes):
        return swapaxes(x, *axes)
    if not axes or axes[0] is None:
        return permute(x, tuple(reversed(range(x.ndim))))
    return permute(x, *axes)


def squeeze(x, axis=None, *, dim=None) -> Tensor:
    x = as_tensor(x)
    given = axis if dim is None else dim
    axes = [a for a, d in enumerate(x.shape) if d == 1] if given is None \
        else [a for a in _axes(x, axis, dim, "squeeze") if x.shape[a] == 1]
    out = reshape(x, tuple(d for i, d in enumerate(x.shape) if i not in axes))
    # torch's overloads: squeeze(), squeeze(dim), squeeze(dims)
    return rename(out, "SqueezeBackward0" if given is None else "SqueezeBackward2"
                  if isinstance(given, (tuple, list)) else "SqueezeBackward1", x)


def unsqueeze(x, dim: int) -> Tensor:
    x = as_tensor(x)
    if not -(x.ndim + 1) <= dim <= x.ndim:       # (was: wrapped silently to another place)
        raise _err("unsqueeze", f"dim {dim} is out of range [{-(x.ndim + 1)}, {x.ndim}] for "
                   f"{_fmt(x)}", IndexError)
    dim = dim % (x.ndim + 1)
    return rename(reshape(x, x.shape[:dim] + (1,) + x.shape[dim:]), "UnsqueezeBackward0", x)


def flatten(x, start_dim: int = 0, end_dim: int = -1) -> Tensor:
    x = as_tensor(x)
    if x.ndim == 0:
        return reshape(x, (1,))
    s, e = start_dim % x.ndim, end_dim % x.ndim
    return reshape(x, x.shape[:s] + (math.prod(x.shape[s:e + 1]),) + x.shape[e + 1:])


def concatenate(xs, axis: int = 0, *, dim=None) -> Tensor:
    xs = list(xs)
    if not xs:
        raise _err("concatenate", "needs at least one tensor")
    d = result_dtype(*xs)
    like = next((x for x in xs if isinstance(x, Tensor) and x._traced), None)
    ts = [as_tensor(x, d, like) for x in xs]
    axis = (dim if dim is not None else axis)
    if ts[0].ndim == 0:
        raise _err("concatenate", "zero-dimensional tensors cannot be concatenated")
    axis %= ts[0].ndim
    return bind(P.concatenate, *ts, axis=axis)


cat = concatenate


def stack(xs, axis: int = 0, *, dim=None) -> Tensor:
    axis = dim if dim is not None else axis
    xs = [as_tensor(x) for x in xs]
    if not xs:
        raise _err("stack", "needs at least one tensor")
    if len({x.shape for x in xs}) != 1:
        raise _err("stack", "all tensors must have the same shape, got "
                   + ", ".join(_fmt(x) for x in xs))
    return rename(concatenate([unsqueeze(x, axis) for x in xs], axis % (xs[0].ndim + 1)),
                  "StackBackward0")
