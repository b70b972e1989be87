"""torch.nn.functional's bilinear, max_pool1d/2d_with_indices and max_unpool1d/2d, composed
from existing ops (matmul; max_pool with return_indices; scatter)."""
from __future__ import annotations

from typing import Any

from ..tracer import ops
from ..tracer.conv import max_pool2d
from ..tracer.creation import zeros
from ..tracer.gathering import scatter_add
from ..tracer.index_ops import scatter
from ..tracer.tensor import Tensor
from .functional_1d import max_pool1d

__all__ = ["bilinear", "max_pool1d_with_indices", "max_pool2d_with_indices", "max_unpool1d",
           "max_unpool2d"]


def bilinear(input1: Tensor, input2: Tensor, weight: Tensor,
             bias: Tensor | None = None) -> Tensor:
    """y[..., o] = sum_ij x1[..., i] W[o, i, j] x2[..., j] + b[o]."""
    a, b, w = ops.as_tensor(input1), ops.as_tensor(input2), ops.as_tensor(weight)
    if w.ndim != 3 or a.ndim == 0 or a.shape[-1] != w.shape[1] or b.ndim == 0 or \
            b.shape[-1] != w.shape[2] or a.shape[:-1] != b.shape[:-1]:
        raise ops._err("bilinear", f"input1 {ops._fmt(a)} and input2 {ops._fmt(b)} must have "
                       f"the same batch dims and last dims matching weight {ops._fmt(w)} "
                       f"(out_features, in1_features, in2_features)", RuntimeError)
    o, i, j = w.shape
    lead = a.shape[:-1]
    # x1 @ W as one matmul: (*, i) @ (i, o * j) -> (*, o, j), then contract j with x2
    t = ops.matmul(a, ops.reshape(ops.permute(w, (1, 0, 2)), (i, o * j)))
    t = ops.reshape(t, lead + (o, j))
    y = ops.sum(ops.mul(t, ops.unsqueeze(b, -2)), -1)
    if bias is not None:
        y = ops.add(y, bias)
    return y


def max_pool1d_with_indices(input: Tensor, kernel_size: Any, stride: Any = None,  # noqa: A002
                            padding: Any = 0, dilation: Any = 1, ceil_mode: bool = False,
                            return_indices: bool = True) -> tuple[Tensor, Tensor]:
    return max_pool1d(input, kernel_size, stride, padding, dilation, ceil_mode, True)


def max_pool2d_with_indices(input: Tensor, kernel_size: Any, stride: Any = None,  # noqa: A002
                            padding: Any = 0, dilation: Any = 1, ceil_mode: bool = False,
                            return_indices: bool = True) -> tuple[Tensor, Tensor]:
    return max_pool2d(input, kernel_size, stride, padding, dilation, ceil_mode, True)


def _tuple(v: Any, k: int) -> tuple[int, ...]:
    return (int(v),) * k if isinstance(v, int) else tuple(int(e) for e in v)


def _max_unpool(op: str, x: Tensor, indices: Tensor, k: int, kernel_size, stride, padding,
                output_size) -> Tensor:
    x, idx = ops.as_tensor(x), ops.as_tensor(indices)
    if x.ndim not in (k + 1, k + 2):
        raise ops._err(op, f"expected a {k + 1}D or {k + 2}D input, got {ops._fmt(x)}",
                       RuntimeError)
    if idx.shape != x.shape or not idx.dtype.is_int:
        raise ops._err(op, f"indices {ops._fmt(idx)} must be an integer tensor of the input's "
                       f"shape {ops._fmt(x)}", RuntimeError)
    ks = _tuple(kernel_size, k)
    st = ks if stride is None else _tuple(stride, k)
    pd = _tuple(padding, k)
    spatial_in = x.shape[-k:]
    default = tuple((n - 1) * s - 2 * p + q for n, s, p, q in zip(spatial_in, st, pd, ks))
    if output_size is None:
        size = default
    else:
        size = tuple(int(e) for e in output_size)[-k:]
        for d, (got, want, s) in enumerate(zip(size, default, st)):
            if not want - s < got < want + s:
                raise ops._err(op, f"invalid output_size {list(output_size)} (dim {d} must "
                               f"be between {want - s} and {want + s})", ValueError)
    lead = x.shape[:-k]
    flat_n = 1
    for e in size:
        flat_n *= e
    if 0 in lead:
        # nothing to write; a reshape keeps the input's autograd link (a compiled empty
        # scatter result came back without one)
        return ops.reshape(x, lead + size)
    n_in = 1
    for e in spatial_in:
        n_in *= e
    xf = ops.reshape(x, lead + (n_in,))         # (not -1: a batch of 0 leaves it ambiguous)
    ifl = ops.reshape(idx, lead + (n_in,))
    out = zeros(*(lead + (flat_n,)), dtype=x.dtype, device=x.device)
    # the scatter checks the indices against [0, H_out * W_out) (eagerly or when run)
    d = x.ndim - k
    # values: written (a duplicate index, from overlapping windows, holds one value twice, as
    # torch's); gradient: gathered for every input, duplicates too (torch's backward), which
    # is scatter_add's: its exact-zero difference with itself carries it
    added = scatter_add(out, d, ifl, xf)
    out = ops.add(scatter(out, d, ifl, ops.stop_gradient(xf)),
                  ops.sub(added, ops.stop_gradient(added)))
    return ops.reshape(out, lead + size)


def max_unpool1d(input: Tensor, indices: Tensor, kernel_size: Any,  # noqa: A002
                 stride: Any = None, padding: Any = 0,
                 output_size: Any = None) -> Tensor:
    """The inverse of max_pool1d: each value written at its index, zeros elsewhere."""
    return _max_unpool("max_unpool1d", input, indices, 1, kernel_size, stride, padding,
                       output_size)


def max_unpool2d(input: Tensor, indices: Tensor, kernel_size: Any,  # noqa: A002
                 stride: Any = None, padding: Any = 0,
                 output_size: Any = None) -> Tensor:
    """The inverse of max_pool2d (indices flat over H_out * W_out, as torch's)."""
    return _max_unpool("max_unpool2d", input, indices, 2, kernel_size, stride, padding,
                       output_size)
