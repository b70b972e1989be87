"""`tracejit.amp` (also `tj.amp`): automatic mixed precision as PyTorch's `torch.amp`.

`autocast` runs matmuls and linear layers in float16/bfloat16 and keeps reductions, softmax,
norms, losses and exp/log in float32; `GradScaler` scales the loss so that float16 gradients
do not underflow, and skips optimizer steps whose gradients overflowed."""
from ..tracer.autocast import autocast, get_autocast_dtype, is_autocast_enabled
from .grad_scaler import GradScaler, OptState

__all__ = ["autocast", "GradScaler", "OptState", "is_autocast_enabled", "get_autocast_dtype"]
