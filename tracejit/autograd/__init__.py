"""`tracejit.autograd` (also `tj.autograd`): a module, so that PyTorch code's
`from torch.autograd import Variable, Function` ports as `from tracejit.autograd import ...`."""
import sys as _sys

from ..tracer.autograd_api import *  # noqa: F401,F403
from ..tracer.autograd_api import __all__, forward_ad  # noqa: F401

# `import tracejit.autograd.forward_ad as fwAD`, PyTorch's spelling, finds the dual-tensor API
_sys.modules[__name__ + ".forward_ad"] = forward_ad

from . import functional  # noqa: E402  (torch.autograd.functional)
