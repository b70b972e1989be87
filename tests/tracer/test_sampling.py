"""randperm and multinomial: valid results, seeded reproducibility, the right distributions
(chi-square-style bounds on many draws), eagerly and compiled, and clear errors."""
from __future__ import annotations

import numpy as np
import pytest

import tracejit as tj


def test_randperm_is_a_seeded_permutation_eager_and_compiled():
    for n in (0, 1, 2, 17, 1000):
        p = tj.randperm(n)
        assert p.dtype is tj.int64 and p.shape == (n,)
        np.testing.assert_array_equal(np.sort(p.numpy()), np.arange(n))
    tj.manual_seed(3)
    a = tj.randperm(50).numpy()
    tj.manual_seed(3)
    np.testing.assert_array_equal(tj.randperm(50).numpy(), a)
    assert tj.randperm(5, dtype=tj.int32).dtype is tj.int32
    f = tj.compile(lambda: tj.randperm(30))
    x, y = f().numpy(), f().numpy()
    assert sorted(x) == sorted(y) == list(range(30)) and not np.array_equal(x, y)


def test_randperm_is_uniform():
    counts = np.zeros((4, 4))
    for _ in range(4000):
        for pos, v in enumerate(tj.randperm(4).numpy()):
            counts[pos, v] += 1
    assert np.abs(counts / 4000 - 0.25).max() < 0.035


@pytest.mark.parametrize("compiled", [False, True])
def test_multinomial_with_replacement_follows_the_weights(compiled):
    w = np.array([[0.1, 0.0, 0.6, 0.3], [2.0, 2.0, 2.0, 0.0]])
    f = (tj.compile(lambda p: tj.multinomial(p, 20000, replacement=True)) if compiled
         else lambda p: tj.multinomial(tj.tensor(p), 20000, replacement=True))
    s = f(w).numpy()
    assert s.shape == (2, 20000) and s.dtype == np.int64
    for row, weights in zip(s, w):
        freq = np.bincount(row, minlength=4) / row.size
        np.testing.assert_allclose(freq, weights / weights.sum(), atol=0.015)
        assert freq[weights == 0].sum() == 0
    one = tj.multinomial(tj.tensor([0.0, 0.0, 5.0]), 10, replacement=True).numpy()
    np.testing.assert_array_equal(one, np.full(10, 2))


def test_multinomial_without_replacement():
    w = np.array([0.1, 0.0, 0.6, 0.3])
    first = np.zeros(4)
    for _ in range(3000):
        s = tj.multinomial(tj.tensor(w), 3).numpy()
        assert sorted(s) == [0, 2, 3]                  # distinct, never the zero weight
        first[s[0]] += 1
    np.testing.assert_allclose(first / 3000, w, atol=0.03)
    s = tj.compile(lambda p: tj.multinomial(p, 4))(np.ones((3, 4))).numpy()
    assert all(sorted(r) == [0, 1, 2, 3] for r in s)
    tj.manual_seed(7)
    a = tj.multinomial(tj.tensor(np.ones(10)), 5).numpy()
    tj.manual_seed(7)
    np.testing.assert_array_equal(tj.multinomial(tj.tensor(np.ones(10)), 5).numpy(), a)


def test_multinomial_errors():
    with pytest.raises(ValueError, match=r"multinomial: cannot draw 5 samples without "
                                         r"replacement from 4 categories.*test_sampling.py"):
        tj.multinomial(tj.tensor(np.ones(4)), 5)
    with pytest.raises(ValueError, match="fewer categories of nonzero probability"):
        tj.multinomial(tj.tensor([1.0, 0.0, 1.0]), 3)
    with pytest.raises(ValueError, match="finite and non-negative"):
        tj.multinomial(tj.tensor([1.0, -1.0]), 1)
    with pytest.raises(ValueError, match="positive sum"):
        tj.multinomial(tj.tensor([[1.0, 1.0], [0.0, 0.0]]), 1, replacement=True)
    with pytest.raises(TypeError, match="1-D or 2-D float"):
        tj.multinomial(tj.tensor([1, 2]), 1)
    with pytest.raises(ValueError, match="randperm: n must be non-negative"):
        tj.randperm(-1)
