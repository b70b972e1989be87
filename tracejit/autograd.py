"""`tracejit.autograd` (also `tj.autograd`): a module, so that PyTorch code's
`from torch.autograd import Variable, Function` ports as `from tracejit.autograd import ...`."""
from .tracer.autograd_api import *  # noqa: F401,F403
from .tracer.autograd_api import __all__  # noqa: F401
