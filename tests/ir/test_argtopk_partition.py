"""topk's positions come from the argtopk primitive: argsort's first k, ties and NaN included,
selected on long rows by a partition and a sort of the k instead of a full sort. Checked
against argsort's stable order (the reference), NumPy and PyTorch (values, gradients)."""
import numpy as np
import pytest

import tracejit as tj
from tracejit.ir import dtypes as dt
from tracejit.ir import prims_sort
from tracejit.ir.primitives import P, bind


def _reference(x: np.ndarray, axis: int, k: int, descending: bool) -> np.ndarray:
    return P.argsort.impl(x, axis=axis, descending=descending).take(np.arange(k), axis=axis)


def _awkward(rng, shape, dtype) -> np.ndarray:
    """Many ties, and (for floats) NaN, infinities and both zeros."""
    if dtype == np.bool_:
        return rng.random(shape) < 0.5
    if np.dtype(dtype).kind in "iu":
        lo = 0 if np.dtype(dtype).kind == "u" else -3
        x = rng.integers(lo, 4, shape).astype(dtype)
        if lo:
            x.flat[::7] = np.iinfo(dtype).min
            x.flat[::11] = np.iinfo(dtype).max
        return x
    x = rng.integers(-3, 4, shape).astype(dtype)
    m = rng.random(shape)
    x[m < 0.08] = np.nan
    x[(m > 0.1) & (m < 0.13)] = np.inf
    x[(m > 0.13) & (m < 0.16)] = -np.inf
    x[(m > 0.2) & (m < 0.3)] = -0.0
    return x


DTYPES = [np.float32, np.float64, np.float16, np.int64, np.int32, np.int8, np.uint8, np.bool_]


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_partitioned_rows_are_argsorts_first_k(dtype):
    rng = np.random.default_rng(1)
    for shape, axis in (((3, 300), 1), ((257, 4), 0), ((2, 130, 3), 1), ((1000,), 0)):
        x = _awkward(rng, shape, dtype)
        n = shape[axis]
        for k in (1, 2, 7, n // 8, n // 4, n // 4 + 1, n // 2, n):
            for descending in (True, False):
                got = prims_sort._impl_topk(x, axis, k, descending)
                want = _reference(x, axis, k, descending)
                assert got.dtype == np.int64 and got.flags.c_contiguous
                np.testing.assert_array_equal(got, want, err_msg=f"{shape} {axis} {k}")


def test_short_rows_partitioned_too_when_asked(monkeypatch):
    """The partition itself on every small shape (the threshold off), ties everywhere."""
    monkeypatch.setattr(prims_sort, "PARTITION_MIN_ROW", 1)
    rng = np.random.default_rng(2)
    for trial in range(300):
        shape = tuple(int(s) for s in rng.integers(1, 9, rng.integers(1, 4)))
        dtype = DTYPES[trial % len(DTYPES)]
        x = _awkward(rng, shape, dtype)
        axis = int(rng.integers(0, len(shape)))
        for k in range(shape[axis] + 1):
            for descending in (True, False):
                np.testing.assert_array_equal(prims_sort._impl_topk(x, axis, k, descending),
                                              _reference(x, axis, k, descending))


def test_bfloat16_rows():
    if dt.bf16 is None:
        pytest.skip("no bfloat16 NumPy dtype here")
    rng = np.random.default_rng(3)
    x = _awkward(rng, (4, 200), np.float32).astype(dt.bf16.np)
    for descending in (True, False):
        np.testing.assert_array_equal(prims_sort._impl_topk(x, 1, 9, descending),
                                      _reference(x, 1, 9, descending))


def test_shape_and_bad_k_are_named():
    x = tj.tensor(np.zeros((3, 5), np.float32))
    assert bind(P.argtopk, x, axis=1, k=2, descending=True).shape == (3, 2)
    with pytest.raises(IndexError, match=r"argtopk: k=6 is out of range for axis 1"):
        bind(P.argtopk, x, axis=1, k=6, descending=True)
    with pytest.raises(IndexError, match=r"k=6 is out of range for dimension 1 of size 5"):
        tj.topk(x, 6, 1)


@pytest.mark.parametrize("largest", [True, False])
def test_topk_eager_compiled_and_grad_match_torch_on_long_rows(largest):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(4)
    a = rng.permutation(160 * 300).reshape(160, 300).astype(np.float64) * 0.01   # no ties
    for dim in (1, 0):
        at = torch.tensor(a, requires_grad=True)
        vt, it = torch.topk(at, 8, dim, largest=largest)
        wt = torch.tensor(rng.standard_normal(tuple(vt.shape)))
        (vt * wt).sum().backward()
        x = tj.tensor(a, requires_grad=True)
        v, i = tj.topk(x, 8, dim, largest=largest)
        np.testing.assert_array_equal(i.numpy(), it.numpy())
        np.testing.assert_array_equal(v.detach().numpy(), vt.detach().numpy())
        (v * tj.tensor(wt.numpy())).sum().backward()
        np.testing.assert_array_equal(x.grad.numpy(), at.grad.numpy())
        f = tj.compile(lambda x, d=dim: tj.topk(x, 8, d, largest=largest))
        cv, ci = f(tj.tensor(a))
        np.testing.assert_array_equal(ci.numpy(), it.numpy())
        np.testing.assert_array_equal(cv.numpy(), vt.detach().numpy())
        g = tj.compile(tj.grad(lambda x, d=dim: (tj.topk(x, 8, d, largest=largest)[0]
                                                  * tj.tensor(wt.numpy())).sum()))
        np.testing.assert_array_equal(g(tj.tensor(a)).numpy(), at.grad.numpy())


def test_ties_are_kept_in_position_order_and_values_are_torchs():
    """torch's CPU topk returns tied values in its algorithm's order (documented in
    tracer/sorting.py); tracejit's is argsort's: by position. The values agree."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(5)
    a = rng.integers(0, 5, (6, 400)).astype(np.float32)
    v, i = tj.topk(tj.tensor(a), 20, 1)
    vt, _ = torch.topk(torch.tensor(a), 20, 1)
    np.testing.assert_array_equal(v.numpy(), vt.numpy())
    order = np.argsort(-a, axis=1, kind="stable")[:, :20]
    np.testing.assert_array_equal(i.numpy(), order)


def test_vmap_of_topk_on_long_rows():
    rng = np.random.default_rng(6)
    a = rng.standard_normal((3, 4, 300))
    f = tj.vmap(lambda r: tj.topk(r, 5, 1)[1])
    np.testing.assert_array_equal(f(tj.tensor(a)).numpy(),
                                  np.argsort(-a, axis=2, kind="stable")[:, :, :5])


def _device_rows(compiled: bool) -> None:
    rng = np.random.default_rng(7)
    for shape, k, dim in (((4, 300), 7, 1), ((300, 3), 2, 0), ((3, 5), 2, 1)):
        a = rng.integers(0, 6, shape).astype(np.float32)
        for largest in (True, False):
            want = tj.topk(tj.tensor(a), k, dim, largest=largest)
            f = (lambda x: tj.topk(x, k, dim, largest=largest))
            got = (tj.compile(f) if compiled else f)(tj.tensor(a, device="cuda"))
            assert got.indices.device.type == "cuda"
            np.testing.assert_array_equal(got.indices.cpu().numpy(), want.indices.numpy())
            np.testing.assert_array_equal(got.values.cpu().numpy(), want.values.numpy())


def test_topk_on_the_fake_gpu_is_argsorts_first_k(fake_gpu):
    """Device rows take CuPy's sort (the partition is for host arrays): long and short rows,
    both directions, against the host's positions (the stand-in compiles nothing)."""
    _device_rows(compiled=False)


@pytest.mark.gpu
@pytest.mark.skipif(not tj.cuda_available(), reason="needs an NVIDIA GPU and CuPy")
@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_topk_on_a_real_gpu(compiled):
    _device_rows(compiled)
