"""Gamma, Beta and Dirichlet (torch.distributions' formulas, with lgamma/digamma), and their
KL pairs. Draws: Marsaglia and Tsang's method for the standard gamma, with a fixed number of
proposals per element so it is a plain tensor program (also inside tj.compile); Beta and
Dirichlet normalize gamma draws. rsample is reparametrized by the implicit gradient of the
gamma CDF, dx/dalpha = -(dF/dalpha) / f(x), from the CDF's power series (see
_dx_dalpha), attached to the draw as x + (alpha - stop_gradient(alpha)) * dx/dalpha."""
from __future__ import annotations

from ..ir.dtype_info import finfo
from ..ir import dtypes as dt
from ..tracer import ops
from ..tracer.creation import arange
from ..tracer.masking import one_hot, where
from ..tracer.math_ops import xlogy
from ..tracer.shape_ops import stack
from ..tracer.special_ops import digamma, lgamma
from ..tracer.state import no_grad
from ..tracer.tensor import Tensor
from . import constraints
from .distribution import Distribution
from .kl import register_kl
from .utils import as_param, broadcast_all, draw, is_number

# proposals per element: each is accepted with probability > 0.95 (concentration >= 1, as
# after the boost below), so all 12 fail with probability < 0.05 ** 12 ~ 2e-16
_PROPOSALS = 12


def standard_gamma(alpha: Tensor, shape: tuple[int, ...], generator=None) -> Tensor:
    """Gamma(alpha, 1) draws of `shape` (alpha broadcast to it), outside autograd."""
    with no_grad():
        a = alpha.detach().expand(shape)
        small = a < 1
        boosted = where(small, a + 1, a)          # Gamma(a) = Gamma(a + 1) * U ** (1 / a)
        d = boosted - 1.0 / 3
        c = (9 * d).rsqrt()
        x = draw((_PROPOSALS,) + tuple(shape), a, True, generator)
        u = draw((_PROPOSALS,) + tuple(shape), a, False, generator)
        v = (1 + c * x) ** 3
        ok = (v > 0) & (u.log() < 0.5 * x * x + d - d * v + d * where(v > 0, v, 1.0).log())
        out, done = d, ok[0] & ~ok[0]
        for k in range(_PROPOSALS):
            take = ok[k] & ~done
            out = where(take, d * v[k], out)
            done = done | ok[k]
        u_boost = draw(tuple(shape), a, False, generator).clamp(min=finfo(a.dtype).tiny)
        out = where(small, out * (u_boost.log() / where(small, a, 1.0)).exp(), out)
        return out.clamp(min=finfo(a.dtype).tiny)


# series terms under tj.compile, where the draws are not known when the trace is made: enough
# for concentrations up to ~300 (eagerly the count follows the draws)
_TRACED_TERMS = 320


def _dx_dalpha(x: Tensor, a: Tensor) -> Tensor:
    """d x / d alpha of a standard gamma draw x at fixed CDF value: with
    r_n = x^(n+1) Gamma(a) / Gamma(a+n+1) (the series of P(a, x) over the density),
    dx/da = -sum_n r_n (log x - digamma(a + n + 1)). Computed in float64, no graph."""
    with no_grad():
        x64, a64 = x.to(dt.f64), a.to(dt.f64)
        if x._traced or a._traced:
            terms = _TRACED_TERMS
        else:
            xs, as_ = x64.numpy(), a64.numpy()
            terms = int(max(float((xs - as_).max(initial=0)), 0) +
                        12 * float(xs.max(initial=0)) ** 0.5 + 40)
        n = arange(terms, dtype=dt.f64).reshape((terms,) + (1,) * x.ndim)
        lx = x64.log()
        log_r = (n + 1) * lx + lgamma(a64) - lgamma(a64 + n + 1)
        d = -(log_r.exp() * (lx - digamma(a64 + n + 1))).sum(0)
        return where(d.isfinite(), d, 0.0).to(x.dtype)


def reparametrized_gamma(alpha: Tensor, shape: tuple[int, ...], generator=None) -> Tensor:
    """standard gamma draws whose gradient to alpha is the implicit one."""
    x = standard_gamma(alpha, shape, generator)
    a = alpha.expand(shape)
    return x + (a - ops.stop_gradient(a)) * _dx_dalpha(x, a.detach())


class Gamma(Distribution):
    """Gamma(concentration, rate): density rate^c x^(c-1) exp(-rate x) / Gamma(c)."""
    arg_constraints = {"concentration": constraints.positive, "rate": constraints.positive}
    support = constraints.nonnegative
    has_rsample = True

    def __init__(self, concentration, rate, validate_args=None):
        self.concentration, self.rate = broadcast_all(concentration, rate, op="Gamma")
        shape = () if is_number(concentration) and is_number(rate) else \
            self.concentration.shape
        super().__init__(shape, validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        return self._expanded(Gamma, batch_shape, ("concentration", "rate"))

    mean = property(lambda self: self.concentration / self.rate)
    mode = property(lambda self: ((self.concentration - 1) / self.rate).clamp(min=0))
    variance = property(lambda self: self.concentration / self.rate.pow(2))

    def sample(self, sample_shape=(), generator=None):
        shape = self._extended_shape(sample_shape)
        with no_grad():
            return (standard_gamma(self.concentration, shape, generator) /
                    self.rate.detach()).clamp(min=finfo(self.rate.dtype).tiny)

    def rsample(self, sample_shape=(), generator=None):
        shape = self._extended_shape(sample_shape)
        x = reparametrized_gamma(self.concentration, shape, generator)
        return (x / self.rate).clamp(min=finfo(self.rate.dtype).tiny)

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        c, r = self.concentration, self.rate
        return xlogy(c, r) + xlogy(c - 1, value) - r * value - lgamma(c)

    def entropy(self):
        c = self.concentration
        return c - self.rate.log() + lgamma(c) + (1.0 - c) * digamma(c)


class Dirichlet(Distribution):
    """Dirichlet(concentration) over the simplex of the last dim."""
    arg_constraints = {"concentration": constraints.independent(constraints.positive, 1)}
    support = constraints.simplex
    has_rsample = True

    def __init__(self, concentration, validate_args=None):
        c = as_param(concentration, name="Dirichlet")
        if c.ndim < 1:
            raise ValueError("`concentration` parameter must be at least one-dimensional.")
        self.concentration = c
        super().__init__(c.shape[:-1], c.shape[-1:], validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        return self._expanded(Dirichlet, batch_shape, ("concentration",))

    @property
    def mean(self):
        return self.concentration / self.concentration.sum(-1, keepdim=True)

    @property
    def mode(self):
        c = self.concentration
        cm1 = (c - 1).clamp(min=0)
        mode = cm1 / cm1.sum(-1, keepdim=True)
        # all concentrations below 1: the density peaks at the vertex of the largest
        vertex = one_hot(c.argmax(-1), c.shape[-1]).to(c.dtype)
        return where((c < 1).all(-1, keepdim=True), vertex, mode)

    @property
    def variance(self):
        c = self.concentration
        c0 = c.sum(-1, keepdim=True)
        return c * (c0 - c) / (c0.pow(2) * (c0 + 1))

    def sample(self, sample_shape=(), generator=None):
        shape = self._extended_shape(sample_shape)
        with no_grad():
            g = standard_gamma(self.concentration, shape, generator)
            x = g / g.sum(-1, keepdim=True)
            eps = finfo(x.dtype).eps
            return x.clamp(min=finfo(x.dtype).tiny, max=1 - eps)

    def rsample(self, sample_shape=(), generator=None):
        g = reparametrized_gamma(self.concentration, self._extended_shape(sample_shape),
                                 generator)
        x = g / g.sum(-1, keepdim=True)
        return x.clamp(min=finfo(x.dtype).tiny, max=1 - finfo(x.dtype).eps)

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        c = self.concentration
        return xlogy(c - 1.0, value).sum(-1) + lgamma(c.sum(-1)) - lgamma(c).sum(-1)

    def entropy(self):
        c = self.concentration
        k, a0 = c.shape[-1], c.sum(-1)
        return (lgamma(c).sum(-1) - lgamma(a0) - (k - a0) * digamma(a0) -
                ((c - 1.0) * digamma(c)).sum(-1))


class Beta(Distribution):
    """Beta(concentration1, concentration0) on [0, 1]: a Dirichlet over (x, 1 - x)."""
    arg_constraints = {"concentration1": constraints.positive,
                       "concentration0": constraints.positive}
    support = constraints.unit_interval
    has_rsample = True

    def __init__(self, concentration1, concentration0, validate_args=None):
        a, b = broadcast_all(concentration1, concentration0, op="Beta")
        self._dirichlet = Dirichlet(stack([a, b], -1), validate_args=validate_args)
        shape = () if is_number(concentration1) and is_number(concentration0) else a.shape
        super().__init__(shape, validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(Beta)
        new._dirichlet = self._dirichlet.expand(tuple(batch_shape))
        Distribution.__init__(new, tuple(batch_shape), (), validate_args=False)
        new._validate_args = self._validate_args
        return new

    concentration1 = property(lambda self: self._dirichlet.concentration[..., 0])
    concentration0 = property(lambda self: self._dirichlet.concentration[..., 1])
    mean = property(lambda self: self.concentration1 /
                    (self.concentration1 + self.concentration0))
    mode = property(lambda self: self._dirichlet.mode[..., 0])

    @property
    def variance(self):
        total = self.concentration1 + self.concentration0
        return self.concentration1 * self.concentration0 / (total.pow(2) * (total + 1))

    def sample(self, sample_shape=(), generator=None):
        return self._dirichlet.sample(sample_shape, generator)[..., 0]

    def rsample(self, sample_shape=(), generator=None):
        return self._dirichlet.rsample(sample_shape, generator)[..., 0]

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        return self._dirichlet.log_prob(stack([value, 1.0 - value], -1))

    def entropy(self):
        return self._dirichlet.entropy()

    def __repr__(self):
        return (f"Beta(concentration1: {tuple(self.concentration1.shape)}, concentration0: "
                f"{tuple(self.concentration0.shape)})")


@register_kl(Gamma, Gamma)
def _kl_gamma_gamma(p, q):
    t1 = q.concentration * (p.rate / q.rate).log()
    t2 = lgamma(q.concentration) - lgamma(p.concentration)
    t3 = (p.concentration - q.concentration) * digamma(p.concentration)
    t4 = (q.rate - p.rate) * (p.concentration / p.rate)
    return t1 + t2 + t3 + t4


@register_kl(Dirichlet, Dirichlet)
def _kl_dirichlet_dirichlet(p, q):
    cp, cq = p.concentration, q.concentration
    sp, sq = cp.sum(-1), cq.sum(-1)
    t4 = digamma(cp) - digamma(sp).unsqueeze(-1)
    return lgamma(sp) - lgamma(sq) - (lgamma(cp) - lgamma(cq)).sum(-1) + ((cp - cq) * t4).sum(-1)


@register_kl(Beta, Beta)
def _kl_beta_beta(p, q):
    return _kl_dirichlet_dirichlet(p._dirichlet, q._dirichlet)

