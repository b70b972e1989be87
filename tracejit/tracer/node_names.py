"""PyTorch's names for eager backward nodes (`y.grad_fn.name()`), keyed by primitive name.

They are presentation of the eager autograd graph, so they live here in the tracer, not in the
IR registry. A primitive not listed is `<Name>Backward0` (add -> AddBackward0)."""
from __future__ import annotations

from typing import Callable, Sequence, Union

import numpy as np

from ..ir.core import Aval

NameRule = Union[str, Callable[[dict, list[Aval], Sequence[bool]], str]]


def _sum(params: dict, in_avals: list[Aval], requires: Sequence[bool]) -> str:
    # a full reduction to a scalar is SumBackward0, one over given dims SumBackward1
    return "SumBackward0" if len(params["axes"]) == in_avals[0].ndim else "SumBackward1"


def _matmul(params: dict, in_avals: list[Aval], requires: Sequence[bool]) -> str:
    return "MmBackward0" if in_avals[0].ndim == 2 else "BmmBackward0"


NODE_NAMES: dict[str, NameRule] = {
    "stop_gradient": "DetachBackward0",
    "cast": "ToCopyBackward0",
    "pow": "PowBackward1",
    "floor_divide": "FloorDivideBackward0",
    "sum": _sum,
    "max": "AmaxBackward0",
    "min": "AminBackward0",
    "reshape": "ViewBackward0",
    "broadcast": "ExpandBackward0",
    "transpose": "PermuteBackward0",        # what PyTorch names .T and .permute
    "pad": "ConstantPadNdBackward0",
    "concatenate": "CatBackward0",
    "gather": "IndexBackward0",
    "scatter_add": "ScatterAddBackward0",
    "matmul": _matmul,
    "windows": "Im2ColBackward0",
    "conv2d": "ConvolutionBackward0",
    "conv2d_input_grad": "ConvolutionBackwardBackward0",
    "conv2d_weight_grad": "ConvolutionBackwardBackward0",
    "conv3d": "ConvolutionBackward0",
    "conv3d_input_grad": "ConvolutionBackwardBackward0",
    "conv3d_weight_grad": "ConvolutionBackwardBackward0",
}

# primitive -> {operand index: node name} when that operand is a Python number: torch then
# calls its Scalar overload, whose node has no edge for the number (5 - t is RsubBackward1
# with one edge, t ** 2 is PowBackward0, 2 ** t is PowBackward2)
SCALAR_OVERLOADS: dict[str, dict[int, str]] = {
    "sub": {0: "RsubBackward1"},
    "pow": {1: "PowBackward0", 0: "PowBackward2"},
}


def node_name(prim_name: str, params: dict, in_avals: list[Aval],
              requires: Sequence[bool]) -> str:
    """The name PyTorch gives the backward node of primitive `prim_name`."""
    rule = NODE_NAMES.get(prim_name)
    if rule is None:
        return prim_name.capitalize() + "Backward0"
    return rule(params, in_avals, requires) if callable(rule) else rule


def scalar_overload(prim_name: str, operand: int) -> str | None:
    """The node name when `operand` of `prim_name` is a Python number, if torch has one."""
    return SCALAR_OVERLOADS.get(prim_name, {}).get(operand)


# -- names of ops built here of several primitives ------------------------------------------------
# The functions above name a node by its primitive. A user-facing op made of primitives (x[0]
# is a slice and a reshape, x.unsqueeze(0) a reshape) renames its last node to what torch
# calls its one node. Names are presentation only: nothing reads them but name() and errors.

def rename(out, name: str, x=None):
    """Give the node that made `out` the name `name`; nothing when out has no node, when its
    node is x's own (the op made no node: it returned x or a view with x's history) or when
    the node's class names itself. Returns out."""
    node = getattr(out, "grad_fn", None)
    if node is not None and (x is None or node is not getattr(x, "grad_fn", None)) and \
            hasattr(node, "_name"):
        node._name = name
    return out


def _whole(k: slice, n: int) -> bool:
    """Whether torch's indexing skips slice k of an axis of size n inside a tuple key: start
    0 (as given, not wrapped), step 1 and a stop at or past the end."""
    start, stop, step = k.start, k.stop, k.step
    return (start is None or start.__class__ is int and start == 0) and \
        (step is None or step.__class__ is int and step == 1) and \
        (stop is None or stop.__class__ is int and stop >= n)


def _is_int(k) -> bool:
    """A key element torch reads as one position (a select): an int, a NumPy integer or a 0-d
    integer tensor."""
    if isinstance(k, bool):
        return False
    if isinstance(k, (int, np.integer)):
        return True
    dtype = getattr(k, "dtype", None)
    return getattr(k, "ndim", None) == 0 and dtype is not None and \
        np.dtype(getattr(dtype, "np", dtype)).kind in "iu"


def index_node_name(key, shape: tuple) -> str:
    """torch's node name for x[key]: its indexing takes one step per key element (an int
    selects, a slice slices, None unsqueezes) and names its result by the last one; in a tuple
    key, slices that keep a whole axis take no step, and no step at all is an alias. An
    integer array or mask anywhere makes it an IndexBackward0."""
    if type(key) is not tuple:
        if key is None:
            return "UnsqueezeBackward0"
        if key is Ellipsis:
            return "AliasBackward0"
        if type(key) is slice:
            return "SliceBackward0"         # (a lone slice: a step even when it is whole)
        return "SelectBackward0" if _is_int(key) else "IndexBackward0"
    name = "AliasBackward0"
    axis = 0
    for k in key:
        tk = type(k)
        if tk is slice:         # (first: an LSTM's gate x[:, a:b] is named on every step)
            if axis >= len(shape) or not _whole(k, shape[axis]):
                name = "SliceBackward0"
            axis += 1
        elif tk is int:
            name = "SelectBackward0"
            axis += 1
        elif k is None:
            name = "UnsqueezeBackward0"
        elif k is Ellipsis:
            axis += len(shape) - sum(1 for k in key if k is not None and k is not Ellipsis)
        elif _is_int(k):
            name = "SelectBackward0"
            axis += 1
        else:
            return "IndexBackward0"
    return name


def matmul_node_name(a_ndim: int, b_ndim: int, a_requires_grad: bool) -> str:
    """torch's node name for a @ b: dot, mv and mm have their own; a vector times a matrix
    ends in a squeeze; every batched product ends in torch's reshape of its bmm's result
    (UnsafeViewBackward0), but a matrix times a batch whose matrix requires grad is computed
    as the transposed product, ending in a copy (CloneBackward0)."""
    if a_ndim <= 2 and b_ndim <= 2:
        return ("DotBackward0", "SqueezeBackward4", "MvBackward0", "MmBackward0")[
            2 * (a_ndim - 1) + b_ndim - 1]
    if a_ndim == 2 and a_requires_grad:
        return "CloneBackward0"
    return "UnsafeViewBackward0"
