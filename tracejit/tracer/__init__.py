"""Define-by-run tensors, the eager autograd engine, and tracing into IR."""
from . import dispatch as _dispatch  # noqa: F401  (installs Tensor's primitive binding)
from . import methods as _methods
from .tensor import Tensor

_methods.install()

__all__ = ["Tensor"]
