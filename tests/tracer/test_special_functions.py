"""tj.special and the gamma family (lgamma, digamma, polygamma, erfinv, ndtri, erfcx, i0/i0e/
i1/i1e, mvlgamma) against torch: values at ordinary and special points (poles, +-1, 0, -0,
inf, NaN), float64 and float32, eagerly and compiled, with gradients; ldexp, frexp,
nextafter; the CUDA lowering compiles with nvcc."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch

import tracejit as tj

# ordinary points, lgamma/digamma/polygamma poles (0, -0, negative integers), infinities, NaN
X = np.array([0.0, -0.0, 1e-8, 0.3, 1.0, 1.4616321449683622, 2.5, 7.25, 31.5, 150.0, -0.5,
              -2.5, -3.0, -7.75, 1e3, np.inf, -np.inf, np.nan])
# erfinv's domain and edges, ndtri's (shifted to [0, 1] there)
Y = np.array([0.0, -0.0, 1e-12, 0.3, -0.6, 0.5, 0.95, -0.999999, 1 - 1e-15, 1.0, -1.0, 1.5,
              np.nan, np.inf])
P = np.array([0.0, 1e-300, 1e-20, 0.01, 0.3, 0.5, 0.9, 1 - 1e-12, 1.0, -0.5, 1.5, np.nan])

UNARY = {"lgamma": (tj.lgamma, torch.lgamma, X), "digamma": (tj.digamma, torch.digamma, X),
         "polygamma1": (lambda x: tj.polygamma(1, x), lambda x: torch.polygamma(1, x), X),
         "polygamma3": (lambda x: tj.polygamma(3, x), lambda x: torch.polygamma(3, x), X),
         "erfinv": (tj.erfinv, torch.erfinv, Y),
         "ndtri": (tj.special.ndtri, torch.special.ndtri, P),
         "erfcx": (tj.special.erfcx, torch.special.erfcx, X * 0.2),
         "i0": (tj.i0, torch.i0, X), "i0e": (tj.special.i0e, torch.special.i0e, X),
         "i1": (tj.special.i1, torch.special.i1, -X), "i1e": (tj.special.i1e, torch.special.i1e, X),
         "log_ndtr": (tj.special.log_ndtr, torch.special.log_ndtr, X * 0.2 - 2),
         "ndtr": (tj.special.ndtr, torch.special.ndtr, X * 0.1),
         "entr": (tj.special.entr, torch.special.entr, X),
         "expit": (tj.special.expit, torch.special.expit, X)}


def _close(got, want, rtol, label, atol=1e-300):
    """Equal non-finite values, relative error within rtol elsewhere (and absolute 1e-300 for
    values torch flushes to 0 in its far tails)."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    fin = np.isfinite(want)
    assert np.array_equal(np.isnan(got), np.isnan(want)), (label, got, want)
    assert np.array_equal(got[~fin & ~np.isnan(want)], want[~fin & ~np.isnan(want)]), \
        (label, got, want)
    np.testing.assert_allclose(got[fin], want[fin], rtol=rtol, atol=atol, err_msg=label)


def _oracle(tf, x, dtype):
    """torch in float64 on the (rounded) inputs, then rounded to dtype: torch's own float32
    kernels are several ulp off (digamma, i0), the true values are the reference."""
    with np.errstate(over="ignore"):          # (i0(1e3) overflows float32, as torch's)
        return tf(torch.tensor(x.astype(dtype).astype(np.float64))).numpy().astype(dtype)


def test_values_match_torch_eager_and_compiled_float64_and_float32():
    names = list(UNARY)
    comp = tj.compile(lambda *xs: tuple(UNARY[n][0](x) for n, x in zip(names, xs)))
    for dtype, rtol in ((np.float64, 1e-11), (np.float32, 4e-7)):
        xs = [UNARY[n][2].astype(dtype) for n in names]
        compiled = comp(*(tj.tensor(x) for x in xs))
        for n, x, c in zip(names, xs, compiled):
            f, tf, _ = UNARY[n]
            want = _oracle(tf, x, dtype)
            if n.startswith("polygamma"):
                # torch's trigamma gives huge finite values at the negative integers (its
                # reflection's sin(pi x) is not 0); at +-inf torch's answers vary with n
                # (polygamma(2, inf) is NaN): tracejit's are 0 and NaN, checked below
                keep = ~((x < 0) & (x == np.floor(x)) & np.isfinite(x)) & ~np.isinf(x)
                x, want, c = x[keep], want[keep], c.numpy()[keep]
            if n == "ndtr":      # torch's 0.5 (1 + erf) flushes its lower tail to 0
                want = np.where(x < -20, 0.0, want)
                c = np.where(x < -20, 0.0, np.asarray(c))
            eager = f(tj.tensor(x)).numpy()
            if n == "ndtr":
                eager = np.where(x < -20, 0.0, eager)
            # torch's float64 digamma is ~1e-13 off at negative x, its trigamma ~5e-10
            # everywhere (tracejit's agree with mpmath to ~1e-15)
            tol = rtol * ({"digamma": 100, "polygamma1": 1e3, "polygamma3": 100,
                           "erfcx": 100}.get(n, 1) if dtype == np.float64 else 1)
            atol = 1e-15 if n == "digamma" else 1e-300          # (its root near 1.46)
            _close(eager, want, tol, f"{n} eager {np.dtype(dtype).name}", atol)
            _close(np.asarray(c), want, tol, f"{n} compiled {np.dtype(dtype).name}", atol)
            assert eager.dtype == dtype
    for k in (1, 2, 3):
        got = tj.polygamma(k, tj.tensor([np.inf, -np.inf])).numpy()
        assert got[0] == 0 and np.isnan(got[1])


def test_integer_input_gives_float32_and_16_bit_floats_round_once():
    for f, tf in ((tj.lgamma, torch.lgamma), (tj.digamma, torch.digamma),
                  (tj.i0, torch.i0), (tj.erfinv, torch.erfinv)):
        got = f(tj.tensor([0, 1, 2, 5]))
        assert got.dtype == tj.float32 and tf(torch.tensor([0, 1, 2, 5])).dtype == torch.float32
        want = tf(torch.tensor([0.0, 1, 2, 5], dtype=torch.float64)).float()
        _close(got.numpy(), want.numpy(), 4e-7, f.__name__)
    h = np.array([0.25, 1.5, 3.0, -2.5], np.float16)
    got = tj.compile(tj.digamma)(tj.tensor(h)).numpy()
    assert got.dtype == np.float16
    want = torch.digamma(torch.tensor(h, dtype=torch.float64)).numpy().astype(np.float16)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(tj.digamma(tj.tensor(h)).numpy(), want)


GRAD = {"lgamma": (tj.lgamma, torch.lgamma, [0.3, 2.5, -2.5, 40.0]),
        "digamma": (tj.digamma, torch.digamma, [0.3, 2.5, -2.5, 40.0]),
        "polygamma2": (lambda x: tj.polygamma(2, x), lambda x: torch.polygamma(2, x),
                       [0.3, 2.5, -2.5, 40.0]),
        "erfinv": (tj.erfinv, torch.erfinv, [0.0, 0.3, -0.9, 0.999]),
        "ndtri": (tj.special.ndtri, torch.special.ndtri, [1e-10, 0.3, 0.5, 0.97]),
        "erfcx": (tj.special.erfcx, torch.special.erfcx, [-2.0, 0.3, 5.0, 40.0]),
        "i0": (tj.i0, torch.i0, [0.0, -1.5, 3.0, 30.0]),
        "i0e": (tj.special.i0e, torch.special.i0e, [0.5, -1.5, 3.0, 30.0]),
        "i1": (tj.special.i1, torch.special.i1, [0.0, -1.5, 3.0, 30.0]),
        "i1e": (tj.special.i1e, torch.special.i1e, [0.0, -1.5, 3.0, 30.0]),
        "log_ndtr": (tj.special.log_ndtr, torch.special.log_ndtr, [-30.0, -1.0, 0.5, 9.0]),
        "ndtr": (tj.special.ndtr, torch.special.ndtr, [-3.0, 0.0, 0.5, 2.0]),
        "entr": (tj.special.entr, torch.special.entr, [0.1, 0.5, 1.0, 3.0]),
        "mvlgamma": (lambda x: tj.mvlgamma(x, 3), lambda x: torch.mvlgamma(x, 3),
                     [1.1, 2.5, 4.0, 10.0])}


def test_gradients_match_torch_eager_and_compiled():
    names = list(GRAD)

    def loss(*xs):
        return sum(GRAD[n][0](x).sum() for n, x in zip(names, xs))
    xs = [np.array(GRAD[n][2]) for n in names]
    eager = tj.grad(loss, argnums=tuple(range(len(names))))(*(tj.tensor(x) for x in xs))
    compiled = tj.compile(tj.grad(loss, argnums=tuple(range(len(names)))))(
        *(tj.tensor(x) for x in xs))
    for n, x, e, c in zip(names, xs, eager, compiled):
        t = torch.tensor(x, requires_grad=True)
        GRAD[n][1](t).sum().backward()
        # (digamma's and mvlgamma's gradients are torch's trigamma: ~5e-10)
        np.testing.assert_allclose(e.numpy(), t.grad.numpy(), rtol=2e-9, err_msg=n)
        np.testing.assert_allclose(c.numpy(), t.grad.numpy(), rtol=2e-9, err_msg=n)


def test_second_derivative_forward_mode_and_vmap():
    x = np.array([0.7, 2.5, -1.5])
    d2 = tj.grad(lambda v: tj.grad(lambda u: tj.lgamma(u).sum())(v).sum())(tj.tensor(x))
    np.testing.assert_allclose(d2.numpy(), torch.polygamma(1, torch.tensor(x)).numpy(),
                               rtol=1e-9)         # (torch's trigamma: ~5e-10)
    _, tang = tj.jvp(tj.erfinv, (tj.tensor(x / 3),), (tj.ones(3, dtype=tj.float64),))
    t = torch.tensor(x / 3, requires_grad=True)
    torch.erfinv(t).sum().backward()
    np.testing.assert_allclose(tang.numpy(), t.grad.numpy(), rtol=1e-12)
    m = np.array([[0.5, 1.5], [2.5, 3.5]])
    got = tj.vmap(lambda r: tj.polygamma(2, r))(tj.tensor(m))
    np.testing.assert_allclose(got.numpy(), torch.polygamma(2, torch.tensor(m)).numpy(),
                               rtol=1e-12)


def test_special_namespace_and_methods():
    x = np.array([[0.2, 0.7], [0.4, 0.9]])
    tx, ttx = tj.tensor(x), torch.tensor(x)
    S, TS = tj.special, torch.special
    pairs = [(S.logit(tx, eps=0.3), TS.logit(ttx, eps=0.3)), (S.gammaln(tx), TS.gammaln(ttx)),
             (S.psi(tx), TS.psi(ttx)), (S.multigammaln(tx + 2, 2), TS.multigammaln(ttx + 2, 2)),
             (S.xlogy(tx, tx), TS.xlogy(ttx, ttx)),
             (S.xlog1py(tx - 0.4, tx), TS.xlog1py(ttx - 0.4, ttx)),
             (S.sinc(tx), TS.sinc(ttx)), (S.logsumexp(tx, 1), TS.logsumexp(ttx, 1)),
             (S.softmax(tx, 0), TS.softmax(ttx, 0)), (S.log_softmax(tx, 1), TS.log_softmax(ttx, 1)),
             (S.round(tx, decimals=1), TS.round(ttx, decimals=1)), (S.expm1(tx), TS.expm1(ttx)),
             (S.exp2(tx), TS.exp2(ttx)), (S.log1p(tx), TS.log1p(ttx)), (S.erf(tx), TS.erf(ttx)),
             (S.erfc(tx), TS.erfc(ttx)), (S.digamma(tx), TS.digamma(ttx)),
             (tx.lgamma(), ttx.lgamma()), (tx.digamma(), ttx.digamma()),
             (tx.polygamma(2), ttx.polygamma(2)), (tx.erfinv(), ttx.erfinv()), (tx.i0(), ttx.i0()),
             (tx.mvlgamma(1), ttx.mvlgamma(1)), (tx.xlogy(tx), ttx.xlogy(ttx)),
             (tx.logit(), ttx.logit())]
    for i, (a, b) in enumerate(pairs):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-12, err_msg=str(i))
    for name in ("lgamma_", "digamma_", "erfinv_", "i0_"):
        a, b = tj.tensor(x), torch.tensor(x)
        getattr(a, name)(), getattr(b, name)()
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-12, err_msg=name)
    a, b = tj.tensor(x), torch.tensor(x)
    a.polygamma_(2), b.polygamma_(2)
    np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-12)
    assert tj.polygamma(0, tx).numpy().tolist() == tj.digamma(tx).numpy().tolist()


def test_errors_are_torch_like():
    with pytest.raises(ValueError, match="polygamma.*negative n"):
        tj.polygamma(-1, tj.tensor([1.0]))
    with pytest.raises(ValueError, match=r"mvlgamma.*\(p-1\)/2"):
        tj.mvlgamma(tj.tensor([0.2, 3.0]), 2)
    with pytest.raises(TypeError, match="nextafter"):
        tj.nextafter(tj.tensor([1.0], dtype=tj.float16), tj.tensor([2.0], dtype=tj.float16))
    with pytest.raises(TypeError, match="frexp"):
        tj.frexp(tj.tensor([1, 2]))
    # in a trace the values are unknown: mvlgamma's invalid elements give NaN
    got = tj.compile(lambda v: tj.mvlgamma(v, 2))(tj.tensor([0.2, 3.0])).numpy()
    assert np.isnan(got[0]) and np.isclose(got[1], torch.mvlgamma(torch.tensor(3.0), 2).item())


def test_ldexp_frexp_nextafter():
    for dtype, tiny in ((np.float32, 1e-40), (np.float64, 5e-324)):
        x = np.array([0.0, -0.0, 1.0, 0.75, -3.0, tiny, 2.0 ** 100, np.inf, -np.inf, np.nan,
                      1 - 1e-7], dtype)
        want_m, want_e = torch.frexp(torch.tensor(x))
        for m, e in (tj.frexp(tj.tensor(x)), tj.compile(tj.frexp)(tj.tensor(x))):
            np.testing.assert_array_equal(m.numpy(), want_m.numpy())
            np.testing.assert_array_equal(e.numpy(), want_e.numpy())
            assert e.dtype == tj.int32 and m.dtype == tj.tensor(x).dtype
        y = np.array([1.0, 0.0, -np.inf, 0.0, 5.0, 1.0, 0.0, 0.0, 3.0, 1.0, 2.0], dtype)
        want = torch.nextafter(torch.tensor(x), torch.tensor(y)).numpy()
        for got in (tj.nextafter(tj.tensor(x), tj.tensor(y)),
                    tj.compile(tj.nextafter)(tj.tensor(x), tj.tensor(y))):
            np.testing.assert_array_equal(got.numpy(), want)
    e = np.array([3, -1, 0, 1030])
    for a in (np.array([1.5, 2.0, -3.0, 1.0]), np.array([1, 2, 3, 4])):
        want = torch.ldexp(torch.tensor(a), torch.tensor(e))
        got = tj.ldexp(tj.tensor(a), tj.tensor(e))
        assert str(got.dtype) in str(want.dtype).replace("torch.float", "f")
        np.testing.assert_array_equal(got.numpy(), want.numpy())
    v = tj.tensor([1.5, 3.0], requires_grad=True)
    tj.ldexp(v, tj.tensor([2, -1])).sum().backward()
    np.testing.assert_array_equal(v.grad.numpy(), [4.0, 0.5])


def test_size_zero_one_broadcasting_and_non_contiguous():
    assert tj.digamma(tj.zeros(0)).shape == (0,) and tj.special.i1e(tj.zeros(0, 3)).shape == (0, 3)
    np.testing.assert_allclose(tj.lgamma(tj.tensor(4.0)).numpy(), np.log(6.0), rtol=1e-6)
    m = np.arange(12.0).reshape(3, 4) * 0.3 + 0.1
    got = tj.compile(lambda a: tj.digamma(a.t()))(tj.tensor(m))
    np.testing.assert_allclose(got.numpy(), torch.digamma(torch.tensor(m).t()).numpy(), rtol=1e-12)
    got = tj.special.xlog1py(tj.tensor(m[:, :1]), tj.tensor(m[0]))
    want = torch.special.xlog1py(torch.tensor(m[:, :1]), torch.tensor(m[0]))
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-12)


def test_cuda_lowering_compiles_with_nvcc(tmp_path):
    import sys
    import pathlib
    sys.path.insert(0, str(pathlib.Path(__file__).parents[1] / "codegen"))
    from test_cuda_source import NVCC, _nvcc, _source
    if NVCC is None:
        pytest.skip("nvcc is not installed")

    def f(x):
        return (tj.lgamma(x) + tj.digamma(x) + tj.polygamma(2, x) + tj.erfinv(x * 0.1)
                + tj.special.i0e(x) + tj.special.i1(x) + tj.special.ndtri(x * 0.1)
                + tj.special.erfcx(x) + tj.nextafter(x, x * 2)
                + tj.special.zeta(tj.stop_gradient(x) + 1.5, x)).sum()
    graphs = []
    for dtype in (np.float32, np.float64):
        x = np.linspace(0.1, 0.9, 8).astype(dtype)
        graphs.append((f"special_{np.dtype(dtype).name}",
                       tj.compile(tj.grad(f), device="cuda").lower(x).graph))
    assert _nvcc(_source(graphs), tmp_path).count(".entry") >= 2


def test_large_eager_inputs_run_as_kernels_and_agree():
    """From 64K elements eager mode runs these as compiled kernels (runtime/eager_kernels.py):
    the same values as the NumPy path, within an ulp or two of the true ones."""
    from tracejit.runtime import eager_kernels
    x = np.linspace(0.05, 0.95, 1 << 16).astype(np.float32)
    calls = eager_kernels.stats["calls"]
    for f, tf in ((tj.erfinv, torch.erfinv), (tj.lgamma, torch.lgamma),
                  (tj.digamma, torch.digamma), (tj.special.i1e, torch.special.i1e)):
        want = tf(torch.tensor(x.astype(np.float64))).numpy().astype(np.float32)
        np.testing.assert_allclose(f(tj.tensor(x)).numpy(), want, rtol=3e-7,
                                   err_msg=f.__name__)
        np.testing.assert_allclose(f(tj.tensor(x[:100])).numpy(), want[:100], rtol=3e-7)
    if eager_kernels.MIN_ELEMENTS is None and os.environ.get("TRACEJIT_EAGER_KERNELS") != "0":
        assert eager_kernels.stats["calls"] - calls == 4


def test_zeta_values_domain_and_gradient_in_q():
    s = np.array([1.0, 0.5, 1.5, 2.0, 3.0, 4.5, 10.0, 60.0, 3.0, 2.5, 2.0, 3.0, np.nan, 2.0])
    q = np.array([1.0, 1.0, 1.0, 1.0, 0.3, 2.0, 1.0, 15.0, -2.5, -2.5, 0.0, 1e6, 1.0, np.nan])
    for dtype, rtol in ((np.float64, 1e-12), (np.float32, 4e-7)):
        want = torch.special.zeta(torch.tensor(s), torch.tensor(q)).numpy().astype(dtype)
        a, b = tj.tensor(s.astype(dtype)), tj.tensor(q.astype(dtype))
        for got in (tj.special.zeta(a, b), tj.compile(tj.special.zeta)(a, b)):
            _close(got.numpy(), want, rtol, "zeta")
    np.testing.assert_allclose(tj.special.zeta(2.0, tj.tensor([1.0, 2.0])).numpy(),
                               torch.special.zeta(2.0, torch.tensor([1.0, 2.0])).numpy())
    s2, q2 = np.array([2.0, 3.5, 5.0]), np.array([0.5, 2.0, 7.0])
    tq = torch.tensor(q2, requires_grad=True)
    torch.special.zeta(torch.tensor(s2), tq).sum().backward()
    g = tj.grad(lambda v: tj.special.zeta(tj.tensor(s2), v).sum())
    for f in (g, tj.compile(g)):
        np.testing.assert_allclose(f(tj.tensor(q2)).numpy(), tq.grad.numpy(), rtol=1e-12)
    with pytest.raises(NotImplementedError, match="zeta.*first argument"):
        tj.special.zeta(tj.tensor([2.0], requires_grad=True), 1.0)
