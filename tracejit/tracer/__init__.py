"""Define-by-run tensors, the eager autograd engine, and tracing into IR."""
from . import methods as _methods
from .tensor import Tensor

_methods.install()

__all__ = ["Tensor"]
