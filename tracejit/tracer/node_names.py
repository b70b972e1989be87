"""PyTorch's names for eager backward nodes (`y.grad_fn.name()`), keyed by primitive name.

They are presentation of the eager autograd graph, so they live here in the tracer, not in the
IR registry. A primitive not listed is `<Name>Backward0` (add -> AddBackward0)."""
from __future__ import annotations

from typing import Callable, Sequence, Union

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
