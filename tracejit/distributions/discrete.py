"""Bernoulli, Categorical and OneHotCategorical, given by probs= or logits= (exactly one)."""
from __future__ import annotations

import math

from ..ir import dtypes as dt
from ..ir.core import user_location
from ..ir.dtype_info import finfo
from ..tracer import composites as C
from ..tracer.creation import arange
from ..tracer.masking import one_hot
from ..tracer.state import no_grad
from ..tracer.tensor import Tensor
from . import constraints
from .distribution import Distribution
from .utils import (as_param, broadcast_all, broadcast_shape, draw, is_number, lazy_property,
                    logits_to_probs, probs_to_logits)


def _one_of(name: str, probs, logits):
    if (probs is None) == (logits is None):
        raise ValueError(f"{name}: either `probs` or `logits` must be specified, but not both "
                         f"(at {user_location()})")


class Bernoulli(Distribution):
    """Bernoulli(probs=) or Bernoulli(logits=): 1 with probability probs (sigmoid(logits))."""
    arg_constraints = {"probs": constraints.unit_interval, "logits": constraints.real}
    support = constraints.boolean
    has_enumerate_support = True

    def __init__(self, probs=None, logits=None, validate_args=None):
        _one_of("Bernoulli", probs, logits)
        given = probs if probs is not None else logits
        if probs is not None:
            (self.probs,) = broadcast_all(probs, op="Bernoulli")
        else:
            (self.logits,) = broadcast_all(logits, op="Bernoulli")
        self._param = self.probs if probs is not None else self.logits
        shape = () if is_number(given) else self._param.shape
        super().__init__(shape, validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        new = self._expanded(Bernoulli, batch_shape, ("probs", "logits"))
        new._param = new.__dict__.get("probs", new.__dict__.get("logits"))
        return new

    @lazy_property
    def logits(self):
        return probs_to_logits(self.probs, is_binary=True)

    @lazy_property
    def probs(self):
        return logits_to_probs(self.logits, is_binary=True)

    mean = property(lambda self: self.probs)
    variance = property(lambda self: self.probs * (1 - self.probs))

    @property
    def mode(self):
        m = (self.probs >= 0.5).type_as(self.probs)
        return m.masked_fill(self.probs == 0.5, math.nan)

    def sample(self, sample_shape=(), generator=None):
        with no_grad():
            shape = self._extended_shape(sample_shape)
            u = draw(shape, self._param, False, generator)
            return (u < self.probs.expand(shape)).type_as(self._param)

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        logits, value = broadcast_all(self.logits, value, op="Bernoulli.log_prob")
        # -binary_cross_entropy_with_logits, in its stable form
        return -(logits.clamp(min=0) - logits * value + (-logits.abs()).exp().log1p())

    def entropy(self):
        x, p = self.logits, self.probs
        return x.clamp(min=0) - x * p + (-x.abs()).exp().log1p()

    def enumerate_support(self, expand: bool = True):
        v = arange(2, dtype=self._param.dtype).reshape((2,) + (1,) * len(self._batch_shape))
        return v.expand((2,) + self._batch_shape) if expand else v


class Categorical(Distribution):
    """Categorical(probs=) or Categorical(logits=) over 0..K-1 on the last dim (probs need
    not sum to 1; logits are normalized by logsumexp)."""
    arg_constraints = {"probs": constraints.simplex, "logits": constraints.independent(
        constraints.real, 1)}
    has_enumerate_support = True

    def __init__(self, probs=None, logits=None, validate_args=None):
        _one_of(type(self).__name__, probs, logits)
        if probs is not None:
            p = as_param(probs, name=type(self).__name__)
            self._check_ndim(p, "probs")
            self.probs = p / p.sum(-1, keepdim=True)
        else:
            lg = as_param(logits, name=type(self).__name__)
            self._check_ndim(lg, "logits")
            self.logits = lg - C.logsumexp(lg, -1, keepdim=True)
        self._param = self.probs if probs is not None else self.logits
        self._num_events = self._param.shape[-1]
        super().__init__(self._param.shape[:-1], validate_args=validate_args)

    def _check_ndim(self, p: Tensor, name: str) -> None:
        if p.ndim < 1:
            raise ValueError(f"{type(self).__name__}: `{name}` parameter must be at least "
                             f"one-dimensional, got shape {tuple(p.shape)} "
                             f"(at {user_location()})")

    def expand(self, batch_shape, _instance=None):
        new = self._expanded(Categorical, batch_shape, ("probs", "logits"))
        new._param = new.__dict__.get("probs", new.__dict__.get("logits"))
        new._num_events = self._num_events
        return new

    @constraints.dependent_property(is_discrete=True, event_dim=0)
    def support(self):
        return constraints.integer_interval(0, self._num_events - 1)

    @lazy_property
    def logits(self):
        return probs_to_logits(self.probs)

    @lazy_property
    def probs(self):
        return logits_to_probs(self.logits)

    param_shape = property(lambda self: tuple(self._param.shape))
    mean = property(lambda self: (self.probs[..., 0] * math.nan).expand(self._batch_shape))
    variance = mean
    mode = property(lambda self: self.probs.argmax(-1))

    def sample(self, sample_shape=(), generator=None):
        # inverse CDF: the number of cumulative probabilities at or below u * total
        with no_grad():
            shape = self._extended_shape(sample_shape)
            cdf = self.probs.cumsum(-1)
            u = draw(shape + (1,), self._param, False, generator) * cdf[..., -1:]
            k = (cdf <= u).type_as(cdf).sum(-1).long()
            return k.clamp(max=self._num_events - 1)

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        shape = broadcast_shape(tuple(value.shape), self._batch_shape,
                                op="Categorical.log_prob")
        idx = value.long().expand(shape).unsqueeze(-1)
        return self.logits.expand(shape + (self._num_events,)).gather(-1, idx).squeeze(-1)

    def entropy(self):
        logits = self.logits.clamp(min=finfo(self.logits.dtype).min)
        return -(logits * self.probs).sum(-1)

    def enumerate_support(self, expand: bool = True):
        v = arange(self._num_events, dtype=dt.i64).reshape(
            (-1,) + (1,) * len(self._batch_shape))
        return v.expand((self._num_events,) + self._batch_shape) if expand else v


class OneHotCategorical(Distribution):
    """A Categorical whose values are one-hot vectors of length K (event_shape (K,))."""
    arg_constraints = {"probs": constraints.simplex, "logits": constraints.independent(
        constraints.real, 1)}
    support = constraints.one_hot
    has_enumerate_support = True

    def __init__(self, probs=None, logits=None, validate_args=None):
        self._categorical = Categorical(probs, logits, validate_args=False)
        c = self._categorical
        super().__init__(c.batch_shape, c.param_shape[-1:], validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(OneHotCategorical)
        new._categorical = self._categorical.expand(batch_shape)
        Distribution.__init__(new, new._categorical.batch_shape, self._event_shape, False)
        new._validate_args = self._validate_args
        return new

    probs = property(lambda self: self._categorical.probs)
    logits = property(lambda self: self._categorical.logits)
    param_shape = property(lambda self: self._categorical.param_shape)
    _param = property(lambda self: self._categorical._param)
    mean = property(lambda self: self._categorical.probs)
    variance = property(lambda self: self.probs * (1 - self.probs))

    @property
    def mode(self):
        return one_hot(self.probs.argmax(-1), self._event_shape[0]).type_as(self.probs)

    def sample(self, sample_shape=(), generator=None):
        k = self._categorical.sample(sample_shape, generator)
        return one_hot(k, self._event_shape[0]).type_as(self._param)

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        return self._categorical.log_prob(value.argmax(-1))

    def entropy(self):
        return self._categorical.entropy()

    def enumerate_support(self, expand: bool = True):
        n = self._event_shape[0]
        v = one_hot(arange(n, dtype=dt.i64), n).type_as(self._param).reshape(
            (n,) + (1,) * len(self._batch_shape) + (n,))
        return v.expand((n,) + self._batch_shape + (n,)) if expand else v
