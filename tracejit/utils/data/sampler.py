"""Samplers as torch.utils.data's: the order in which a DataLoader visits a map-style
dataset's indices, and `BatchSampler`, which groups them into batches.

Randomness comes from tracejit's generators (tracer/rng.py): each pass of a random sampler
reserves one stream of `generator` (a tj.Generator; default: the CPU generator, which
tj.manual_seed seeds) and draws with NumPy from that stream's (seed, offset). A seed thus fixes
every epoch's order, and each epoch (each `iter()`) has a new one, as with torch; the
permutations themselves are not torch's."""
from __future__ import annotations

import itertools
from typing import Any, Iterable, Iterator, Sized

import numpy as np

from ...tracer.rng import Generator, default_generator


def _rng(generator: Any) -> np.random.Generator:
    if generator is None:
        generator = default_generator("cpu")
    elif not isinstance(generator, Generator):
        raise TypeError(f"tracejit.utils.data: generator must be a tracejit Generator (e.g. "
                        f"tj.default_generator('cpu') or tj.Generator(tj.device('cpu'))), got "
                        f"{type(generator).__module__}.{type(generator).__name__}")
    seed, offset = generator.reserve(1)
    return np.random.default_rng([seed, offset])


def permutation(n: int, generator: Any = None) -> np.ndarray:
    """A random permutation of 0..n-1 (int64) from one stream of `generator`."""
    return _rng(generator).permutation(n).astype(np.int64)


class Sampler:
    """Base class: an iterable of indices (or of lists of indices, for a batch sampler)."""

    def __init__(self, data_source: Sized | None = None) -> None:
        pass

    def __iter__(self) -> Iterator:
        raise NotImplementedError


class SequentialSampler(Sampler):
    """0, 1, ..., len(data_source) - 1."""

    def __init__(self, data_source: Sized) -> None:
        self.data_source = data_source

    def __iter__(self) -> Iterator[int]:
        return iter(range(len(self.data_source)))

    def __len__(self) -> int:
        return len(self.data_source)


class RandomSampler(Sampler):
    """A random order of the indices (each once per pass; num_samples > n repeats whole
    permutations), or num_samples indices drawn uniformly with replacement."""

    def __init__(self, data_source: Sized, replacement: bool = False,
                 num_samples: int | None = None, generator: Any = None) -> None:
        self.data_source = data_source
        self.replacement = replacement
        self._num_samples = num_samples
        self.generator = generator
        if not isinstance(self.replacement, bool):
            raise TypeError(f"replacement should be a boolean value, but got "
                            f"replacement={self.replacement}")
        if not isinstance(self.num_samples, int) or self.num_samples <= 0:
            raise ValueError(f"num_samples should be a positive integer value, but got "
                             f"num_samples={self.num_samples}")

    @property
    def num_samples(self) -> int:
        if self._num_samples is None:
            return len(self.data_source)
        return self._num_samples

    def __iter__(self) -> Iterator[int]:
        n = len(self.data_source)
        rng = _rng(self.generator)
        if self.replacement:
            yield from rng.integers(0, n, size=self.num_samples).tolist()
            return
        for _ in range(self.num_samples // n):
            yield from rng.permutation(n).tolist()
        yield from rng.permutation(n).tolist()[:self.num_samples % n]

    def __len__(self) -> int:
        return self.num_samples


class SubsetRandomSampler(Sampler):
    """The given indices, in a random order each pass."""

    def __init__(self, indices: Iterable[int], generator: Any = None) -> None:
        self.indices = indices
        self.generator = generator

    def __iter__(self) -> Iterator[int]:
        for i in _rng(self.generator).permutation(len(self.indices)).tolist():
            yield self.indices[i]

    def __len__(self) -> int:
        return len(self.indices)


class BatchSampler(Sampler):
    """Lists of batch_size indices from `sampler`; the last one shorter, or dropped with
    drop_last."""

    def __init__(self, sampler: Iterable[int], batch_size: int, drop_last: bool) -> None:
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size <= 0:
            raise ValueError(f"batch_size should be a positive integer value, but got "
                             f"batch_size={batch_size}")
        if not isinstance(drop_last, bool):
            raise ValueError(f"drop_last should be a boolean value, but got "
                             f"drop_last={drop_last}")
        self.sampler = sampler
        self.batch_size = batch_size
        self.drop_last = drop_last

    def __iter__(self) -> Iterator[list[int]]:
        it = iter(self.sampler)
        if self.drop_last:
            for batch in zip(*[it] * self.batch_size):
                yield [*batch]
            return
        batch = [*itertools.islice(it, self.batch_size)]
        while batch:
            yield batch
            batch = [*itertools.islice(it, self.batch_size)]

    def __len__(self) -> int:
        if self.drop_last:
            return len(self.sampler) // self.batch_size
        return (len(self.sampler) + self.batch_size - 1) // self.batch_size
