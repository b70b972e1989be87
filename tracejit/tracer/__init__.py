"""Define-by-run tensors, the eager autograd engine, and tracing into IR."""
from .tensor import Tensor

__all__ = ["Tensor"]
