"""`tj.autograd`: the PyTorch-style autograd namespace."""
from . import forward_ad
from .autograd import backward, grad
from .backward_nodes import AccumulateGrad, Node
from .function import Function, FunctionCtx, GradcheckError, checkpoint, gradcheck
from .state import enable_grad, inference_mode, no_grad, set_grad_enabled
from .tensor_base import TensorBase as Tensor


def Variable(data: Tensor, requires_grad: bool = False, volatile: bool = False) -> Tensor:  # noqa: N802
    """The deprecated `Variable(t, requires_grad=False)` of old PyTorch code: as in PyTorch,
    a Tensor sharing t's storage, detached from t's history, with `requires_grad` as given."""
    if not isinstance(data, Tensor):
        raise TypeError(f"Variable data has to be a tensor, but got {type(data).__name__}")
    out = data.detach()
    if requires_grad:
        out.requires_grad_(True)
    return out


__all__ = ["forward_ad", "AccumulateGrad", "Node", "backward", "grad", "Function", "FunctionCtx",
           "GradcheckError", "checkpoint", "gradcheck", "enable_grad", "no_grad",
           "set_grad_enabled", "inference_mode", "Variable"]
