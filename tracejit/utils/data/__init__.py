"""tracejit.utils.data: torch.utils.data's map-style and iterable datasets, samplers,
`default_collate` into tracejit tensors, `DataLoader` (in-process loading) and
`random_split`. Shuffling draws from tracejit's generators (tj.manual_seed, or a
tj.Generator passed as `generator=`): the same kind of permutation as torch's, not the same
numbers."""
from .collate import default_collate, default_convert
from .dataloader import DataLoader
from .dataset import (ConcatDataset, Dataset, IterableDataset, Subset, TensorDataset,
                      random_split)
from .sampler import (BatchSampler, RandomSampler, Sampler, SequentialSampler,
                      SubsetRandomSampler)

__all__ = ["Dataset", "IterableDataset", "TensorDataset", "Subset", "ConcatDataset",
           "random_split", "Sampler", "SequentialSampler", "RandomSampler",
           "SubsetRandomSampler", "BatchSampler", "default_collate", "default_convert",
           "DataLoader"]
