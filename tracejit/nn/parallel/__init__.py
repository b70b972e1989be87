"""`tracejit.nn.parallel` (also `tj.nn.parallel`): DistributedDataParallel."""
from .distributed import DistributedDataParallel

__all__ = ["DistributedDataParallel"]
