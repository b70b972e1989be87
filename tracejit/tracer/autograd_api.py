"""`tj.autograd`: the PyTorch-style autograd namespace."""
from .autograd import AccumulateGrad, Node, backward, grad
from .function import Function, FunctionCtx, GradcheckError, checkpoint, gradcheck
from .state import enable_grad, no_grad, set_grad_enabled

__all__ = ["AccumulateGrad", "Node", "backward", "grad", "Function", "FunctionCtx",
           "GradcheckError", "checkpoint", "gradcheck", "enable_grad", "no_grad",
           "set_grad_enabled"]
