"""The loop IR's reductions on a real GPU: leading-axis reductions split in two stages (partial
sums over chunks of rows, then a finishing kernel) give the CPU backend's result bit for bit
(one order of additions on both targets) and NumPy's float64 sum rounded once; every kernel kind
the schedule builds runs against NumPy. Marked `gpu`; skipped without CuPy and a GPU."""
from __future__ import annotations

import numpy as np
import pytest

import tracejit as tj

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not tj.cuda_available(), reason="needs an NVIDIA GPU and CuPy")]


def _gpu(fn, *args):
    return tj.compile(fn)(*[tj.tensor(a, device="cuda") for a in args]).cpu().numpy()


def _cancelling(shape, seed=0):
    x = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    x.reshape(-1, shape[-1])[:4, 0] = [1e17, 1, -1e17, 1]    # order-sensitive column 0
    return x


@pytest.mark.parametrize("shape,axes", [((16, 256, 512), (0, 1)), ((300, 700), (0,)),
                                        ((40, 129), (0,)), ((100_000, 3), (0,)),
                                        ((7, 1, 5), (0, 1))])
def test_column_sums_on_the_gpu_equal_the_cpu_bit_for_bit(shape, axes):
    x = _cancelling(shape)
    for fn in (lambda a: a.sum(axes), lambda a: (a * 2).sum(axes),
               lambda a: a.double().sum(axes)):
        got, cpu = _gpu(fn, x), tj.compile(fn)(x).numpy()
        assert got.dtype == cpu.dtype and got.tobytes() == cpu.tobytes()
    want = x.astype(np.float64).sum(axes)
    got = _gpu(lambda a: a.sum(axes), x)
    np.testing.assert_allclose(got.reshape(-1)[1:], want.reshape(-1)[1:].astype(np.float32),
                               rtol=1e-6, atol=1e-5)


def test_column_max_min_and_integer_sums_on_the_gpu():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((4096, 37)).astype(np.float32)
    x[100, 3] = np.nan
    np.testing.assert_array_equal(_gpu(lambda a: tj.amax(a, 0), x), x.max(0))
    np.testing.assert_array_equal(_gpu(lambda a: tj.amin(a, 0), x), x.min(0))
    k = rng.integers(-2 ** 31, 2 ** 31 - 1, (5000, 9), dtype=np.int64)
    np.testing.assert_array_equal(_gpu(lambda a: a.sum(0), k), k.sum(0))


def test_every_kernel_kind_on_the_gpu():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((64, 300)).astype(np.float32)
    idx = rng.integers(0, 64, 500)
    cases = [
        (lambda a: a * 2 - 1, lambda a: a * 2 - 1),
        (lambda a: a.sum(1), lambda a: a.astype(np.float64).sum(1)),
        (lambda a: a.sum(), lambda a: a.astype(np.float64).sum()),
        (lambda a: tj.softmax(a, -1), lambda a: np.exp(a - a.max(-1, keepdims=True)) /
         np.exp(a - a.max(-1, keepdims=True)).sum(-1, keepdims=True)),
        (lambda a: tj.cumsum(a, 1), lambda a: np.cumsum(a.astype(np.float64), 1)),
        (tj.grad(lambda a: a[tj.tensor(idx)].sum()),
         lambda a: np.bincount(idx, minlength=64)[:, None] * np.ones_like(a)),
    ]
    for fn, ref in cases:
        np.testing.assert_allclose(_gpu(fn, x), ref(x), rtol=2e-5, atol=2e-5)
