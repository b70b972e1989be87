"""`nn.Parameter`: a leaf Tensor that a Module registers as a parameter.

A real subclass of Tensor (as torch's), so `isinstance(p, Tensor)` holds and
`isinstance(p, Parameter)` tells parameters apart. Every op on a Parameter returns a plain
Tensor, so the subclass never leaks into results."""
from __future__ import annotations

from typing import Any

import numpy as np

from ..tracer.tensor import Tensor
from ..tracer.view_writes import writable_alias
from ..tracer.views import ViewOf


class Parameter(Tensor):
    # no __slots__: like torch's, a Parameter takes ad-hoc attributes (p._no_weight_decay = True)

    def __init__(self, data: Any = None, requires_grad: bool = True) -> None:
        if data is None:
            arr = np.empty((0,), np.float32)
        elif isinstance(data, Tensor):
            if data._traced:
                raise RuntimeError("nn.Parameter: cannot make a parameter from a tensor traced "
                                   "inside @tj.compile; create parameters outside the function")
            rec = getattr(data, "_view", None)
            # shares storage with `data`, as torch: a view's array is a read-only alias of
            # its base's memory (a lazy copy to other code), which the parameter may write
            alias = writable_alias(data, rec.root) if type(rec) is ViewOf else None
            arr = alias if alias is not None else data._own()
        else:
            arr = np.asarray(data)
        super().__init__(arr)
        self._born_in = None              # a parameter is never a constant of some trace
        if requires_grad:
            self.requires_grad_(True)

    def __repr__(self) -> str:
        return "Parameter containing:\n" + super().__repr__()

    def __reduce_ex__(self, protocol):
        return (Parameter, (Tensor(np.array(self.detach()._host("pickling a Parameter"))),
                            self._requires_grad))

    def __deepcopy__(self, memo: dict) -> "Parameter":
        if id(self) in memo:
            return memo[id(self)]
        arr = self._data.copy()
        p = Parameter(Tensor(arr), self._requires_grad)
        memo[id(self)] = p
        return p
