"""tracejit.optim: torch.optim's optimizers and schedulers, each step a fused compiled update."""
from . import lr_scheduler
from .adam import Adam, AdamW
from .adam_variants import NAdam, RAdam, Adamax
from .adaptive import Adadelta, Adagrad, RMSprop
from .optimizer import Optimizer
from .lbfgs import LBFGS
from .sgd import SGD

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "NAdam", "RAdam", "Adamax", "RMSprop",
           "Adagrad", "Adadelta", "LBFGS", "lr_scheduler"]
