"""kl_divergence(p, q) and register_kl: KL(p || q) by the most specific registered pair of
classes (torch.distributions.kl's dispatch), with the closed forms of torch's pairs for the
distributions here."""
from __future__ import annotations

import math
import warnings

from .. import linalg
from ..ir.core import user_location
from ..tracer import composites as C
from ..tracer.masking import where
from .continuous import Exponential, Laplace, Normal, Uniform
from .discrete import Bernoulli, Categorical, OneHotCategorical
from .distribution import Distribution
from .independent import Independent
from .multivariate_normal import MultivariateNormal, batch_mahalanobis
from .utils import sum_rightmost

_KL_REGISTRY: dict = {}
_INF = math.inf


def register_kl(type_p: type, type_q: type):
    """Decorator: `fn(p, q)` computes KL(p || q) for p of type_p and q of type_q."""
    if not (isinstance(type_p, type) and issubclass(type_p, Distribution)):
        raise TypeError(f"register_kl: expected type_p to be a Distribution subclass but got "
                        f"{type_p}")
    if not (isinstance(type_q, type) and issubclass(type_q, Distribution)):
        raise TypeError(f"register_kl: expected type_q to be a Distribution subclass but got "
                        f"{type_q}")

    def decorator(fn):
        _KL_REGISTRY[type_p, type_q] = fn
        return fn
    return decorator


def _dispatch(tp: type, tq: type):
    matches = [(p, q) for p, q in _KL_REGISTRY if issubclass(tp, p) and issubclass(tq, q)]
    if not matches:
        return None
    mp, mq = tp.__mro__, tq.__mro__
    best = min(matches, key=lambda m: (mp.index(m[0]), mq.index(m[1])))
    other = min(matches, key=lambda m: (mq.index(m[1]), mp.index(m[0])))
    if best != other:
        warnings.warn(f"Ambiguous kl_divergence({tp.__name__}, {tq.__name__}). Please "
                      f"register_kl({best[0].__name__}, {other[1].__name__})", RuntimeWarning)
    return _KL_REGISTRY[best]


def kl_divergence(p: Distribution, q: Distribution):
    """KL(p || q) over each batch element (summed over the event dims)."""
    fn = _dispatch(type(p), type(q))
    if fn is None:
        raise NotImplementedError(f"No KL(p || q) is implemented for p type "
                                  f"{type(p).__name__} and q type {type(q).__name__} "
                                  f"(at {user_location()})")
    return fn(p, q)


@register_kl(Normal, Normal)
def _kl_normal_normal(p, q):
    var_ratio = (p.scale / q.scale).pow(2)
    t1 = ((p.loc - q.loc) / q.scale).pow(2)
    return 0.5 * (var_ratio + t1 - 1 - var_ratio.log())


@register_kl(Laplace, Laplace)
def _kl_laplace_laplace(p, q):
    scale_ratio = p.scale / q.scale
    gap = (p.loc - q.loc).abs()
    return -scale_ratio.log() + gap / q.scale + scale_ratio * (-gap / p.scale).exp() - 1


@register_kl(Uniform, Uniform)
def _kl_uniform_uniform(p, q):
    r = ((q.high - q.low) / (p.high - p.low)).log()
    return where((q.low > p.low) | (q.high < p.high), _INF, r)


@register_kl(Uniform, Normal)
def _kl_uniform_normal(p, q):
    width = p.high - p.low
    t1 = (math.sqrt(2 * math.pi) * q.scale / width).log()
    t2 = width.pow(2) / 12
    t3 = ((p.high + p.low - 2 * q.loc) / 2).pow(2)
    return t1 + 0.5 * (t2 + t3) / q.scale.pow(2)


@register_kl(Exponential, Exponential)
def _kl_exponential_exponential(p, q):
    ratio = q.rate / p.rate
    return ratio - 1 - ratio.log()


@register_kl(Bernoulli, Bernoulli)
def _kl_bernoulli_bernoulli(p, q):
    t1 = p.probs * (C.softplus(-q.logits) - C.softplus(-p.logits))
    t1 = where(p.probs == 0, 0.0, where(q.probs == 0, _INF, t1))
    t2 = (1 - p.probs) * (C.softplus(q.logits) - C.softplus(p.logits))
    t2 = where(p.probs == 1, 0.0, where(q.probs == 1, _INF, t2))
    return t1 + t2


@register_kl(Categorical, Categorical)
def _kl_categorical_categorical(p, q):
    t = p.probs * (p.logits - q.logits)
    t = where(p.probs == 0, 0.0, where(q.probs == 0, _INF, t))
    return t.sum(-1)


@register_kl(OneHotCategorical, OneHotCategorical)
def _kl_onehot_onehot(p, q):
    return _kl_categorical_categorical(p._categorical, q._categorical)


@register_kl(Independent, Independent)
def _kl_independent_independent(p, q):
    if p.reinterpreted_batch_ndims != q.reinterpreted_batch_ndims:
        raise NotImplementedError(f"kl_divergence: Independent distributions with "
                                  f"reinterpreted_batch_ndims {p.reinterpreted_batch_ndims} and "
                                  f"{q.reinterpreted_batch_ndims} (at {user_location()})")
    return sum_rightmost(kl_divergence(p.base_dist, q.base_dist), p.reinterpreted_batch_ndims)


@register_kl(MultivariateNormal, MultivariateNormal)
def _kl_mvn_mvn(p, q):
    if p.event_shape != q.event_shape:
        raise ValueError(f"KL-divergence between two Multivariate Normals with different "
                         f"event shapes cannot be computed: {p.event_shape} vs "
                         f"{q.event_shape} (at {user_location()})")
    pL, qL = p._unbroadcasted_scale_tril, q._unbroadcasted_scale_tril
    half_term1 = qL.diagonal(0, -2, -1).log().sum(-1) - pL.diagonal(0, -2, -1).log().sum(-1)
    n = p.event_shape[0]
    shape = p.batch_shape if len(p.batch_shape) >= len(q.batch_shape) else q.batch_shape
    term2 = linalg.solve_triangular(qL.expand(shape + (n, n)), pL.expand(shape + (n, n)),
                                    upper=False).pow(2).sum(-1).sum(-1)
    term3 = batch_mahalanobis(qL, q.loc - p.loc)
    return half_term1 + 0.5 * (term2 + term3 - n)

