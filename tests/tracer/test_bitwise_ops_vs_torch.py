"""`&`, `|`, `^`, `~` (bitwise_and/or/xor/not) and logical_xor against torch: bit by bit on
integers (int32 and int64, negative values, promotion with Python ints and between dtypes,
broadcasting, non-contiguous operands), logical on bools; floats refused as in torch. Eagerly,
compiled for the CPU (LLVM), and as CUDA source compiled by nvcc where it is installed."""
import shutil
import subprocess

import numpy as np
import pytest

import tracejit as tj

torch = pytest.importorskip("torch")

OPS = {"and": lambda a, b: a & b, "or": lambda a, b: a | b, "xor": lambda a, b: a ^ b,
       "not": lambda a, b: ~a, "rand": lambda a, b: 5 & b, "ror": lambda a, b: a | -4,
       "fn_xor": lambda a, b: a.bitwise_xor(b), "fn_not": lambda a, b: a.bitwise_not()}
INTS = [np.int32, np.int64]     # (tracejit's integer dtypes)


def _pair(dtype, rng):
    info = np.iinfo(dtype)
    a = rng.integers(info.min, int(info.max) + 1, (3, 8), dtype=dtype)[:, ::2]   # strided
    b = rng.integers(info.min, int(info.max) + 1, (1, 4), dtype=dtype)            # broadcast
    return a, b


@pytest.mark.parametrize("compiled", [False, True])
@pytest.mark.parametrize("dtype", INTS)
@pytest.mark.parametrize("op", sorted(OPS))
def test_integers_bit_by_bit(op, dtype, compiled):
    a, b = _pair(dtype, np.random.default_rng(0))
    f = OPS[op]
    fn = tj.compile(f) if compiled else f
    got = fn(tj.tensor(a), tj.tensor(b))
    want = f(torch.tensor(np.ascontiguousarray(a)), torch.tensor(b))
    assert got.dtype.np == np.dtype(dtype)
    np.testing.assert_array_equal(got.numpy(), want.numpy())


@pytest.mark.parametrize("compiled", [False, True])
@pytest.mark.parametrize("op", sorted(OPS))
def test_bools_are_logical_and_mixed_dtypes_promote(op, compiled):
    m = np.array([[True, False, True], [False, False, True]])
    n = np.array([True, False, False])
    f = OPS[op]
    fn = tj.compile(f) if compiled else f
    for x, y in ((m, n), (m, np.array([3, -1, 0])), (np.array([7, 9], np.int32),
                                                     np.array([1, 3], np.int64))):
        if op in ("rand", "ror") and x.dtype == bool and y.dtype == bool:
            continue            # (a Python int with bools: int64 in both, covered below)
        got = fn(tj.tensor(x), tj.tensor(y))
        want = f(torch.tensor(x), torch.tensor(y))
        assert str(want.dtype).replace("torch.", "") in (got.dtype.np.name, "bool")
        np.testing.assert_array_equal(got.numpy(), want.numpy())


@pytest.mark.parametrize("compiled", [False, True])
def test_logical_xor_of_any_dtypes(compiled):
    a, b = np.array([0, 3, -1, 0]), np.array([0.0, 0.0, 2.5, np.nan])
    fn = tj.compile(tj.logical_xor) if compiled else tj.logical_xor
    np.testing.assert_array_equal(fn(tj.tensor(a), tj.tensor(b)).numpy(),
                                  torch.logical_xor(torch.tensor(a), torch.tensor(b)).numpy())


def test_float_operands_raise_as_in_torch():
    x = tj.tensor(np.array([1.5]))
    with pytest.raises(TypeError, match=r"bitwise_or \(\|\).*floating-point.*f64\[1\].*"
                                        r"test_bitwise_ops_vs_torch.py"):
        x | x
    with pytest.raises(TypeError, match="bitwise_not"):
        tj.compile(lambda t: ~t)(np.ones(2))
    with pytest.raises(NotImplementedError):
        torch.tensor([1.5]) | torch.tensor([1.5])


def test_masks_compose_with_integer_bits_in_one_kernel():
    # a fused kernel mixing them: (x & 1) == 0 selects even entries
    x = np.arange(-6, 6)
    f = tj.compile(lambda t: tj.where((t & 1) == 0, t ^ 0xF, ~t))
    want = torch.where((torch.tensor(x) & 1) == 0, torch.tensor(x) ^ 0xF, ~torch.tensor(x))
    np.testing.assert_array_equal(f(x).numpy(), want.numpy())


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not installed")
def test_cuda_source_compiles(tmp_path, fake_gpu):
    f = tj.compile(lambda a, b, m: ((a & b) | (~a ^ 3), ~m & (m | m)), device="cuda")
    src = f.lower(np.arange(8, dtype=np.int32), np.arange(8, dtype=np.int32),
                  np.ones(8, bool)).cuda_source
    assert "~" in src and "!" in src
    cu = tmp_path / "bitwise.cu"
    cu.write_text(src)
    r = subprocess.run(["nvcc", "-ptx", "-arch=sm_90", "-o", str(tmp_path / "b.ptx"), str(cu)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
