"""Reshapes fused into a kernel re-index only the runs of axes they merge or split: an axis a
reshape leaves alone costs no integer division (the im2col loop of a convolution went from ~12
divisions per element to a few)."""
from __future__ import annotations

import math
import re

import numpy as np

import tracejit as tj
from tracejit.ir.index_maps import reshape_runs as _reshape_runs


def test_runs_pair_axes_with_equal_products():
    assert _reshape_runs((2, 1, 3), (2, 3)) == [([0, 1], [0]), ([2], [1])]
    assert _reshape_runs((6,), (2, 3)) == [([0], [0, 1])]
    assert _reshape_runs((4, 6), (2, 12)) == [([0, 1], [0, 1])]
    assert _reshape_runs((3, 1, 1), (3,)) == [([0], [0]), ([1, 2], [])]
    assert _reshape_runs((), (1, 1)) == [([], [0, 1])]
    rng = np.random.default_rng(0)
    for _ in range(500):
        a = [int(d) for d in rng.choice([1, 2, 3, 4], rng.integers(0, 6))]
        b = list(a)
        while len(b) > 1 and rng.random() < 0.5:       # merge neighbours, then maybe add 1s
            k = int(rng.integers(0, len(b) - 1))
            b[k:k + 2] = [b[k] * b[k + 1]]
        if rng.random() < 0.3:
            b.insert(int(rng.integers(0, len(b) + 1)), 1)
        runs = _reshape_runs(tuple(a), tuple(b))
        assert [i for ra, _ in runs for i in ra] == list(range(len(a)))
        assert [j for _, rb in runs for j in rb] == list(range(len(b)))
        assert all(math.prod(a[i] for i in ra) == math.prod(b[j] for j in rb) for ra, rb in runs)


def test_untouched_axes_cost_no_division_and_values_are_right():
    x = np.arange(8 * 30, dtype=np.float32).reshape(8, 30)
    f = tj.compile(lambda v: (v * 2).reshape(8, 6, 5).transpose(1, 2))
    np.testing.assert_array_equal(f(x).numpy(), (x * 2).reshape(8, 6, 5).transpose(0, 2, 1))
    ir = f.lower(x).llvm_ir
    assert len(re.findall(r"= [us](?:div|rem) ", ir)) <= 1       # was 4: every axis re-divided
    y = np.random.default_rng(1).standard_normal((2, 3, 4, 5)).astype(np.float32)
    g = tj.compile(lambda v: (v + 1).reshape(6, 20).T.reshape(4, 5, 1, 6))
    np.testing.assert_array_equal(g(y).numpy(), (y + 1).reshape(6, 20).T.reshape(4, 5, 1, 6))
