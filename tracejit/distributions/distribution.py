"""The Distribution base class (torch.distributions.Distribution's interface and checks)."""
from __future__ import annotations

from ..ir.core import user_location
from ..tracer.state import no_grad
from ..tracer.tensor import Tensor
from . import constraints
from .utils import broadcast_shape, lazy_property


def _size(shape, op: str) -> tuple[int, ...]:
    if isinstance(shape, int):
        shape = (shape,)
    try:
        out = tuple(int(n) for n in shape)
    except TypeError:
        raise TypeError(f"{op}: sample_shape must be a tuple of ints, got {shape!r} "
                        f"(at {user_location()})") from None
    if any(n < 0 for n in out):
        raise ValueError(f"{op}: negative size in sample_shape {out} (at {user_location()})")
    return out


def _checkable(x) -> bool:
    """values can only be checked outside a trace (inside one they are not known yet)."""
    return isinstance(x, Tensor) and not x._traced


class Distribution:
    """A batch of probability distributions: `batch_shape` independent ones, each over values
    of `event_shape`. Subclasses give arg_constraints, support and the methods they have."""
    has_rsample = False
    has_enumerate_support = False
    _validate_args = __debug__       # torch's default: checks on unless python -O

    @staticmethod
    def set_default_validate_args(value: bool) -> None:
        if value not in (True, False):
            raise ValueError(f"set_default_validate_args: expected a bool, got {value!r}")
        Distribution._validate_args = value

    def __init__(self, batch_shape=(), event_shape=(), validate_args: bool | None = None):
        self._batch_shape = _size(batch_shape, type(self).__name__)
        self._event_shape = _size(event_shape, type(self).__name__)
        if validate_args is not None:
            self._validate_args = validate_args
        if self._validate_args:
            self._check_params()

    def _check_params(self) -> None:
        arg_constraints = self.arg_constraints
        for param, constraint in arg_constraints.items():
            if constraints.is_dependent(constraint):
                continue
            if param not in self.__dict__ and isinstance(getattr(type(self), param, None),
                                                         lazy_property):
                continue      # a lazily computed parameter (probs when logits were given)
            value = getattr(self, param)
            if not _checkable(value):
                continue
            if not bool(constraint.check(value).all().item()):
                raise ValueError(
                    f"Expected parameter {param} ({type(value).__name__} of shape "
                    f"{tuple(value.shape)}) of distribution {self!r} to satisfy the "
                    f"constraint {constraint!r}, but found invalid values:\n{value} "
                    f"(at {user_location()})")

    @property
    def batch_shape(self) -> tuple[int, ...]:
        return self._batch_shape

    @property
    def event_shape(self) -> tuple[int, ...]:
        return self._event_shape

    @property
    def arg_constraints(self) -> dict:
        raise NotImplementedError

    @property
    def support(self):
        raise NotImplementedError

    def _unsupported(self, what: str):
        return NotImplementedError(f"{type(self).__name__}.{what} is not implemented "
                                   f"(at {user_location()})")

    @property
    def mean(self) -> Tensor:
        raise self._unsupported("mean")

    @property
    def mode(self) -> Tensor:
        raise self._unsupported("mode")

    @property
    def variance(self) -> Tensor:
        raise self._unsupported("variance")

    @property
    def stddev(self) -> Tensor:
        return self.variance.sqrt()

    def expand(self, batch_shape, _instance=None):
        raise self._unsupported("expand")

    def _get_checked_instance(self, cls, _instance=None):
        if _instance is None and type(self).__init__ != cls.__init__:
            raise NotImplementedError(
                f"Subclass {type(self).__name__} of {cls.__name__} that defines a custom "
                f"__init__ method must also define a custom .expand() method.")
        return type(self).__new__(type(self)) if _instance is None else _instance

    def _expanded(self, cls, batch_shape, names):
        """a new `cls` with each named parameter's batch dims expanded to batch_shape (its
        trailing, event dims kept)."""
        new = self._get_checked_instance(cls)
        shape = _size(batch_shape, "expand")
        nb = len(self._batch_shape)
        for n in names:
            if n in self.__dict__:
                p = self.__dict__[n]
                setattr(new, n, p.expand(shape + tuple(p.shape[nb:])))
        Distribution.__init__(new, shape, self._event_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    def sample(self, sample_shape=(), generator=None) -> Tensor:
        """A draw of shape sample_shape + batch_shape + event_shape, outside autograd, from
        the default generator (tj.manual_seed) or `generator` (a tj.Generator)."""
        with no_grad():
            return self.rsample(sample_shape, generator=generator)

    def rsample(self, sample_shape=(), generator=None) -> Tensor:
        raise NotImplementedError(
            f"{type(self).__name__} has no reparametrized sample (has_rsample is False); use "
            f".sample() (at {user_location()})")

    def sample_n(self, n: int) -> Tensor:
        return self.sample((n,))

    def log_prob(self, value: Tensor) -> Tensor:
        raise self._unsupported("log_prob")

    def cdf(self, value: Tensor) -> Tensor:
        raise self._unsupported("cdf")

    def icdf(self, value: Tensor) -> Tensor:
        raise self._unsupported("icdf")

    def enumerate_support(self, expand: bool = True) -> Tensor:
        raise self._unsupported("enumerate_support")

    def entropy(self) -> Tensor:
        raise self._unsupported("entropy")

    def perplexity(self) -> Tensor:
        return self.entropy().exp()

    def _extended_shape(self, sample_shape=()) -> tuple[int, ...]:
        return _size(sample_shape, "sample") + self._batch_shape + self._event_shape

    def _validate_sample(self, value) -> None:
        if not isinstance(value, Tensor):
            raise ValueError(f"The value argument to log_prob must be a Tensor "
                             f"(at {user_location()})")
        n = len(self._event_shape)
        shape = tuple(value.shape)
        if shape[len(shape) - n:] != self._event_shape if n else False:
            raise ValueError(f"The right-most size of value must match event_shape: "
                             f"{shape} vs {self._event_shape}. (at {user_location()})")
        full = self._batch_shape + self._event_shape
        try:
            broadcast_shape(shape, full)
        except ValueError:
            raise ValueError(f"Value is not broadcastable with batch_shape+event_shape: "
                             f"{shape} vs {full}. (at {user_location()})") from None
        support = self.support
        if support is None or not _checkable(value):
            return
        if not bool(support.check(value).all().item()):
            raise ValueError(
                f"Expected value argument ({type(value).__name__} of shape {shape}) to be "
                f"within the support ({support!r}) of the distribution {self!r}, but found "
                f"invalid values:\n{value} (at {user_location()})")

    def __repr__(self) -> str:
        parts = []
        for k in self.arg_constraints:
            v = self.__dict__.get(k)
            if isinstance(v, Tensor):
                parts.append(f"{k}: {v if v.numel() == 1 else tuple(v.shape)}")
        return f"{type(self).__name__}({', '.join(parts)})"
