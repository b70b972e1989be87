"""nn.LazyLinear and nn.UninitializedParameter: a Linear whose in_features is read from its
first input. Until then weight and bias are UninitializedParameter placeholders (empty; their
dtype and device follow .to() / .double() as a real parameter's would); the first eager call,
or load_state_dict, creates the real parameters (torch's reset_parameters) and the module
becomes a plain nn.Linear (torch's cls_to_become). Unlike torch, the real parameters are new
objects: build optimizers after the first call (torch recommends the same dry run)."""
from __future__ import annotations

from typing import Any, Mapping

from ..tracer import ops
from ..tracer.state import STATE
from ..tracer.tensor import Tensor
from .linear import Linear, new_parameter
from .parameter import Parameter


class UninitializedParameter(Parameter):
    """A parameter whose shape is not known yet (empty until materialized)."""

    def __repr__(self) -> str:
        return "<UninitializedParameter>"

    def __deepcopy__(self, memo: dict) -> "UninitializedParameter":
        p = UninitializedParameter(Tensor(self._data.copy()), self._requires_grad)
        memo[id(self)] = p
        return p


class LazyLinear(Linear):
    cls_to_become = Linear

    def __init__(self, out_features: int, bias: bool = True, device: Any = None,
                 dtype: Any = None) -> None:
        # Linear(0, out) builds (and initialises) empty parameters; swap in placeholders
        super().__init__(0, out_features, bias, device, dtype)
        self.weight = UninitializedParameter(new_parameter((0,), device, dtype))
        if bias:
            self.bias = UninitializedParameter(new_parameter((0,), device, dtype))

    def has_uninitialized_params(self) -> bool:
        return any(isinstance(p, UninitializedParameter) for p in (self.weight, self.bias))

    def reset_parameters(self) -> None:
        if self.in_features != 0 and not self.has_uninitialized_params():
            super().reset_parameters()

    def initialize_parameters(self, in_features: int) -> None:
        """Create weight [out_features, in_features] and bias with the placeholders' dtype
        and device, initialise them as Linear does, and become a Linear."""
        w = self.weight
        self.in_features = int(in_features)
        self.weight = Parameter(new_parameter((self.out_features, self.in_features), w.device,
                                              w.dtype), w.requires_grad)
        if self.bias is not None:
            b = self.bias
            self.bias = Parameter(new_parameter((self.out_features,), b.device, b.dtype),
                                  b.requires_grad)
        self.reset_parameters()
        self.__class__ = self.cls_to_become

    def forward(self, input: Tensor) -> Tensor:  # noqa: A002
        if self.has_uninitialized_params():
            x = ops.as_tensor(input)
            if STATE.traces:
                raise ops._err("LazyLinear", "its parameters are created at the first call, "
                               "which must run eagerly (not inside tj.compile / a trace): "
                               "call the module once, or load a state_dict, first",
                               RuntimeError)
            if x.ndim == 0:
                raise ops._err("LazyLinear", f"input {ops._fmt(x)} needs a feature dim",
                               RuntimeError)
            self.initialize_parameters(x.shape[-1])
        return Linear.forward(self, input)    # (self is a Linear now)

    def _load_local(self, state_dict: Mapping, prefix: str, *args: Any) -> None:
        # torch materializes an uninitialised parameter from the checkpoint's shape
        w = state_dict.get(prefix + "weight")
        if self.has_uninitialized_params() and w is not None and len(w.shape) == 2:
            self.initialize_parameters(w.shape[1])
        Linear._load_local(self, state_dict, prefix, *args)
