"""The padding layers of torch.nn (ZeroPad, ConstantPad, ReflectionPad, ReplicationPad,
CircularPad in 1d and 2d), each a thin module over F.pad with torch's argument forms (an int
for every side, or a tuple (left, right[, top, bottom])), its repr and its input-rank checks."""
from __future__ import annotations

from typing import Sequence

from ..tracer import ops
from ..tracer.tensor import Tensor
from . import functional as F
from .module import Module


def _ntuple(padding: int | Sequence[int], k: int, name: str) -> tuple[int, ...]:
    """torch's _pair/_quadruple: an int pads every side; a sequence must have 2 * k entries."""
    if isinstance(padding, int):
        return (int(padding),) * (2 * k)
    pad = tuple(int(p) for p in padding)
    if len(pad) != 2 * k:
        raise ValueError(f"{name}: padding must be an int or a tuple of {2 * k} ints, "
                         f"got {padding!r}")
    return pad


class _PadNd(Module):
    _k = 1                     # how many trailing dims are padded
    _mode = "constant"

    def __init__(self, padding: int | Sequence[int]) -> None:
        super().__init__()
        self.padding = _ntuple(padding, self._k, type(self).__name__)

    def _check(self, x: Tensor) -> None:
        """Non-constant modes take an unbatched (k + 1)-D or a batched (k + 2)-D input whose
        dims other than the batch are non-empty, as torch's kernels."""
        k, name = self._k, type(self).__name__
        if x.ndim not in (k + 1, k + 2):
            raise ops._err(name, f"expected {k + 1}D or {k + 2}D input (got {x.ndim}D input "
                           f"{ops._fmt(x)})", ValueError)
        inner = x.shape[1:] if x.ndim == k + 2 else x.shape
        if self._mode != "circular" and 0 in inner:
            raise ops._err(name, f"expected {k + 1}D or {k + 2}D (batch mode) tensor with "
                           f"possibly 0 batch size and other non-zero dimensions for input, "
                           f"but got {ops._fmt(x)}", RuntimeError)

    def forward(self, input: Tensor) -> Tensor:  # noqa: A002
        x = F._t(input)
        self._check(x)
        return F.pad(x, self.padding, self._mode)

    def extra_repr(self) -> str:
        return f"{self.padding}"


class _ConstantPadNd(_PadNd):
    def __init__(self, padding: int | Sequence[int], value: float) -> None:
        super().__init__(padding)
        self.value = float(value)

    def forward(self, input: Tensor) -> Tensor:  # noqa: A002
        # constant padding takes any rank of at least len(padding) / 2 (F.pad checks that)
        return F.pad(F._t(input), self.padding, "constant", self.value)

    def extra_repr(self) -> str:
        return f"padding={self.padding}, value={self.value}"


class ConstantPad1d(_ConstantPadNd):
    _k = 1


class ConstantPad2d(_ConstantPadNd):
    _k = 2


class ZeroPad1d(ConstantPad1d):
    def __init__(self, padding: int | Sequence[int]) -> None:
        super().__init__(padding, 0.0)

    def extra_repr(self) -> str:
        return f"{self.padding}"


class ZeroPad2d(ConstantPad2d):
    def __init__(self, padding: int | Sequence[int]) -> None:
        super().__init__(padding, 0.0)

    def extra_repr(self) -> str:
        return f"{self.padding}"


class ReflectionPad1d(_PadNd):
    _k, _mode = 1, "reflect"


class ReflectionPad2d(_PadNd):
    _k, _mode = 2, "reflect"


class ReplicationPad1d(_PadNd):
    _k, _mode = 1, "replicate"


class ReplicationPad2d(_PadNd):
    _k, _mode = 2, "replicate"


class CircularPad1d(_PadNd):
    _k, _mode = 1, "circular"


class CircularPad2d(_PadNd):
    _k, _mode = 2, "circular"
