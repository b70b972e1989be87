"""The float32 erf (ir/prims_special.py, rendered by codegen/llvm_special.py): within 1 ulp of
the correctly rounded result over a strided sweep of every positive float32 below 5 (denormals
included), every float32 around the branch point and the clamp, and the special values; the
compiled kernel, the eager NumPy path and the generic array path give the same bits (NaN
inputs: NaN); erf is odd; the float32 kernel runs in packed single precision."""
from __future__ import annotations

import math

import numpy as np
import pytest

import tracejit as tj
from tracejit.ir import prims_special as ps

_erf = np.frompyfunc(math.erf, 1, 1)


def _floats(lo: float, hi: float, step: int = 1) -> np.ndarray:
    a, b = np.float32(lo).view(np.int32), np.float32(hi).view(np.int32)
    return np.arange(a, b, step, dtype=np.int32).view(np.float32)


def _ulps(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    ia, ib = a.view(np.int32).astype(np.int64), b.view(np.int32).astype(np.int64)
    ia = np.where(ia < 0, -(ia & 0x7FFFFFFF), ia)
    ib = np.where(ib < 0, -(ib & 0x7FFFFFFF), ib)
    return np.abs(ia - ib)


def _inputs() -> np.ndarray:
    split = float.fromhex(ps.ERF_SPLIT)
    clamp = float.fromhex(ps.ERF_CLAMP)
    x = np.concatenate([
        _floats(1e-45, 5.0, 509),                       # every 509th float32 in (0, 5)
        _floats(split * 0.999, split * 1.001),          # every float around the branch point
        _floats(clamp * 0.999, clamp * 1.001),          # ... and around the clamp
        _floats(0.5, 0.5001), _floats(2.0, 2.0002),
        np.float32([0.0, 1e-45, 1.1754942e-38, 1.1754944e-38, 3.4028235e38, np.inf, 6.0,
                    10.0, 100.0]),
    ])
    return np.concatenate([x, -x, np.float32([np.nan, -np.nan])])


@pytest.fixture(scope="module")
def sweep():
    x = _inputs()
    with np.errstate(invalid="ignore"):
        want = _erf(x.astype(np.float64)).astype(np.float64).astype(np.float32)
    return x, want


def test_compiled_float32_erf_within_one_ulp(sweep):
    x, want = sweep
    got = tj.compile(tj.erf)(x).numpy()
    nan = np.isnan(want)
    assert np.isnan(got[nan]).all() and not np.isnan(got[~nan]).any()
    u = _ulps(got[~nan], want[~nan])
    assert u.max() <= 1
    assert (u > 0).mean() < 0.2
    np.testing.assert_array_equal(np.signbit(got[~nan]), np.signbit(x[~nan]))
    assert got[x == np.inf][0] == 1.0 and got[x == -np.inf][0] == -1.0


def test_eager_compiled_and_generic_paths_same_bits(sweep):
    x, _ = sweep
    got = tj.compile(tj.erf)(x).numpy()
    with np.errstate(invalid="ignore"):
        eager = tj.erf(tj.tensor(x)).numpy()
        generic = ps.erf_narrow(x)
    finite = ~np.isnan(x)
    np.testing.assert_array_equal(eager[finite].view(np.int32), got[finite].view(np.int32))
    np.testing.assert_array_equal(generic[finite].view(np.int32), got[finite].view(np.int32))
    assert np.isnan(eager[~finite]).all() and np.isnan(generic[~finite]).all()
    n = (x.size - 2) // 2                               # erf(-x) = -erf(x), bit for bit
    np.testing.assert_array_equal(got[n:2 * n].view(np.int32) ^ np.int32(-2 ** 31),
                                  got[:n].view(np.int32))


def test_half_precision_rounds_the_float32_result():
    x = np.linspace(-4, 4, 4001).astype(np.float16)
    got = tj.compile(tj.erf)(x).numpy()
    assert got.dtype == np.float16
    want = tj.compile(tj.erf)(x.astype(np.float32)).numpy().astype(np.float16)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(tj.erf(tj.tensor(x)).numpy(), want)


@pytest.mark.parametrize("shape", [(0,), (1,), (3, 1), (257, 33)])
def test_gelu_kernel_sizes_and_non_contiguous(shape):
    rng = np.random.default_rng(len(shape))
    base = (rng.standard_normal(shape + (2,)) * 3).astype(np.float32)
    x = base[..., 0]                                    # every other element
    got = tj.compile(lambda a: tj.nn.functional.gelu(a))(x).numpy()
    xd = x.astype(np.float64)
    ref = 0.5 * xd * (1 + _erf(xd / math.sqrt(2)).astype(np.float64))
    # 1 + erf(x / sqrt(2)) cancels for negative x: an ulp of erf is worth |x| * 2^-25
    assert got.shape == x.shape
    assert (np.abs(got - ref) <= 1e-6 * np.abs(ref) + 1.5e-7 * np.abs(xd)).all()


def test_kernel_is_packed_single_precision():
    asm = tj.compile(tj.erf).lower(np.zeros(100_000, np.float32)).asm
    assert "ps\t%zmm" in asm or "ps\t%ymm" in asm
    assert "pd\t%zmm" not in asm and "pd\t%ymm" not in asm
