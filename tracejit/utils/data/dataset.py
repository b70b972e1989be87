"""Datasets as torch.utils.data's: `Dataset` (map-style: __getitem__ and __len__),
`IterableDataset`, `TensorDataset` (rows of tensors sharing a first dimension), `Subset`,
`ConcatDataset` and `random_split`.

A TensorDataset, or a Subset of one, also gives a whole batch at once (`fetch_batch`): one
gather per tensor, `t[indices]`, which is what stacking the rows `t[i]` gives (the DataLoader
uses it with the default collate only, in place of one indexing op per sample and a stack)."""
from __future__ import annotations

import bisect
import itertools
import math
import warnings
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from ...tracer.creation import tensor
from ...tracer.tensor import Tensor
from .sampler import permutation


class Dataset:
    """A map-style dataset: subclasses define `__getitem__(index)` (and usually `__len__`)."""

    def __getitem__(self, index: Any) -> Any:
        raise NotImplementedError("Subclasses of Dataset should implement __getitem__.")

    def __add__(self, other: "Dataset") -> "ConcatDataset":
        return ConcatDataset([self, other])


class IterableDataset(Dataset):
    """A dataset that is a stream of samples: subclasses define `__iter__`."""

    def __iter__(self) -> Iterator:
        raise NotImplementedError("Subclasses of IterableDataset should implement __iter__.")

    def __add__(self, other: Any):
        raise TypeError("tracejit.utils.data: chaining iterable datasets (ChainDataset) is "
                        "not supported; use itertools.chain in an IterableDataset")


class TensorDataset(Dataset):
    """Samples are `(t[i] for t in tensors)`: tensors (NumPy arrays are made tensors) that
    share the size of their first dimension."""

    def __init__(self, *tensors: Any) -> None:
        tensors = tuple(t if isinstance(t, Tensor) else tensor(np.asarray(t))
                        for t in tensors)
        for t in tensors:
            if t.ndim == 0:
                raise ValueError("TensorDataset: every tensor needs a first dimension to "
                                 "index samples by, got a 0-d tensor")
        if any(tensors[0].shape[0] != t.shape[0] for t in tensors):
            raise AssertionError("Size mismatch between tensors")
        self.tensors = tensors

    def __getitem__(self, index: Any) -> tuple:
        return tuple(t[index] for t in self.tensors)

    def __len__(self) -> int:
        return self.tensors[0].shape[0]

    def _rows(self, indices: list[int]) -> list:
        idx = np.asarray(indices, dtype=np.int64)
        n = len(self)
        if idx.size and (idx.min() < -n or idx.max() >= n):
            bad = int(idx[(idx < -n) | (idx >= n)][0])
            raise IndexError(f"TensorDataset: index {bad} is out of range for a dataset of "
                             f"{n} samples")
        return [t[idx] for t in self.tensors]


class Subset(Dataset):
    """The samples of `dataset` at `indices`."""

    def __init__(self, dataset: Any, indices: Sequence[int]) -> None:
        self.dataset = dataset
        self.indices = indices

    def __getitem__(self, idx: Any) -> Any:
        if isinstance(idx, list):
            return self.dataset[[self.indices[i] for i in idx]]
        return self.dataset[self.indices[idx]]

    def __getitems__(self, indices: list[int]) -> list:
        fetch = getattr(self.dataset, "__getitems__", None)
        if callable(fetch):
            return fetch([self.indices[i] for i in indices])
        return [self.dataset[self.indices[i]] for i in indices]

    def __len__(self) -> int:
        return len(self.indices)

class ConcatDataset(Dataset):
    """The samples of several map-style datasets, one after another."""

    def __init__(self, datasets: Iterable[Dataset]) -> None:
        self.datasets = list(datasets)
        if len(self.datasets) == 0:
            raise AssertionError("datasets should not be an empty iterable")
        for d in self.datasets:
            if isinstance(d, IterableDataset):
                raise AssertionError("ConcatDataset does not support IterableDataset")
        self.cumulative_sizes = list(itertools.accumulate(len(d) for d in self.datasets))

    def __len__(self) -> int:
        return self.cumulative_sizes[-1]

    def __getitem__(self, idx: int) -> Any:
        if idx < 0:
            if -idx > len(self):
                raise ValueError("absolute value of index should not exceed dataset length")
            idx = len(self) + idx
        which = bisect.bisect_right(self.cumulative_sizes, idx)
        start = self.cumulative_sizes[which - 1] if which > 0 else 0
        return self.datasets[which][idx - start]


def random_split(dataset: Any, lengths: Sequence[int | float],
                 generator: Any = None) -> list[Subset]:
    """Split into non-overlapping Subsets of the given lengths, or of fractions of the whole
    (floor(frac * n) each, the remainder dealt out one at a time from the first), after a
    random permutation drawn from `generator` (a tj.Generator; default: the CPU one)."""
    if math.isclose(sum(lengths), 1) and sum(lengths) <= 1:
        sizes = []
        for i, frac in enumerate(lengths):
            if frac < 0 or frac > 1:
                raise ValueError(f"Fraction at index {i} is not between 0 and 1")
            sizes.append(math.floor(len(dataset) * frac))
        for i in range(len(dataset) - sum(sizes)):
            sizes[i % len(sizes)] += 1
        lengths = sizes
        for i, length in enumerate(lengths):
            if length == 0:
                warnings.warn(f"Length of split at index {i} is 0. This might result in an "
                              f"empty dataset.", stacklevel=2)
    if sum(lengths) != len(dataset):
        raise ValueError("Sum of input lengths does not equal the length of the input dataset!")
    indices = permutation(int(sum(lengths)), generator).tolist()
    return [Subset(dataset, indices[end - n:end])
            for end, n in zip(itertools.accumulate(lengths), lengths)]


def fetch_batch(dataset: Any, indices: list[int]) -> list | None:
    """default_collate([dataset[i] for i in indices]) by one gather per tensor where the
    dataset is a TensorDataset (under any Subsets); None for any other dataset."""
    while type(dataset) is Subset:
        indices = [dataset.indices[i] for i in indices]
        dataset = dataset.dataset
    if type(dataset) is TensorDataset:          # (a subclass may override __getitem__)
        return dataset._rows(indices)
    return None
