"""`tracejit.special` (also `tj.special`): torch.special's names. The gamma family, erfinv,
ndtri, erfcx and the Bessel functions are primitives (ir/prims_gamma.py); the rest compose
from tracejit's ops with torch's gradients."""
from __future__ import annotations

from .tracer import composites as _C
from .tracer import math_ops as _M
from .tracer import ops as _ops
from .tracer import trig_ops as _T
from .tracer.special_ops import (digamma, entr, erfcx, erfinv, i0, i0e, i1, i1e, log_ndtr,
                                 ndtr, ndtri, polygamma, xlog1py, zeta)
from .tracer.special_ops import lgamma as gammaln
from .tracer.special_ops import mvlgamma as _mvlgamma
from .tracer.tensor_base import TensorBase as _Tensor

psi = digamma
erf, erfc = _ops.erf, _ops.erfc
expit = _C.sigmoid
logit, xlogy, sinc, expm1, log1p = _M.logit, _M.xlogy, _M.sinc, _M.expm1, _M.log1p
exp2 = _T.exp2
round = _M.round  # noqa: A001


def multigammaln(input, p: int) -> _Tensor:  # noqa: A002
    """torch.special.multigammaln: the multivariate log-gamma (tj.mvlgamma)."""
    return _mvlgamma(input, p)


def logsumexp(input, dim, keepdim: bool = False) -> _Tensor:  # noqa: A002
    """torch.special.logsumexp(input, dim, keepdim=False)."""
    return _C.logsumexp(input, dim=dim, keepdim=keepdim)


def softmax(input, dim: int, dtype=None) -> _Tensor:  # noqa: A002
    """torch.special.softmax(input, dim, dtype=None)."""
    return _C.softmax(input, dim=dim, dtype=dtype)


def log_softmax(input, dim: int, dtype=None) -> _Tensor:  # noqa: A002
    """torch.special.log_softmax(input, dim, dtype=None)."""
    return _C.log_softmax(input, dim=dim, dtype=dtype)


__all__ = ["digamma", "psi", "polygamma", "gammaln", "multigammaln", "erf", "erfc", "erfcx",
           "erfinv", "ndtr", "ndtri", "log_ndtr", "expit", "logit", "xlogy", "xlog1py", "entr",
           "sinc", "i0", "i0e", "i1", "i1e", "logsumexp", "softmax", "log_softmax", "round",
           "expm1", "exp2", "log1p", "zeta"]
