"""Constraints on a distribution's parameters and support (torch.distributions.constraints):
each `check(value)` answers elementwise (over the batch dims; `event_dim` rightmost dims are
folded into one answer) with a bool tensor."""
from __future__ import annotations

import numpy as np

from ..ir.core import user_location
from ..tracer.creation import tensor
from ..tracer.tensor import Tensor


class Constraint:
    """A region of values: `check(value)` is a bool tensor, True where value lies inside."""
    is_discrete = False
    event_dim = 0

    def check(self, value: Tensor) -> Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        return type(self).__name__.lstrip("_") + "()"


def _fold(ok: Tensor, n: int) -> Tensor:
    """one answer per batch element: all over the `n` rightmost (event) dims."""
    for _ in range(n):
        ok = ok.all(-1)
    return ok


class _Dependent(Constraint):
    """Support that depends on other parameters; only a placeholder, it cannot check."""

    def __init__(self, *, is_discrete: bool = False, event_dim: int = 0) -> None:
        self.is_discrete, self.event_dim = is_discrete, event_dim

    def check(self, value):
        raise ValueError("cannot determine validity of a dependent constraint")


class _DependentProperty(property):
    """A property whose value is a constraint computed from the instance (Uniform's support)."""

    def __init__(self, fn=None, *, is_discrete: bool = False, event_dim: int = 0) -> None:
        super().__init__(fn)
        self.is_discrete, self.event_dim = is_discrete, event_dim

    def __call__(self, fn):
        return _DependentProperty(fn, is_discrete=self.is_discrete, event_dim=self.event_dim)


def is_dependent(constraint) -> bool:
    return isinstance(constraint, _Dependent)


class _Real(Constraint):
    def check(self, value):
        return value == value          # False only at NaN


class _Boolean(Constraint):
    is_discrete = True

    def check(self, value):
        return (value == 0) | (value == 1)


class _GreaterThan(Constraint):
    def __init__(self, lower_bound) -> None:
        self.lower_bound = lower_bound

    def check(self, value):
        return self.lower_bound < value

    def __repr__(self):
        return f"GreaterThan(lower_bound={self.lower_bound})"


class _GreaterThanEq(_GreaterThan):
    def check(self, value):
        return self.lower_bound <= value

    def __repr__(self):
        return f"GreaterThanEq(lower_bound={self.lower_bound})"


class _LessThan(Constraint):
    def __init__(self, upper_bound) -> None:
        self.upper_bound = upper_bound

    def check(self, value):
        return value < self.upper_bound

    def __repr__(self):
        return f"LessThan(upper_bound={self.upper_bound})"


class _Interval(Constraint):
    def __init__(self, lower_bound, upper_bound) -> None:
        self.lower_bound, self.upper_bound = lower_bound, upper_bound

    def check(self, value):
        return (self.lower_bound <= value) & (value <= self.upper_bound)

    def __repr__(self):
        return (f"{type(self).__name__.lstrip('_')}(lower_bound={self.lower_bound}, "
                f"upper_bound={self.upper_bound})")


class _HalfOpenInterval(_Interval):
    def check(self, value):
        return (self.lower_bound <= value) & (value < self.upper_bound)


class _IntegerInterval(_Interval):
    is_discrete = True

    def check(self, value):
        return (value % 1 == 0) & (self.lower_bound <= value) & (value <= self.upper_bound)


class _IntegerGreaterThan(_GreaterThan):
    is_discrete = True

    def check(self, value):
        return (value % 1 == 0) & (value >= self.lower_bound)

    def __repr__(self):
        return f"IntegerGreaterThan(lower_bound={self.lower_bound})"


class _Independent(Constraint):
    """`base` with `reinterpreted_batch_ndims` more dims folded into each answer."""

    def __init__(self, base: Constraint, reinterpreted_batch_ndims: int) -> None:
        self.base_constraint, self.reinterpreted_batch_ndims = base, reinterpreted_batch_ndims

    @property
    def is_discrete(self):
        return self.base_constraint.is_discrete

    @property
    def event_dim(self):
        return self.base_constraint.event_dim + self.reinterpreted_batch_ndims

    def check(self, value):
        return _fold(self.base_constraint.check(value), self.reinterpreted_batch_ndims)

    def __repr__(self):
        return (f"Independent({self.base_constraint!r}, "
                f"{self.reinterpreted_batch_ndims})")


class _Simplex(Constraint):
    event_dim = 1

    def check(self, value):
        s = value.sum(-1)
        return (value >= 0).all(-1) & ((s - 1).abs() < 1e-6)


class _OneHot(Constraint):
    is_discrete = True
    event_dim = 1

    def check(self, value):
        return ((value == 0) | (value == 1)).all(-1) & (value.sum(-1) == 1)


class _LowerCholesky(Constraint):
    event_dim = 2

    def check(self, value):
        lower = (value.tril() == value).all(-1).all(-1)
        return lower & (value.diagonal(0, -2, -1) > 0).all(-1)


class _PositiveDefinite(Constraint):
    event_dim = 2

    def check(self, value):
        if value._traced:
            raise ValueError(f"PositiveDefinite.check: the values of a traced tensor are not "
                             f"known inside tj.compile (at {user_location()})")
        a = value.detach().numpy().astype(np.float64)
        sym = np.abs(a - np.swapaxes(a, -1, -2)) <= 1e-6 * (1 + np.abs(a))
        sym = sym.all((-1, -2)) if a.size else np.ones(a.shape[:-2], bool)
        # the eigenvalues of the symmetric part: all positive exactly when it is PD
        pd = (np.linalg.eigvalsh((a + np.swapaxes(a, -1, -2)) / 2).min(-1) > 0) if a.size \
            else np.ones(a.shape[:-2], bool)
        return tensor(sym & pd)


class _RealVector(_Independent):
    def __init__(self) -> None:
        super().__init__(_Real(), 1)

    def __repr__(self):
        return "RealVector()"


dependent = _Dependent()
dependent_property = _DependentProperty
independent = _Independent
boolean = _Boolean()
real = _Real()
real_vector = _RealVector()
positive = _GreaterThan(0.0)
nonnegative = _GreaterThanEq(0.0)
greater_than = _GreaterThan
greater_than_eq = _GreaterThanEq
less_than = _LessThan
unit_interval = _Interval(0.0, 1.0)
interval = _Interval
half_open_interval = _HalfOpenInterval
integer_interval = _IntegerInterval
nonnegative_integer = _IntegerGreaterThan(0)
positive_integer = _IntegerGreaterThan(1)
simplex = _Simplex()
one_hot = _OneHot()
lower_cholesky = _LowerCholesky()
positive_definite = _PositiveDefinite()

__all__ = ["Constraint", "dependent", "dependent_property", "is_dependent", "independent",
           "boolean", "real", "real_vector", "positive", "nonnegative", "greater_than",
           "greater_than_eq", "less_than", "unit_interval", "interval", "half_open_interval",
           "integer_interval", "nonnegative_integer", "positive_integer", "simplex", "one_hot",
           "lower_cholesky", "positive_definite"]
