"""Stacking, splitting and axis moves composed from existing primitives, in PyTorch's
spelling: `hstack`/`vstack`/`dstack`/`column_stack`, `atleast_1d/2d/3d`, `tensor_split`/
`hsplit`/`vsplit`/`dsplit`, `movedim`/`moveaxis`, `select`, `index_select`, `rot90`,
`count_nonzero`, `square`, `rsqrt`, `repeat_interleave`, `cartesian_prod`."""
from __future__ import annotations

import numbers

import numpy as np

from ..ir import dtypes as dt
from ..ir.primitives import P, bind
from . import checks, ops
from .gathering import meshgrid
from .layout import _dim, _narrow, flip
from .node_names import rename
from .tensor_base import TensorBase as Tensor


# -- atleast_nd, stacks -------------------------------------------------------------------------
def _atleast(shapes_for, args):
    """One tensor -> one result; several (or a list) -> a tuple, as torch."""
    many = len(args) != 1 or isinstance(args[0], (list, tuple))
    xs = [ops.as_tensor(x) for x in (args[0] if len(args) == 1 and many else args)]
    out = tuple(ops.reshape(x, shapes_for(x.shape)) for x in xs)
    return out if many else out[0]


def atleast_1d(*tensors):
    return _atleast(lambda s: s if len(s) >= 1 else (1,), tensors)


def atleast_2d(*tensors):
    return _atleast(lambda s: s if len(s) >= 2 else (1,) * (2 - len(s)) + s, tensors)


def atleast_3d(*tensors):
    def shape(s):
        return {0: (1, 1, 1), 1: (1,) + s + (1,), 2: s + (1,)}.get(len(s), s)
    return _atleast(shape, tensors)


def _seq(op: str, tensors) -> list[Tensor]:
    if not isinstance(tensors, (list, tuple)) or not tensors:
        raise ops._err(op, "expects a non-empty list or tuple of tensors", TypeError)
    return list(tensors)


def hstack(tensors) -> Tensor:
    xs = atleast_1d(tuple(_seq("hstack", tensors)))
    return ops.concatenate(xs, 0 if all(x.ndim == 1 for x in xs) else 1)


def vstack(tensors) -> Tensor:
    return ops.concatenate(atleast_2d(tuple(_seq("vstack", tensors))), 0)


def dstack(tensors) -> Tensor:
    return ops.concatenate(atleast_3d(tuple(_seq("dstack", tensors))), 2)


def column_stack(tensors) -> Tensor:
    xs = [ops.as_tensor(x) for x in _seq("column_stack", tensors)]
    xs = [ops.reshape(x, (x.numel(), 1)) if x.ndim <= 1 else x for x in xs]
    return ops.concatenate(xs, 1)


# -- tensor_split and friends -------------------------------------------------------------------
def tensor_split(x, indices_or_sections, dim: int = 0) -> tuple[Tensor, ...]:
    """n nearly equal pieces (the first n % size one longer), or pieces between the listed
    indices (clamped as Python slices)."""
    x = ops.as_tensor(x)
    d = _dim("tensor_split", x, dim)
    n = x.shape[d]
    ios = indices_or_sections
    if isinstance(ios, Tensor):          # torch accepts a 0-d (sections) or 1-d (indices) one
        ios = ios._host("tensor_split's indices_or_sections given as a tensor").tolist()
    if isinstance(ios, numbers.Integral) and not isinstance(ios, bool):
        if ios <= 0:
            raise ops._err("tensor_split", f"number of sections must be larger than 0, got "
                           f"{ios}", RuntimeError)
        q, r = divmod(n, int(ios))
        bounds = np.cumsum([0] + [q + (i < r) for i in range(int(ios))]).tolist()
    else:
        idx = [int(i) for i in ios]
        bounds = [0] + idx + [n]
    out = []
    for a, b in zip(bounds[:-1], bounds[1:]):
        a, b, _ = slice(a, b).indices(n)
        out.append(_narrow(x, d, a, max(0, b - a)))
    return tuple(out)


def _split_dim(op: str, x: Tensor, sections, d: int, need: int):
    if x.ndim < need:
        raise ops._err(op, f"requires a tensor with at least {need} dimension(s), got "
                       f"{ops._fmt(x)}", RuntimeError)
    if isinstance(sections, numbers.Integral):
        if sections == 0 or x.shape[d] % sections:
            raise ops._err(op, f"attempted to split along dimension {d}, but the size of the "
                           f"dimension {x.shape[d]} is not divisible by the split_size "
                           f"{sections}!", RuntimeError)
    return tensor_split(x, sections, d)


def hsplit(x, sections) -> tuple[Tensor, ...]:
    x = ops.as_tensor(x)
    return _split_dim("hsplit", x, sections, 1 if x.ndim >= 2 else 0, 1)


def vsplit(x, sections) -> tuple[Tensor, ...]:
    return _split_dim("vsplit", ops.as_tensor(x), sections, 0, 2)


def dsplit(x, sections) -> tuple[Tensor, ...]:
    return _split_dim("dsplit", ops.as_tensor(x), sections, 2, 3)


# -- moving and picking axes --------------------------------------------------------------------
def movedim(x, source, destination) -> Tensor:
    """Move dims `source` to positions `destination`; the others keep their order."""
    x = ops.as_tensor(x)
    src = (source,) if isinstance(source, numbers.Integral) else tuple(source)
    dst = (destination,) if isinstance(destination, numbers.Integral) else tuple(destination)
    if len(src) != len(dst):
        raise ops._err("movedim", f"source {list(src)} and destination {list(dst)} must have "
                       f"the same number of dims", RuntimeError)
    if x.ndim == 0:
        ops._axes(x, src, None, "movedim"), ops._axes(x, dst, None, "movedim")
        return x
    s = [ops._axes(x, int(v), None, "movedim")[0] for v in src]
    t = [ops._axes(x, int(v), None, "movedim")[0] for v in dst]
    if len(set(s)) != len(s) or len(set(t)) != len(t):
        raise ops._err("movedim", f"repeated dim in source {list(src)} or destination "
                       f"{list(dst)}", RuntimeError)
    perm = [None] * x.ndim
    for a, b in zip(s, t):
        perm[b] = a
    rest = iter(i for i in range(x.ndim) if i not in s)
    perm = [p if p is not None else next(rest) for p in perm]
    return ops.permute(x, tuple(perm))


def select(x, dim: int, index: int) -> Tensor:
    """x indexed by `index` along dim, which disappears."""
    x = ops.as_tensor(x)
    d = _dim("select", x, dim)
    n = x.shape[d]
    i = int(index)
    if not -n <= i < n:
        raise ops._err("select", f"index {i} is out of range for dim {dim} of size {n} in "
                       f"{ops._fmt(x)}", IndexError)
    return rename(ops.reshape(_narrow(x, d, i % n, 1), x.shape[:d] + x.shape[d + 1:]),
                  "SelectBackward0", x)


def index_select(x, dim: int, index) -> Tensor:
    """The entries at the int `index` (0-d or 1-d) along dim; the gradient scatters back."""
    x = ops.as_tensor(x)
    idx = ops.as_tensor(index, like=x if x._traced else None)
    if not idx.dtype.is_int or idx.ndim > 1:
        raise ops._err("index_select", f"index must be a 0-d or 1-d integer tensor, got "
                       f"{ops._fmt(idx)}", IndexError)
    if x.ndim == 0:
        ops._axes(x, dim, None, "index_select")
        x1 = ops.reshape(x, (1,))
        return rename(ops.reshape(index_select(x1, 0, idx), ()), "IndexSelectBackward0", x)
    d = ops._axes(x, dim, None, "index_select")[0]
    n = x.shape[d]
    checks.rows_in_range(idx, n, "index_select", f"dim {dim} of size {n}")
    flat = ops.reshape(ops.cast(idx, dt.i64), (idx.numel(),))
    checks.in_bounds(flat, n)
    return rename(bind(P.gather, x, flat, axis=d), "IndexSelectBackward0")


def rot90(x, k: int = 1, dims=(0, 1)) -> Tensor:
    """Rotate by 90 degrees k times, from the first dim of `dims` toward the second."""
    x = ops.as_tensor(x)
    dims = tuple(dims)
    if len(dims) != 2 or x.ndim < 2:
        raise ops._err("rot90", f"expects 2 dims and a tensor of at least 2 dims, got dims "
                       f"{list(dims)} for {ops._fmt(x)}", RuntimeError)
    d0, d1 = (ops._axes(x, int(d), None, "rot90")[0] for d in dims)
    if d0 == d1:
        raise ops._err("rot90", f"dims {list(dims)} name the same dim", RuntimeError)
    k %= 4
    if k == 1:
        return ops.swapaxes(flip(x, (d1,)), d0, d1)
    if k == 2:
        return flip(x, (d0, d1))
    if k == 3:
        return ops.swapaxes(flip(x, (d0,)), d0, d1)
    return x.clone()                # (k % 4 == 0: a new tensor, as torch, not x itself)


def repeat_interleave(x, repeats, dim=None, *, output_size=None) -> Tensor:
    """Each element repeated `repeats` times along dim (of the flattened tensor when None).
    An int count is a broadcast between reshapes; per-element counts (a tensor) are read
    from the data, so they work eagerly only."""
    x = ops.as_tensor(x)
    if dim is None:
        x, d = ops.reshape(x, (x.numel(),)), 0
    else:
        d = _dim("repeat_interleave", x, dim)
    if isinstance(repeats, Tensor) and repeats.ndim == 0:
        repeats = int(repeats._host("repeat_interleave's repeats given as a tensor"))
    if isinstance(repeats, numbers.Integral):
        if repeats < 0:
            raise ops._err("repeat_interleave", f"repeats must be non-negative, got {repeats}",
                           RuntimeError)
        n = x.shape[d]
        spread = ops.reshape(x, x.shape[:d + 1] + (1,) + x.shape[d + 1:])
        full = ops.broadcast_to(spread, x.shape[:d + 1] + (int(repeats),) + x.shape[d + 1:])
        return ops.reshape(full, x.shape[:d] + (n * int(repeats),) + x.shape[d + 1:])
    counts = np.asarray(repeats._host("repeat_interleave's per-element repeats (the result's "
                                      "shape depends on the data)") if isinstance(repeats, Tensor)
                        else repeats, np.int64).reshape(-1)
    if counts.shape[0] != x.shape[d] or (counts < 0).any():
        raise ops._err("repeat_interleave", f"repeats must be non-negative, one per element of "
                       f"dim {dim} (size {x.shape[d]}), got {counts.tolist()}", RuntimeError)
    idx = np.repeat(np.arange(x.shape[d], dtype=np.int64), counts)
    return bind(P.gather, x, ops.as_tensor(idx, like=x, const=True), axis=d)


def cartesian_prod(*tensors) -> Tensor:
    """Every combination of the 1-d tensors' elements, one per row (a 1-d input as it is)."""
    if len(tensors) == 1:
        return ops.as_tensor(tensors[0])
    grids = meshgrid(*tensors, indexing="ij")
    return ops.stack([ops.reshape(g, (g.numel(),)) for g in grids], 1)


def count_nonzero(x, dim=None) -> Tensor:
    x = ops.as_tensor(x)
    return ops.sum(ops.ne(x, False if x.dtype is dt.bool_ else 0), dim)


def square(x) -> Tensor:
    x = ops.as_tensor(x)
    if x.dtype is dt.bool_:        # PyTorch: int64 (bool * bool alone stays bool)
        x = ops.cast(x, dt.i64)
    return rename(ops.mul(x, x), "PowBackward0", x)       # (torch's square is x ** 2)


def rsqrt(x) -> Tensor:
    return rename(ops.div(1.0, ops.sqrt(x)), "RsqrtBackward0", x)


def reciprocal(x) -> Tensor:
    """1 / x; integer and bool tensors give float32, as torch."""
    return rename(ops.div(1.0, ops.as_tensor(x)), "ReciprocalBackward0", x)
