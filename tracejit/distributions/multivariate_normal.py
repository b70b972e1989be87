"""MultivariateNormal(loc, covariance_matrix= | scale_tril= | precision_matrix=): everything
goes through the lower Cholesky factor L of the covariance (log_prob by a triangular solve,
rsample as loc + L eps)."""
from __future__ import annotations

import math

from .. import linalg
from ..ir.core import user_location
from ..tracer.masking import eye
from ..tracer.tensor import Tensor
from . import constraints
from .distribution import Distribution
from .utils import as_param, broadcast_shape, draw, lazy_property


def batch_mahalanobis(L: Tensor, x: Tensor) -> Tensor:
    """x^T (L L^T)^-1 x over the last dim, L and x broadcast over their batch dims."""
    n = x.shape[-1]
    shape = broadcast_shape(tuple(L.shape[:-2]), tuple(x.shape[:-1]), op="MultivariateNormal")
    z = linalg.solve_triangular(L.expand(shape + (n, n)), x.expand(shape + (n,)).unsqueeze(-1),
                                upper=False)
    return z.squeeze(-1).pow(2).sum(-1)


def _precision_to_scale_tril(P: Tensor) -> Tensor:
    # the Cholesky factor of P^-1 without inverting P: flip, factor, flip back, invert L
    Lf = linalg.cholesky(P.flip(-2, -1))
    L_inv = Lf.flip(-2, -1).transpose(-2, -1)
    Id = eye(P.shape[-1], dtype=P.dtype).expand(tuple(P.shape))
    return linalg.solve_triangular(L_inv, Id, upper=False)


class MultivariateNormal(Distribution):
    arg_constraints = {"loc": constraints.real_vector,
                       "covariance_matrix": constraints.positive_definite,
                       "precision_matrix": constraints.positive_definite,
                       "scale_tril": constraints.lower_cholesky}
    support = constraints.real_vector
    has_rsample = True

    def __init__(self, loc, covariance_matrix=None, precision_matrix=None, scale_tril=None,
                 validate_args=None):
        loc = as_param(loc, name="MultivariateNormal")
        if loc.ndim < 1:
            raise ValueError(f"MultivariateNormal: loc must be at least one-dimensional, got "
                             f"shape {tuple(loc.shape)} (at {user_location()})")
        given = [(k, v) for k, v in (("covariance_matrix", covariance_matrix),
                                     ("precision_matrix", precision_matrix),
                                     ("scale_tril", scale_tril)) if v is not None]
        if len(given) != 1:
            raise ValueError("Exactly one of covariance_matrix or precision_matrix or "
                             f"scale_tril may be specified (at {user_location()})")
        name, m = given[0]
        m = as_param(m, loc, "MultivariateNormal")
        if m.ndim < 2:
            raise ValueError(f"MultivariateNormal: {name} must be at least two-dimensional, "
                             f"with optional leading batch dimensions, got shape "
                             f"{tuple(m.shape)} (at {user_location()})")
        n = loc.shape[-1]
        if tuple(m.shape[-2:]) != (n, n):
            raise ValueError(f"MultivariateNormal: {name} of shape {tuple(m.shape)} does not "
                             f"match loc of shape {tuple(loc.shape)} (at {user_location()})")
        batch = broadcast_shape(tuple(m.shape[:-2]), tuple(loc.shape[:-1]),
                                op="MultivariateNormal")
        setattr(self, name, m.expand(batch + (n, n)))
        self.loc = loc.expand(batch + (n,))
        super().__init__(batch, (n,), validate_args=validate_args)
        if scale_tril is not None:
            self._unbroadcasted_scale_tril = m
        elif covariance_matrix is not None:
            self._unbroadcasted_scale_tril = linalg.cholesky(m)
        else:
            self._unbroadcasted_scale_tril = _precision_to_scale_tril(m)

    def expand(self, batch_shape, _instance=None):
        new = self._expanded(MultivariateNormal, batch_shape,
                             ("loc", "covariance_matrix", "precision_matrix", "scale_tril"))
        new._unbroadcasted_scale_tril = self._unbroadcasted_scale_tril
        return new

    def _full(self, m: Tensor) -> Tensor:
        return m.expand(self._batch_shape + self._event_shape + self._event_shape)

    @lazy_property
    def scale_tril(self):
        return self._full(self._unbroadcasted_scale_tril)

    @lazy_property
    def covariance_matrix(self):
        L = self._unbroadcasted_scale_tril
        return self._full(L.matmul(L.transpose(-1, -2)))

    @lazy_property
    def precision_matrix(self):
        L = self._unbroadcasted_scale_tril
        Id = eye(L.shape[-1], dtype=L.dtype).expand(tuple(L.shape))
        L_inv = linalg.solve_triangular(L, Id, upper=False)
        return self._full(L_inv.transpose(-1, -2).matmul(L_inv))

    mean = property(lambda self: self.loc)
    mode = property(lambda self: self.loc)

    @property
    def variance(self):
        return self._unbroadcasted_scale_tril.pow(2).sum(-1).expand(
            self._batch_shape + self._event_shape)

    def _half_log_det(self) -> Tensor:
        return self._unbroadcasted_scale_tril.diagonal(0, -2, -1).log().sum(-1)

    def rsample(self, sample_shape=(), generator=None):
        eps = draw(self._extended_shape(sample_shape), self.loc, True, generator)
        return self.loc + self._unbroadcasted_scale_tril.matmul(eps.unsqueeze(-1)).squeeze(-1)

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        diff = value - self.loc
        M = batch_mahalanobis(self._unbroadcasted_scale_tril, diff)
        n = self._event_shape[0]
        return -0.5 * (n * math.log(2 * math.pi) + M) - self._half_log_det()

    def entropy(self):
        n = self._event_shape[0]
        H = 0.5 * n * (1.0 + math.log(2 * math.pi)) + self._half_log_det()
        return H.expand(self._batch_shape) if H.ndim or self._batch_shape else H
