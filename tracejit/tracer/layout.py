"""Shape and layout ops composed from existing primitives, in PyTorch's spelling: `split`,
`chunk`, `unbind`, `narrow`, `repeat`, `tile`, `flip`, `roll`, `bmm`, `t`, and the Tensor
conveniences `expand_as`/`view_as`/`reshape_as`/`type_as` and `new_zeros`/`new_ones`/
`new_full`/`new_empty`/`new_tensor`.

Pieces are slices (`split`, `roll`), a broadcast between two reshapes (`repeat`), or a gather
whose reversed positions come from the iota primitive (`flip`), so no O(n) constant is baked
into a trace and every gradient comes from the primitives' own rules.
"""
from __future__ import annotations

import numbers
from typing import Sequence

from ..ir import dtypes as dt
from ..ir.primitives import P, bind
from . import creation, ops
from .composites import composite
from .copies import clone
from .host_views import eager_host, host_view
from .node_names import rename
from .selection import positions
from .tensor_base import TensorBase as Tensor


def _dim(op: str, x: Tensor, dim) -> int:
    """One dim of x (negative counts from the end), range-checked with the op's name."""
    if isinstance(dim, bool) or not isinstance(dim, numbers.Integral):
        raise ops._err(op, f"dim must be an int, got {dim!r}", TypeError)
    if x.ndim == 0:
        raise ops._err(op, f"expects at least a 1-dimensional tensor, got {ops._fmt(x)}",
                       RuntimeError)
    return ops._axes(x, int(dim), None, op)[0]


def _dims(op: str, x: Tensor, dims) -> tuple[int, ...]:
    dims = (dims,) if isinstance(dims, numbers.Integral) else tuple(dims)
    if x.ndim == 0:            # PyTorch lets 0-d tensors name dim 0 or -1
        ops._axes(x, dims, None, op)
        return ()
    axes = [ops._axes(x, int(d), None, op)[0] for d in dims]
    if len(set(axes)) != len(axes):
        raise ops._err(op, f"dims {list(dims)} name an axis more than once", RuntimeError)
    return tuple(axes)


def _sizes(args) -> tuple[int, ...]:
    """`f(2, 3)` or `f((2, 3))`, as PyTorch's size arguments."""
    if len(args) == 1 and isinstance(args[0], (tuple, list)):
        args = tuple(args[0])
    return tuple(int(s) for s in args)


def _narrow(x: Tensor, d: int, start: int, length: int) -> Tensor:
    if not x._requires_grad and eager_host(x):      # NumPy's view: no primitive to apply
        return host_view(x._data[(slice(None),) * d + (slice(start, start + length),)])
    starts = [0] * x.ndim
    stops = list(x.shape)
    starts[d], stops[d] = start, start + length
    # (tuples: hashable params take eager's inference cache without an exception)
    return bind(P.slice, x, starts=tuple(starts), stops=tuple(stops), steps=(1,) * x.ndim)


# -- split, chunk, unbind, narrow -----------------------------------------------------------------
def split(x, split_size_or_sections, dim: int = 0) -> tuple[Tensor, ...]:
    """Pieces of `split_size` along dim (the last one smaller), or of the listed sizes."""
    x = ops.as_tensor(x)
    d = _dim("split", x, dim)
    n = x.shape[d]
    s = split_size_or_sections
    if isinstance(s, (tuple, list)):
        sizes = [int(v) for v in s]
        if any(v < 0 for v in sizes) or sum(sizes) != n:
            raise ops._err("split", f"split sizes {sizes} must be non-negative and sum to "
                           f"{n}, the size of dim {dim} of {ops._fmt(x)}", RuntimeError)
    else:
        if isinstance(s, bool) or not isinstance(s, numbers.Integral):
            raise ops._err("split", f"split_size must be an int or a list of ints, got {s!r}",
                           TypeError)
        s = int(s)
        if s < 0 or (s == 0 and n > 0):
            raise ops._err("split", f"split_size must be positive (0 only for an empty dim), "
                           f"got {s} for dim {dim} of {ops._fmt(x)}", RuntimeError)
        sizes = [min(s, n - a) for a in range(0, n, s)] if n else [0]
    # torch's one node for all the pieces has the name of its overload
    name = "SplitWithSizesBackward0" if isinstance(s, (tuple, list)) else "SplitBackward0"
    out, start = [], 0
    for size in sizes:
        out.append(rename(_narrow(x, d, start, size), name, x))
        start += size
    return tuple(out)


def chunk(x, chunks: int, dim: int = 0) -> tuple[Tensor, ...]:
    """At most `chunks` pieces of ceil(n / chunks) along dim (fewer when they run out, as
    PyTorch; `chunks` empty pieces of an empty dim)."""
    x = ops.as_tensor(x)
    if isinstance(chunks, bool) or not isinstance(chunks, numbers.Integral) or chunks <= 0:
        raise ops._err("chunk", f"chunks must be a positive int, got {chunks!r}", RuntimeError)
    d = _dim("chunk", x, dim)
    n = x.shape[d]
    if n == 0:
        return tuple(_narrow(x, d, 0, 0) for _ in range(chunks))
    return split(x, -(-n // chunks), d)


def unbind(x, dim: int = 0) -> tuple[Tensor, ...]:
    """The slices along dim, with dim removed."""
    x = ops.as_tensor(x)
    d = _dim("unbind", x, dim)
    if not x._requires_grad and eager_host(x):      # NumPy's views: no primitive to apply
        a = x._data
        return tuple(host_view(a[(slice(None),) * d + (i, Ellipsis)]) for i in range(a.shape[d]))
    keep = x.shape[:d] + x.shape[d + 1:]
    return tuple(rename(ops.reshape(_narrow(x, d, i, 1), keep), "UnbindBackward0", x)
                 for i in range(x.shape[d]))


def narrow(x, dim: int, start: int, length: int) -> Tensor:
    x = ops.as_tensor(x)
    d = _dim("narrow", x, dim)
    n = x.shape[d]
    start = int(start) + (n if int(start) < 0 else 0)
    if not (0 <= start <= n and 0 <= length and start + length <= n):
        raise ops._err("narrow", f"start {start} + length {length} exceeds dim {dim} of "
                       f"{ops._fmt(x)}", IndexError)
    return _narrow(x, d, start, int(length))


# -- repeat, tile -------------------------------------------------------------------------------
@composite("RepeatBackward0")
def _repeat(x: Tensor, reps: tuple[int, ...]) -> Tensor:
    x = ops.reshape(x, (1,) * (len(reps) - x.ndim) + x.shape)
    # (r0, s0, r1, s1, ...): each axis of x sits after its repeat count, so the row-major
    # merge of each pair lays the copies end to end as torch.repeat does
    spread = ops.reshape(x, tuple(v for s in x.shape for v in (1, s)))
    full = ops.broadcast_to(spread, tuple(v for r, s in zip(reps, x.shape) for v in (r, s)))
    return ops.reshape(full, tuple(r * s for r, s in zip(reps, x.shape)))


def repeat(x, *sizes) -> Tensor:
    """PyTorch's Tensor.repeat: the whole tensor copied sizes[i] times along each dim (new
    leading dims when there are more sizes than dims)."""
    x = ops.as_tensor(x)
    reps = _sizes(sizes)
    if len(reps) < x.ndim:
        raise ops._err("repeat", f"number of repeat sizes {list(reps)} can not be smaller than "
                       f"the number of dimensions of {ops._fmt(x)}", RuntimeError)
    if any(r < 0 for r in reps):
        raise ops._err("repeat", f"repeat sizes must be non-negative, got {list(reps)}",
                       RuntimeError)
    return _repeat(x, reps)


def tile(x, dims) -> Tensor:
    """torch.tile: as repeat, with missing leading counts taken as 1."""
    x = ops.as_tensor(x)
    reps = _sizes((dims,) if isinstance(dims, numbers.Integral) else tuple(dims))
    return repeat(x, (1,) * (x.ndim - len(reps)) + reps)


# -- flip, roll ---------------------------------------------------------------------------------
@composite("FlipBackward0")
def _flip(x: Tensor, axes: tuple[int, ...]) -> Tensor:
    y = x
    for d in axes:
        n = x.shape[d]
        if n > 1:
            rev = ops.sub(n - 1, positions(x, (n,), 0))
            y = bind(P.gather, y, rev, axis=d)
    if y is x:      # nothing to reverse: still a new tensor, never x itself (torch copies; in a
        #            trace x itself would follow x's later in-place ops)
        y = ops.eq(x, True) if x.dtype is dt.bool_ else \
            ops.add(x, -0.0 if x.dtype.is_float else 0)
    return y


def flip(x, *args, dims=None) -> Tensor:
    """Reverse the order of elements along `dims` (a tuple, or ints as Tensor.flip(0, 1))."""
    x = ops.as_tensor(x)
    if dims is None:
        if not args:
            raise ops._err("flip", "missing the dims to flip", TypeError)
        dims = args[0] if len(args) == 1 else args
    axes = _dims("flip", x, dims)
    return _flip(x, axes)


def fliplr(x) -> Tensor:
    x = ops.as_tensor(x)
    if x.ndim < 2:
        raise ops._err("fliplr", f"input must be >= 2-d, got {ops._fmt(x)}", RuntimeError)
    return _flip(x, (1,))


def flipud(x) -> Tensor:
    x = ops.as_tensor(x)
    if x.ndim < 1:
        raise ops._err("flipud", f"input must be >= 1-d, got {ops._fmt(x)}", RuntimeError)
    return _flip(x, (0,))


@composite("RollBackward0")
def _roll(x: Tensor, shifts: tuple[int, ...], axes: tuple[int, ...]) -> Tensor:
    x0 = x
    for s, d in zip(shifts, axes):
        n = x.shape[d]
        if n == 0 or s % n == 0:
            continue
        s %= n
        x = ops.concatenate([_narrow(x, d, n - s, s), _narrow(x, d, 0, n - s)], d)
    # (a roll that moves nothing is still a copy, as torch's: an in-place op on either side
    # must not reach the other)
    return clone(x) if x is x0 else x


def roll(x, shifts, dims=None) -> Tensor:
    """Shift elements along dims circularly; without dims, of the flattened tensor."""
    x = ops.as_tensor(x)
    shifts = (shifts,) if isinstance(shifts, numbers.Integral) else tuple(shifts)
    if dims is None:
        if len(shifts) != 1:
            raise ops._err("roll", f"shifts {list(shifts)} need dims (one per shift)",
                           RuntimeError)
        flat = ops.reshape(x, (x.numel(),))
        return rename(ops.reshape(_roll(flat, (int(shifts[0]),), (0,)), x.shape),
                      "RollBackward0", x)
    dims = (dims,) if isinstance(dims, numbers.Integral) else tuple(dims)
    if len(shifts) != len(dims):
        raise ops._err("roll", f"shifts {list(shifts)} and dims {list(dims)} must have the "
                       f"same length", RuntimeError)
    if x.ndim == 0:
        _dims("roll", x, dims)
        return clone(x)
    # unlike flip, roll may name a dim twice (the shifts add up)
    axes = tuple(ops._axes(x, int(d), None, "roll")[0] for d in dims)
    return _roll(x, tuple(int(s) for s in shifts), axes)


# -- matrix helpers -----------------------------------------------------------------------------
def bmm(a, b) -> Tensor:
    """Batched matrix product of two 3-d tensors with equal batch sizes (no broadcasting)."""
    a, b = ops.as_tensor(a), ops.as_tensor(b)
    if a.ndim != 3 or b.ndim != 3:
        raise ops._err("bmm", f"both operands must be 3-d, got {ops._fmt(a)} and {ops._fmt(b)}",
                       RuntimeError)
    if a.shape[0] != b.shape[0] or a.shape[2] != b.shape[1]:
        raise ops._err("bmm", f"shapes {ops._fmt(a)} and {ops._fmt(b)} do not match "
                       f"(batch sizes must be equal and a.shape[2] == b.shape[1])", RuntimeError)
    return rename(ops.matmul(a, b), "BmmBackward0")


def t(x) -> Tensor:
    """Transpose of a tensor of at most 2 dims (0-d and 1-d ones are returned as they are)."""
    x = ops.as_tensor(x)
    if x.ndim > 2:
        raise ops._err("t", f"expects a tensor with <= 2 dimensions, got {ops._fmt(x)}",
                       RuntimeError)
    return rename(ops.swapaxes(x, 0, 1), "TBackward0", x) if x.ndim == 2 else x


# -- Tensor conveniences ------------------------------------------------------------------------
def expand_as(self: Tensor, other: Tensor) -> Tensor:
    return ops.broadcast_to(self, other.shape)


def view_as(self: Tensor, other: Tensor) -> Tensor:
    return ops.reshape(self, other.shape)


def type_as(self: Tensor, other: Tensor) -> Tensor:
    return ops.cast(self, other.dtype)


def _new_full(self: Tensor, size: Sequence[int], fill_value, dtype=None, device=None,
              requires_grad: bool = False) -> Tensor:
    """A new tensor with self's dtype and device unless given (never traced: a constant)."""
    return creation.full(tuple(int(s) for s in size), fill_value, dtype or self.dtype,
                         requires_grad, self.device if device is None else device)


def new_filled(value):
    def new(self: Tensor, *size, dtype=None, device=None, requires_grad: bool = False,
            layout=None, pin_memory: bool = False) -> Tensor:
        return _new_full(self, _sizes(size), value, dtype, device, requires_grad)
    return new


def new_full(self: Tensor, size, fill_value, *, dtype=None, device=None,
             requires_grad: bool = False, layout=None, pin_memory: bool = False) -> Tensor:
    return _new_full(self, size, fill_value, dtype, device, requires_grad)


def new_tensor(self: Tensor, data, *, dtype=None, device=None, requires_grad: bool = False,
               layout=None, pin_memory: bool = False) -> Tensor:
    """A copy of `data` (a tensor's value is copied, detached) with self's dtype and device
    unless given."""
    return creation.tensor(data, dtype or self.dtype, requires_grad,
                           self.device if device is None else device)
