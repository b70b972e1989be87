"""Differences from torch eager found by the eager fuzzer's seeds 70000-70600
(tests/eager_fuzz_more.py), each checked against torch: clamp's result dtype with bounds of a
higher type category, scatter_add's dtype check, and float16 layer_norm's gradient."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

import tracejit as tj  # noqa: E402
import tracejit.nn.functional as F  # noqa: E402


def _same(a, b) -> None:
    a = a.detach().numpy()
    b = b.detach().numpy()
    assert a.dtype == b.dtype and a.shape == b.shape
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("data, lo, hi", [
    ([True, False, True], -3, 3),           # bool with int bounds: int64 (was all True, bool)
    ([True, False], 0, 1),
    ([1, -3, 5], -1.5, 1.5),                # int with float bounds: float32 (bounds rounded)
    ([1, -3, 5], -1, None),
    ([1, -3, 5], None, 2.5),
])
def test_clamp_promotes_as_torch(data, lo, hi):
    _same(tj.tensor(data).clamp(lo, hi), torch.tensor(data).clamp(lo, hi))


@pytest.mark.parametrize("data, lo, hi", [([True, False], -3, 3), ([1, -3], -1.5, 1.5)])
def test_clamp_inplace_refuses_a_promoted_result(data, lo, hi):
    # seed 70342: clamp_ on a bool comparison result wrote True everywhere
    with pytest.raises(RuntimeError):
        torch.tensor(data).clamp_(lo, hi)
    x = tj.tensor(data)
    with pytest.raises(RuntimeError, match="clamp_"):
        x.clamp_(lo, hi)
    _same(x, torch.tensor(data))             # unchanged


def test_clamp_float_with_tensor_bounds_keeps_torch_dtype():
    x = np.array([1.0, -3.0, 0.25], np.float32)
    lo64 = np.array([0.5, 0.5, 0.5])
    _same(tj.tensor(x).clamp(tj.tensor(lo64)), torch.tensor(x).clamp(torch.tensor(lo64)))
    _same(tj.tensor(x).clamp(tj.tensor(0.5, dtype=tj.float64)),
          torch.tensor(x).clamp(torch.tensor(0.5, dtype=torch.float64)))


@pytest.mark.parametrize("self_dtype, src_dtype", [("int64", "float32"), ("float32", "int64"),
                                                   ("float32", "float64")])
def test_scatter_add_refuses_a_source_of_another_dtype(self_dtype, src_dtype):
    # seeds 70201, 70327, 70547, 70550: a float source was truncated into int64 indices
    def run(lib):
        x = lib.zeros(3, dtype=getattr(lib, self_dtype))
        return x.scatter_add(0, lib.tensor([0, 1]), lib.tensor([1.5, 2.5]).to(
            getattr(lib, src_dtype)))
    with pytest.raises(RuntimeError):
        run(torch)
    with pytest.raises(RuntimeError, match="scatter_add"):
        run(tj)
    with pytest.raises(RuntimeError, match="scatter_add"):
        tj.scatter_add(tj.zeros(3, dtype=tj.int64), 0, tj.tensor([0]), tj.tensor([1.5]))


def test_scatter_add_same_dtype_still_matches_torch():
    idx = np.array([[0, 1, 0], [2, 2, 1]])
    src = np.arange(6, dtype=np.int64).reshape(2, 3)
    _same(tj.zeros((3, 3), dtype=tj.int64).scatter_add(0, tj.tensor(idx), tj.tensor(src)),
          torch.zeros((3, 3), dtype=torch.int64).scatter_add(0, torch.tensor(idx),
                                                             torch.tensor(src)))


@pytest.mark.parametrize("shape", [(5, 1), (4, 3), (2, 8), (3, 1, 1)])
def test_float16_layer_norm_value_and_gradient(shape):
    # seed 70303: one normalized element gave a NaN gradient (1/sqrt(v + eps)'s gradient
    # overflowed float16); torch computes float16 layer_norm in float32
    rng = np.random.default_rng(1)
    a = rng.standard_normal(shape).astype(np.float16)
    w = rng.standard_normal(shape).astype(np.float16)
    x = tj.tensor(a, requires_grad=True)
    y = F.layer_norm(x, shape[-1:])
    (y * tj.tensor(w)).sum().backward()
    xt = torch.tensor(a, requires_grad=True)
    yt = torch.nn.functional.layer_norm(xt, shape[-1:])
    (yt * torch.tensor(w)).sum().backward()
    assert y.dtype == tj.float16 and x.grad.dtype == tj.float16
    np.testing.assert_allclose(y.detach().numpy().astype(np.float32),
                               yt.detach().numpy().astype(np.float32), rtol=2e-3, atol=2e-3)
    g, gt = x.grad.numpy().astype(np.float32), xt.grad.numpy().astype(np.float32)
    assert np.all(np.isfinite(g))
    np.testing.assert_allclose(g, gt, rtol=1e-2, atol=1e-2 * max(1.0, np.abs(gt).max()))


@pytest.mark.parametrize("op", ["mean", "var", "std"])
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_mean_var_std_in_float32_as_torch(op, dtype):
    # a float16 row of 40000 twos: its sum overflows float16, so mean/var/std were inf
    a = np.full((2, 40000), 2.0, np.float32)
    a[1, ::3] = 1.5
    x = tj.tensor(a).to(getattr(tj, dtype)).requires_grad_()
    xt = torch.tensor(a).to(getattr(torch, dtype)).requires_grad_()
    y, yt = getattr(x, op)(1), getattr(xt, op)(1)
    assert y.dtype == getattr(tj, dtype) and yt.dtype == getattr(torch, dtype)
    np.testing.assert_allclose(y.detach().float().numpy(), yt.detach().float().numpy(),
                               rtol=1e-2, atol=1e-3)
    y.sum().backward()
    yt.sum().backward()
    g, gt = x.grad.float().numpy(), xt.grad.float().numpy()
    assert np.all(np.isfinite(g))
    np.testing.assert_allclose(g, gt, rtol=2e-2, atol=1e-6)
    m, mt = x.mean(), xt.mean()                                     # all elements
    np.testing.assert_allclose(float(m.detach().float().numpy()), float(mt.detach().float()), rtol=1e-2)


_NONFINITE = np.array([[1.0, -np.inf], [np.inf, 2.0], [np.nan, 3.0]])
_IDX = np.array([[1, 0], [0, 1], [1, 0]])
_SRC = np.arange(6.0).reshape(3, 2)


@pytest.mark.parametrize("call", [
    lambda lib, x, i, s: x.scatter(1, i, s),
    lambda lib, x, i, s: x.scatter(1, i[:, :1], s[:, :1]),
    lambda lib, x, i, s: x.scatter(1, i[:, :1], 7.0),
    lambda lib, x, i, s: x.scatter_reduce(1, i, s, "sum", include_self=False),
    lambda lib, x, i, s: x.scatter_reduce(1, i, s, "mean", include_self=False),
], ids=["scatter", "scatter_part", "scatter_value", "reduce_sum", "reduce_mean"])
def test_scatter_over_inf_and_nan_positions(call):
    # seed 70800: a masked_fill(-inf) then scatter kept the -inf (x * 0 is NaN there, so the
    # position did not count as written)
    got = call(tj, tj.tensor(_NONFINITE), tj.tensor(_IDX), tj.tensor(_SRC))
    want = call(torch, torch.tensor(_NONFINITE), torch.tensor(_IDX), torch.tensor(_SRC))
    _same(got, want)


def test_scatter_over_inf_gradient_and_compiled():
    x = tj.tensor(_NONFINITE, requires_grad=True)
    s = tj.tensor(_SRC, requires_grad=True)
    x.scatter(1, tj.tensor(_IDX), s).sum().backward()
    xt = torch.tensor(_NONFINITE, requires_grad=True)
    st = torch.tensor(_SRC, requires_grad=True)
    xt.scatter(1, torch.tensor(_IDX), st).sum().backward()
    _same(x.grad, xt.grad)
    _same(s.grad, st.grad)
    f = tj.compile(lambda a, i, b: a.scatter(1, i, b))
    _same(f(tj.tensor(_NONFINITE), tj.tensor(_IDX), tj.tensor(_SRC)),
          torch.tensor(_NONFINITE).scatter(1, torch.tensor(_IDX), torch.tensor(_SRC)))
