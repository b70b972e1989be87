"""tj.linalg's QR, eigh, SVD, pinv, lstsq and matrix_rank against torch: values and
(gauge-invariant) gradients, eager and tj.compile, tall/square/wide, batched, errors."""
import numpy as np
import pytest
import torch

import tracejit as tj
from test_linalg_solvers import check

RNG = np.random.default_rng(11)


def test_qr_svd_pinv_tall_square_wide():
    for shape in ((2, 4, 3), (3, 3), (2, 3, 5)):
        a = RNG.standard_normal(shape)
        c = shape == (2, 3, 5)                      # (compiled once: the same externs)
        check(lambda x: tj.linalg.qr(x).Q, lambda x: torch.linalg.qr(x).Q, a, compiled=c)
        check(lambda x: tj.linalg.qr(x).R, lambda x: torch.linalg.qr(x).R, a, compiled=False)
        check(tj.linalg.svdvals, torch.linalg.svdvals, a, compiled=c)
        # |U|, |Vh| and U Vh do not depend on the singular vectors' signs
        check(lambda x: tj.linalg.svd(x, full_matrices=False).U.abs(),
              lambda x: torch.linalg.svd(x, full_matrices=False).U.abs(), a, compiled=False)
        check(lambda x: (lambda r: r.U @ r.Vh)(tj.linalg.svd(x, full_matrices=False)),
              lambda x: (lambda r: r.U @ r.Vh)(torch.linalg.svd(x, full_matrices=False)), a,
              compiled=c)
        check(tj.linalg.pinv, torch.linalg.pinv, a, tol=1e-9, compiled=c)
    a = RNG.standard_normal((4, 2))
    for mode in ("reduced", "complete", "r"):
        q, r = tj.linalg.qr(a, mode=mode)
        tq, tr = torch.linalg.qr(torch.tensor(a), mode=mode)
        assert tuple(q.shape) == tuple(tq.shape)
        np.testing.assert_allclose(r.numpy(), tr.numpy(), atol=1e-12)
    u, s, vh = tj.linalg.svd(a)                                   # full_matrices=True
    tu, ts, tvh = torch.linalg.svd(torch.tensor(a))
    assert tuple(u.shape) == tuple(tu.shape) and tuple(vh.shape) == tuple(tvh.shape)
    np.testing.assert_allclose(np.abs(u.numpy()), np.abs(tu.numpy()), atol=1e-12)
    check(lambda x: tj.pinverse(x), lambda x: torch.pinverse(x), np.swapaxes(a, 0, 1))


def test_eigh_and_eigvalsh():
    s = RNG.standard_normal((2, 4, 4))
    s = s + np.swapaxes(s, -1, -2)
    check(lambda x: tj.linalg.eigh(x).eigenvalues, lambda x: torch.linalg.eigh(x).eigenvalues, s)
    check(lambda x: tj.linalg.eigh(x).eigenvectors.abs(),
          lambda x: torch.linalg.eigh(x).eigenvectors.abs(), s)
    raw = RNG.standard_normal((3, 3))                                # only one triangle read
    check(lambda x: tj.linalg.eigh(x, UPLO="U").eigenvectors.abs(),
          lambda x: torch.linalg.eigh(x, UPLO="U").eigenvectors.abs(), raw, compiled=False)
    check(tj.linalg.eigvalsh, torch.linalg.eigvalsh, raw)
    check(tj.linalg.eigvalsh, torch.linalg.eigvalsh,
          (s[0] + 8 * np.eye(4)).astype(np.float32), tol=2e-4, compiled=False)
    # repeated eigenvalues: the eigenvalue gradient is still defined
    check(tj.linalg.eigvalsh, torch.linalg.eigvalsh, np.eye(3))
    check(tj.linalg.svdvals, torch.linalg.svdvals, np.eye(3)[:, :2])


def test_lstsq_rank_norms():
    a = RNG.standard_normal((2, 5, 3))
    b = RNG.standard_normal((2, 5, 2))
    check(lambda x, y: tj.linalg.lstsq(x, y).solution,
          lambda x, y: torch.linalg.lstsq(x, y).solution, a, b, tol=1e-9)
    for driver in ("gelsy", "gelsd", "gels"):
        r1 = tj.linalg.lstsq(a, b, driver=driver)
        r2 = torch.linalg.lstsq(torch.tensor(a), torch.tensor(b), driver=driver)
        for x, y in zip(r1, r2):
            np.testing.assert_allclose(x.numpy(), y.numpy(), atol=1e-10)
    low = RNG.standard_normal((3, 4, 2)) @ RNG.standard_normal((3, 2, 5))
    for m in (low, np.zeros((2, 2)), np.eye(3)):
        np.testing.assert_array_equal(tj.linalg.matrix_rank(m).numpy(),
                                      torch.linalg.matrix_rank(torch.tensor(m)).numpy())
    for ord in (2, -2, "nuc"):
        check(lambda x: tj.linalg.matrix_norm(x, ord), lambda x: torch.linalg.matrix_norm(x, ord),
              a, compiled=ord == "nuc")


def test_spectral_sizes_and_errors():
    assert tuple(tj.linalg.svdvals(np.zeros((0, 3, 2))).shape) == (0, 2)
    assert tuple(tj.linalg.eigh(np.zeros((0, 2, 2))).eigenvectors.shape) == (0, 2, 2)
    check(tj.linalg.eigvalsh, torch.linalg.eigvalsh, np.array([[3.0]]))
    check(lambda x: tj.linalg.qr(x).Q, lambda x: torch.linalg.qr(x).Q, np.array([[-2.0]]))
    with pytest.raises(ValueError, match=r"linalg\.eigh: .*square.*test_linalg_spectral"):
        tj.linalg.eigh(np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"linalg\.qr: .*unrecognized mode"):
        tj.linalg.qr(np.zeros((2, 3)), mode="x")
    with pytest.raises(TypeError, match=r"linalg\.svd: .*float32 or float64"):
        tj.linalg.svd(np.zeros((2, 3), np.int32))
    x = tj.tensor(RNG.standard_normal((4, 2)), requires_grad=True)
    with pytest.raises(RuntimeError, match=r"linalg\.qr: .*not differentiable.*complete"):
        tj.linalg.qr(x, mode="complete").Q.sum().backward()
    assert not tj.linalg.qr(x, mode="r").R.requires_grad


def test_forward_mode_and_hessians():
    def jvp_both(f, tf, a, d):
        _, t1 = tj.jvp(f, (tj.tensor(a),), (tj.tensor(d),))
        _, t2 = torch.func.jvp(tf, (torch.tensor(a),), (torch.tensor(d),))
        np.testing.assert_allclose(t1.numpy(), t2.numpy(), atol=1e-12)
    s = RNG.standard_normal((2, 4, 4))
    s = s + np.swapaxes(s, -1, -2)
    ds = s[::-1] * 0.5
    jvp_both(tj.linalg.eigvalsh, torch.linalg.eigvalsh, s, ds)
    jvp_both(lambda x: tj.linalg.eigh(x)[1].abs(), lambda x: torch.linalg.eigh(x)[1].abs(), s, ds)
    for shape in ((2, 5, 3), (3, 4)):
        a, d = RNG.standard_normal(shape), RNG.standard_normal(shape)
        jvp_both(tj.linalg.svdvals, torch.linalg.svdvals, a, d)
        jvp_both(lambda x: (lambda r: r[0].abs().sum(-2) + r[2].abs().sum(-1))(
                     tj.linalg.svd(x, False)),
                 lambda x: (lambda r: r[0].abs().sum(-2) + r[2].abs().sum(-1))(
                     torch.linalg.svd(x, False)), a, d)
        jvp_both(tj.linalg.pinv, torch.linalg.pinv, a, d)
    a, d = RNG.standard_normal((2, 5, 3)), RNG.standard_normal((2, 5, 3))
    for i in (0, 1):
        jvp_both(lambda x: tj.linalg.qr(x)[i], lambda x: torch.linalg.qr(x)[i], a, d)
    p = s[0, :3, :3] @ s[0, :3, :3].T + np.eye(3)
    # reverse over reverse as torch.autograd.functional.hessian; forward over reverse (tj.hessian)
    # agrees with it where the function reads the whole matrix (det, svdvals); for cholesky and
    # eigvalsh, which read one triangle, it agrees with torch.func.hessian instead (not run: slow)
    for f, tf, fwd in [(tj.linalg.det, torch.linalg.det, True),
                       (lambda x: tj.linalg.svdvals(x).pow(3).sum(),
                        lambda x: torch.linalg.svdvals(x).pow(3).sum(), True),
                       (lambda x: tj.linalg.cholesky(x).sum(),
                        lambda x: torch.linalg.cholesky(x).sum(), False),
                       (lambda x: tj.linalg.eigvalsh(x).pow(3).sum(),
                        lambda x: torch.linalg.eigvalsh(x).pow(3).sum(), False)]:
        want = torch.autograd.functional.hessian(tf, torch.tensor(p)).numpy()
        got = (tj.hessian(f) if fwd else tj.jacrev(tj.grad(f)))(tj.tensor(p))
        np.testing.assert_allclose(got.numpy(), want, atol=1e-9)


def test_ir_text_round_trip():
    from tracejit.ir.parser import parse_graph
    from tracejit.ir.printer import print_graph
    a = RNG.standard_normal((3, 4))
    f = tj.compile(lambda m: tj.linalg.pinv(m, rtol=0.1).sum() + tj.linalg.qr(m)[1].sum()
                   + tj.linalg.eigh(m[:, :3], UPLO="U")[1].sum())
    txt = f.lower(a).as_text()
    assert "rtol=0.1" in txt and "linalg_eigh_vecs" in txt
    assert print_graph(parse_graph(txt)) == txt
