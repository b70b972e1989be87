"""uint8, int8 and int16 against torch: names and aliases, NumPy round trips, torch's type
promotion (uint8 with int8 is int16, a Python int wraps into the tensor's dtype, sums are
int64), wrapping arithmetic, unsigned compare/divide/extend for uint8, float -> small int casts,
the shifts `<<` and `>>` on every integer dtype (counts outside [0, bits) too), and uint8 index
masks. Eagerly, compiled for the CPU (LLVM: one compile per dtype), and as CUDA source compiled
by nvcc where it is installed."""
import shutil
import subprocess
import warnings

import numpy as np
import pytest

import tracejit as tj
from tracejit.ir.dtypes import as_dtype

torch = pytest.importorskip("torch")

SMALL = [np.uint8, np.int8, np.int16]
ALL_INTS = SMALL + [np.int32, np.int64]


def _rand(dtype, shape, seed=0):
    info = np.iinfo(dtype)
    return np.random.default_rng(seed).integers(info.min, int(info.max) + 1, shape, dtype=dtype)


def _ops(a, b, m):
    """Many ops at once (one compile): m is a module namespace, tj or torch."""
    return (a + b, a - b, a * b, -a, abs(a), a // b, a % b, a < b, a >= b, a == b,
            m.maximum(a, b), a * 3 + 200, a - 1000, a.amax(1), a.amin(0), a.sum(), a.prod(1),
            a ** 3, a.sign(), a / b, a.float() * 0.5, (a.float() * 3.7 - 100).to(a.dtype),
            a.long() + 1, a.byte() + 1, a.char() - 1, a.short() * 2, a & b, a | 5, ~a,
            m.where(a > 3, a, -1), a.cumsum(1), a.any(1), a.all(0), a.sort(1)[0], a.argmax(0),
            a.clamp(-3, 100), m.cat([a, b]))


@pytest.mark.parametrize("compiled", [False, True])
@pytest.mark.parametrize("dtype", SMALL)
def test_ops_match_torch(dtype, compiled):
    a, b = _rand(dtype, (6, 35)), _rand(dtype, (6, 35), 1)   # 35: vector body and scalar tail
    b[b == 0] = 1              # (torch's CPU kernel raises for integer division by zero)
    fn = tj.compile(lambda x, y: _ops(x, y, tj)) if compiled else lambda x, y: _ops(x, y, tj)
    got = fn(tj.tensor(a), tj.tensor(b))
    want = _ops(torch.tensor(a), torch.tensor(b), torch)
    assert len(got) == len(want)
    for i, (g, w) in enumerate(zip(got, want)):
        assert g.dtype.np == w.numpy().dtype, (i, g.dtype, w.dtype)
        np.testing.assert_allclose(g.numpy(), w.numpy(), rtol=1e-6, err_msg=f"op {i}")


def test_names_aliases_and_numpy_round_trip():
    assert (tj.uint8, tj.int8, tj.int16) == (as_dtype("uint8"), as_dtype("int8"),
                                             as_dtype("int16"))
    assert tj.short is tj.int16 and as_dtype(np.uint8) is tj.uint8 and as_dtype("byte") is tj.uint8
    assert not tj.uint8.is_signed and tj.int8.is_signed
    for d in SMALL:
        a = _rand(d, (5,))
        t = tj.tensor(a)
        assert t.numpy().dtype == d and (t.numpy() == a).all()
        info, ti = tj.iinfo(t.dtype), torch.iinfo(torch.tensor(a).dtype)
        assert (info.min, info.max, info.bits, info.dtype) == (ti.min, ti.max, ti.bits,
                                                                str(ti.dtype))
    x = tj.tensor([1.0, 300.0, -1.0])
    for conv in ("byte", "char", "short"):
        assert getattr(x, conv)().dtype.np == getattr(torch.tensor([1.0]), conv)().numpy().dtype
    assert x.to(tj.uint8).dtype is tj.uint8
    # an int fill wraps as torch's; a list value out of range is refused as torch
    assert (tj.full((2,), -1, dtype=tj.uint8).numpy() ==
            torch.full((2,), -1, dtype=torch.uint8).numpy()).all()
    assert tj.tensor([-1, -255, 3], dtype=tj.uint8).numpy().tolist() == \
        torch.tensor([-1, -255, 3], dtype=torch.uint8).tolist()
    for d, td, v in ((tj.uint8, torch.uint8, 300), (tj.int8, torch.int8, -129)):
        with pytest.raises(RuntimeError, match=f"tensor.*{d.name}.*test_small_int_dtypes"):
            tj.tensor([v, 3], dtype=d)
        with pytest.raises(RuntimeError):
            torch.tensor([v, 3], dtype=td)


STORES = {"full": lambda m, x, v: m.full((2,), v, dtype=x.dtype),
          "fill_": lambda m, x, v: x.fill_(v),
          "masked_fill": lambda m, x, v: x.masked_fill(x == 0, v),
          "setitem": lambda m, x, v: x.__setitem__(0, v)}


@pytest.mark.parametrize("store", sorted(STORES))
def test_stored_python_ints_are_range_checked_as_torch(store):
    """Arithmetic wraps a Python int (u8 + 300 adds 44); a store of one checks its range
    (uint8 takes -255..255), as torch."""
    f = STORES[store]
    for d, v in ((np.uint8, -1), (np.uint8, -255), (np.uint8, 256), (np.int8, 200),
                 (np.int8, -128), (np.int16, 40000), (np.int32, 2 ** 40)):
        t, x = torch.zeros(2, dtype=torch.tensor(np.zeros(1, d)).dtype), tj.tensor(np.zeros(2, d))
        try:
            w = f(torch, t, v)
        except RuntimeError:
            with pytest.raises(RuntimeError, match="without overflow"):
                f(tj, x, v)
            continue
        g = f(tj, x, v)
        np.testing.assert_array_equal((x if g is None else g).numpy(),
                                      (t if w is None else w).numpy())


@pytest.mark.parametrize("compiled", [False, True])
def test_promotion_and_wrapping_as_torch(compiled):
    u, i = np.array([0, 1, 200, 255], np.uint8), np.array([-128, -1, 5, 127], np.int8)

    def f(x, y, m):
        return (x + y, x + 1000, x + (-1), x < -1, x * 2.5, x / 2, x + y.short(), x.sum(),
                x.prod(), x.cumsum(0), y + True, x * m.tensor(2, dtype=m.float16))
    fn = tj.compile(lambda x, y: f(x, y, tj)) if compiled else lambda x, y: f(x, y, tj)
    for g, w in zip(fn(tj.tensor(u), tj.tensor(i)), f(torch.tensor(u), torch.tensor(i), torch)):
        assert g.dtype.np == w.numpy().dtype
        np.testing.assert_array_equal(g.numpy(), w.numpy())
    # (a Python int wraps into int32 as torch: 2**40 adds 0)
    assert (tj.tensor(np.array([1], np.int32)) + 2 ** 40).numpy().tolist() == [1]


@pytest.mark.parametrize("dtype", [np.uint8, np.int64, np.bool_])
def test_mean_of_integers_raises_as_torch(dtype):
    x = np.array([1, 0, 1], dtype)
    with pytest.raises(TypeError, match=r"mean.*floating point.*test_small_int_dtypes.py"):
        tj.tensor(x).mean()
    with pytest.raises(RuntimeError):
        torch.tensor(x).mean()
    assert tj.tensor(x).mean(dtype=tj.float32).item() == torch.tensor(x).mean(
        dtype=torch.float32).item()


@pytest.mark.parametrize("compiled", [False, True])
def test_float_to_small_int_casts_keep_low_bits(compiled):
    x = np.array([-1.0, 300.0, 255.9, -0.5, 1e10, -129.0, 70000.0], np.float32)
    f = (lambda t: (t.byte(), t.char(), t.short(), t.double().byte(), t.half().byte()))
    fn = tj.compile(f) if compiled else f
    for g, w in zip(fn(tj.tensor(x)), f(torch.tensor(x))):
        np.testing.assert_array_equal(g.numpy(), w.numpy())


def _counts(dtype):
    w = np.iinfo(dtype).bits
    c = [0, 1, 2, 3, w - 1, w, w + 1, 100, -1, -3] if np.iinfo(dtype).min < 0 else \
        [0, 1, 2, 3, 7, 8, 9, 100, 255, 5]
    return np.array(c).astype(dtype)


@pytest.mark.parametrize("compiled", [False, True])
@pytest.mark.parametrize("dtype", ALL_INTS)
def test_shifts_match_torch(dtype, compiled):
    a, c = _rand(dtype, (3, 10), 2), _counts(dtype)

    def f(x, n, m):
        return (x << n, x >> n, x << 3, x >> 1, 3 << n, 100 >> n,
                m.bitwise_left_shift(x, n[:1]), m.bitwise_right_shift(x, 2), x >> n.long())
    fn = tj.compile(lambda x, n: f(x, n, tj)) if compiled else lambda x, n: f(x, n, tj)
    for i, (g, w) in enumerate(zip(fn(tj.tensor(a), tj.tensor(c)),
                                   f(torch.tensor(a), torch.tensor(c), torch))):
        assert g.dtype.np == w.numpy().dtype, i
        np.testing.assert_array_equal(g.numpy(), w.numpy(), err_msg=f"op {i}")


def test_shift_in_place_and_errors():
    x = tj.tensor(np.array([5, 200], np.uint8))
    y = x[:1]                   # a view sees the in-place shift
    x <<= 1
    assert x.dtype is tj.uint8 and x.numpy().tolist() == [10, 144] and y.numpy().tolist() == [10]
    x.bitwise_right_shift_(tj.tensor([1, 2]))
    assert x.numpy().tolist() == [5, 36]
    with pytest.raises(TypeError, match=r"bitwise_left_shift.*floating-point.*"
                                        r"test_small_int_dtypes.py"):
        tj.tensor([1.5]) << 1
    with pytest.raises(TypeError, match="bitwise_right_shift"):
        tj.tensor([4]) >> 1.0
    with pytest.raises(TypeError, match="two bool"):
        tj.tensor([True]) << tj.tensor([True])
    with pytest.raises(NotImplementedError):
        torch.tensor([1.5]) << 1


def test_uint8_index_is_a_mask_and_int8_index_raises():
    x = np.arange(8.0).reshape(4, 2)
    m = np.array([1, 0, 3, 0], np.uint8)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        got = tj.tensor(x)[tj.tensor(m)]
        want = torch.tensor(x)[torch.tensor(m)]
    assert any("uint8" in str(r.message) for r in w)
    np.testing.assert_array_equal(got.numpy(), want.numpy())
    t = tj.tensor(x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t[tj.tensor(m)] = -1.0
    assert (t.numpy()[:, 0] == [-1, 2, -1, 6]).all()
    for d in (np.int8, np.int16):
        with pytest.raises(IndexError, match="must be int64, int32, uint8 or bool"):
            tj.tensor(x)[tj.tensor(np.array([1, 0], d))]
        with pytest.raises(IndexError):
            torch.tensor(x)[torch.tensor(np.array([1, 0], d))]


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not installed")
def test_cuda_source_compiles(tmp_path, fake_gpu):
    def f(u, i, s, idx):
        return (u // (u | 1) + (u >> 2) - (u << i.byte()), (i >> 9) * abs(i) + i.float().char(),
                s.amax(0), (s << 3) % 7, u < i, u.short() + s, (u.float() * 0.5).byte(),
                # block reductions (warp shuffles of chars and shorts) and scatter-adds
                u.amax(1), i.amin(1), s.sum(1, dtype=tj.int16), u.sum(dtype=tj.uint8),
                i.argmax(1), u.index_add(0, idx, u[:2]), s.index_add(0, idx, s[:2]))
    args = (_rand(np.uint8, (4, 4096)), _rand(np.int8, (4, 4096)), _rand(np.int16, (4, 4096)),
            np.array([1, 3]))
    src = tj.compile(f, device="cuda").lower(*args).cuda_source
    assert "unsigned char" in src and "signed char" in src and "short" in src
    cu = tmp_path / "small_ints.cu"
    cu.write_text(src)
    r = subprocess.run(["nvcc", "-ptx", "-arch=sm_90", "-o", str(tmp_path / "s.ptx"), str(cu)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]


@pytest.mark.parametrize("dtype", ["int64", "uint8", "bool"])
def test_var_of_integers_raises_as_torch(dtype):
    # var computed integers in float32 where torch (and tracejit's std) refuse them
    data = np.array([1, 0, 1], dtype=dtype)
    with pytest.raises(RuntimeError):
        torch.tensor(data).var()
    with pytest.raises(TypeError, match="var"):
        tj.tensor(data).var()
    with pytest.raises(TypeError, match="var"):
        tj.compile(lambda t: t.var())(tj.tensor(data))
