"""`tracejit.special` (also `tj.special`): torch.special's names."""
from .tracer.special_ops import digamma, erfinv, i0, i0e, i1, i1e, polygamma
from .tracer.special_ops import lgamma as gammaln

psi = digamma

__all__ = ["digamma", "psi", "erfinv", "gammaln", "i0", "i0e", "i1", "i1e", "polygamma"]
