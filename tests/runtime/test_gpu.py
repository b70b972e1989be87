"""The CUDA backend on a real GPU: every op case, forward and gradient, against the reference
interpreter; float16 and bfloat16 storage (every case, exact casts, float32 accumulation);
reduction accuracy; eager and compiled autograd on GPU tensors;
the disk cache of CUBINs. Marked `gpu`; skipped cleanly without CuPy and a GPU."""
from __future__ import annotations

import numpy as np
import pytest

import tracejit as tj
from cases import CASES, bits_sweep, float_positions, make_inputs
from conftest import assert_close

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not tj.cuda_available(), reason="needs an NVIDIA GPU and CuPy")]


def _on_gpu(arrays):
    return [tj.tensor(a, device="cuda") for a in arrays]


def _inputs(specs, dtype=np.float32):
    return [a if a.dtype == np.bool_ else a.astype(dtype) for a in make_inputs(specs)]


@pytest.mark.parametrize("name", sorted(CASES))
def test_case_forward_matches_interpreter(name):
    fn, _, specs = CASES[name]
    args = _inputs(specs)
    want = tj.compile(fn, backend="interpreter")(*args)
    got = tj.compile(fn)(*_on_gpu(args))
    assert got.device == "cuda:0"
    assert_close(got.cpu(), want, rtol=2e-5, atol=2e-6)


@pytest.mark.parametrize("name", sorted(CASES))
def test_case_gradient_matches_interpreter(name):
    fn, _, specs = CASES[name]
    args = _inputs(specs)
    pos = tuple(float_positions(specs))

    def loss(*a):
        return tj.sum(fn(*a) * 1.5)
    want = tj.grad(tj.compile(loss, backend="interpreter"), argnums=pos)(*args)
    got = tj.grad(tj.compile(loss), argnums=pos)(*_on_gpu(args))
    for g, w in zip(got, want):
        assert g.device == "cuda:0"
        assert_close(g.cpu(), w, rtol=1e-4, atol=1e-5)


def test_float16_storage_computes_in_float32():
    x = np.linspace(-3, 3, 1000).astype(np.float16)
    f = tj.compile(lambda x: tj.tanh(x) * tj.exp(-x * x) + tj.softmax(x, -1))
    got = f(tj.tensor(x, device="cuda")).cpu().numpy()
    want = tj.compile(f.fn, backend="interpreter")(x).numpy()
    assert got.dtype == np.float16
    np.testing.assert_allclose(got.astype(np.float32), want.astype(np.float32), atol=2e-3)


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("half", [tj.float16, tj.bfloat16], ids=str)
def test_case_in_16_bit_floats(name, half):
    """Within a few 16-bit ulps of the float32 result on the same inputs, forward and back."""
    fn, _, specs = CASES[name]
    xs = _inputs(specs, half.np)
    wide = [a.astype(np.float32) if a.dtype == half.np else a for a in xs]
    ulp = 2.0 ** -10 if half is tj.float16 else 2.0 ** -7
    want = tj.compile(fn, backend="interpreter")(*wide)
    got = tj.compile(fn)(*_on_gpu(xs))
    assert got.dtype is (tj.float32 if name == "cast" else half)
    assert_close(got.cpu(), want, rtol=8 * ulp, atol=8 * ulp)
    pos = tuple(float_positions(specs))
    loss = lambda *a: (fn(*a) * 1.25).sum()     # noqa: E731
    want = tj.grad(tj.compile(loss, backend="interpreter"), argnums=pos)(*wide)
    got = tj.grad(tj.compile(loss), argnums=pos)(*_on_gpu(xs))
    for g, w in zip(got, want):
        assert g.dtype is half and g.device == "cuda:0"
        assert_close(g.cpu(), w, rtol=16 * ulp, atol=16 * ulp)


@pytest.mark.parametrize("half", [tj.float16, tj.bfloat16], ids=str)
def test_16_bit_casts_round_like_numpy(half):
    x32 = bits_sweep(1 << 16, 1)
    with np.errstate(all="ignore"):
        x64 = x32.astype(np.float64) * (1 + 2.0 ** -30)
        for x in (x32, x64):
            want = x.astype(half.np).astype(np.float32)
            f = tj.compile(lambda a: (a.to(half), a.to(half).float() * 1.0))
            for got in f(tj.tensor(x, device="cuda")):
                got = got.cpu().numpy().astype(np.float32)
                same = (got.view(np.uint32) == want.view(np.uint32)) | \
                    (np.isnan(got) & np.isnan(want))
                assert same.all(), (x[~same][:5], got[~same][:5], want[~same][:5])


def test_16_bit_sums_and_scatter_accumulate_in_float32():
    for half in (tj.float16, tj.bfloat16):
        x = np.ones((10000, 3), half.np)
        want = np.float32(10000).astype(half.np)
        a, b = tj.compile(lambda v: (v.sum(0), v.T.sum(1)))(tj.tensor(x, device="cuda"))
        assert (a.cpu().numpy() == want).all() and (b.cpu().numpy() == want).all()
        idx = np.zeros(300, np.int32)                      # 300 atomic adds into one slot
        g = tj.grad(tj.compile(lambda v, i: v[i].sum()))(
            tj.tensor(np.ones((4, 2), half.np), device="cuda"), tj.tensor(idx, device="cuda"))
        assert g.dtype is half and g.cpu().numpy()[0].tolist() == [300, 300]


@pytest.mark.parametrize("shape,axis", [((1 << 22,), None), ((64, 1 << 16), -1),
                                        ((1 << 16, 64), 0), ((3, 0, 5), 1), ((1, 1), None)])
def test_reductions_are_accurate(shape, axis):
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32) + 1.0
    got = tj.compile(lambda x: tj.sum(x, axis=axis))(tj.tensor(x, device="cuda")).cpu().numpy()
    want = x.astype(np.float64).sum(axis=axis)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-5)


def test_large_elementwise_and_noncontiguous_inputs():
    rng = np.random.default_rng(1)
    a = rng.standard_normal((1024, 4096)).astype(np.float32)
    x = tj.tensor(a, device="cuda")
    f = tj.compile(lambda x: tj.tanh(x * 0.7 + 0.1) * tj.sigmoid(x) + 0.5 * x * x)
    ref = np.tanh(a * 0.7 + 0.1) / (1 + np.exp(-a)) + 0.5 * a * a
    assert_close(f(x).cpu(), ref, rtol=1e-5, atol=1e-5)
    xt = x.T                                   # a transposed view as a compiled input
    assert_close(f(xt).cpu(), ref.T, rtol=1e-5, atol=1e-5)
    flat = tj.tensor(a.reshape(-1)[: 4097], device="cuda")
    odd = flat[1:]                             # contiguous, but 4 bytes past 16-byte alignment
    assert_close(f(odd).cpu(), ref.reshape(-1)[1:4097], rtol=1e-5, atol=1e-5)


def test_eager_and_compiled_autograd_on_the_gpu():
    rng = np.random.default_rng(2)
    a, w = rng.standard_normal((64, 32)).astype(np.float32), \
        rng.standard_normal((32, 8)).astype(np.float32)

    def loss(x, w):
        return tj.log_softmax(tj.tanh(x @ w), -1).mean()
    xc, wc = tj.tensor(a, requires_grad=True), tj.tensor(w, requires_grad=True)
    loss(xc, wc).backward()
    for f in (loss, tj.compile(loss)):
        xg = tj.tensor(a, device="cuda", requires_grad=True)
        wg = tj.tensor(w, device="cuda", requires_grad=True)
        f(xg, wg).backward()
        assert_close(xg.grad.cpu(), xc.grad, rtol=1e-4, atol=1e-6)
        assert_close(wg.grad.cpu(), wc.grad, rtol=1e-4, atol=1e-6)


def test_cubin_disk_cache_is_reused():
    from tracejit.runtime import cache
    from tracejit.runtime.cuda_backend import compile_cubin
    src = tj.compile(lambda x: x * 3 - 1, device="cuda").lower(np.ones(5, np.float32)).cuda_source
    a = compile_cubin(src, "90")
    assert compile_cubin(src, "90") == a and cache.directory() is not None
