"""`tracejit.nn` (also `tj.nn`): torch.nn's modules, layers, losses and helpers."""
from . import functional, init, utils
from .parameter import Parameter
from .module import Module
from .container import ModuleDict, ModuleList, Sequential
