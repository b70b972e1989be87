"""tj.linalg's solvers and determinants against torch: values and gradients (eager and
tj.compile), forward mode, batching and broadcasting, 0 and 1 sizes, transposed inputs,
errors."""
import numpy as np
import pytest
import torch

import tracejit as tj

RNG = np.random.default_rng(7)


def spd(*shape):
    m = RNG.standard_normal(shape)
    return m @ np.swapaxes(m, -1, -2) + shape[-1] * np.eye(shape[-1])


def check(fn_tj, fn_t, *arrays, tol=1e-10, compiled=True):
    """Value and gradient of sum(w * fn(...)) against torch, eager and compiled."""
    to = [torch.tensor(a, requires_grad=True) for a in arrays]
    z = fn_t(*to)
    w = RNG.standard_normal(tuple(z.shape)).astype(arrays[0].dtype)
    (z * torch.tensor(w)).sum().backward()
    ta = [tj.tensor(a, requires_grad=True) for a in arrays]
    y = fn_tj(*ta)
    np.testing.assert_allclose(y.detach().numpy(), z.detach().numpy(), rtol=tol, atol=tol)
    (y * tj.tensor(w)).sum().backward()
    for a, b in zip(ta, to):
        np.testing.assert_allclose(a.grad.numpy(), b.grad.numpy(), rtol=tol, atol=tol)
    if compiled:
        def loss(*xs):
            return (fn_tj(*xs) * tj.tensor(w)).sum()
        grads = tj.grad(tj.compile(loss), argnums=tuple(range(len(arrays))))(*arrays)
        for g, b in zip(grads, to):
            np.testing.assert_allclose(g.numpy(), b.grad.numpy(), rtol=tol, atol=tol)
        np.testing.assert_allclose(tj.compile(fn_tj)(*arrays).numpy(), z.detach().numpy(),
                                   rtol=tol, atol=tol)


def test_inv_solve_det_f64_batched_and_transposed():
    a = spd(2, 3, 3)
    g = RNG.standard_normal((2, 4, 4))
    check(tj.linalg.inv, torch.linalg.inv, a)
    check(tj.inverse, torch.inverse, np.swapaxes(g, -1, -2))                 # transposed view
    b = RNG.standard_normal((3, 2))                        # broadcast over A's batch
    check(tj.linalg.solve, torch.linalg.solve, a, b)
    check(lambda x, y: tj.linalg.solve(x, y, left=False),
          lambda x, y: torch.linalg.solve(x, y, left=False), a, RNG.standard_normal((1, 5, 3)))
    check(tj.linalg.solve, torch.linalg.solve, a, RNG.standard_normal((2, 3)))   # vectors
    check(tj.linalg.det, torch.linalg.det, g)
    check(tj.det, torch.det, np.swapaxes(g, -1, -2))
    check(lambda x: tj.linalg.slogdet(x).logabsdet, lambda x: torch.linalg.slogdet(x).logabsdet, g)
    s, la = tj.linalg.slogdet(g)
    ts, tla = torch.linalg.slogdet(torch.tensor(g))
    np.testing.assert_array_equal(s.numpy(), ts.numpy())
    check(tj.logdet, torch.logdet, a)
    ld = tj.logdet(g).numpy()
    np.testing.assert_array_equal(np.isnan(ld), np.isnan(torch.logdet(torch.tensor(g)).numpy()))


def test_cholesky_and_triangular_solve():
    a = spd(2, 4, 4)
    check(tj.linalg.cholesky, torch.linalg.cholesky, a)
    check(lambda x: tj.linalg.cholesky(x, upper=True),
          lambda x: torch.linalg.cholesky(x, upper=True), a)
    check(tj.cholesky, torch.cholesky, a[0])
    t = RNG.standard_normal((2, 4, 4)) + 4 * np.eye(4)
    for upper in (True, False):
        for left in (True, False):
            for unit in (True, False):
                b = RNG.standard_normal((4, 3) if left else (3, 4))
                check(lambda x, y: tj.linalg.solve_triangular(
                          x, y, upper=upper, left=left, unitriangular=unit),
                      lambda x, y: torch.linalg.solve_triangular(
                          x, y, upper=upper, left=left, unitriangular=unit),
                      t, b, compiled=upper and left)
    # a zero on the diagonal gives inf/nan as torch, no error
    z = np.triu(np.ones((2, 2)))
    z[1, 1] = 0
    x = tj.linalg.solve_triangular(z, np.ones((2, 1)), upper=True).numpy()
    assert not np.isfinite(x).all()


def test_float32_and_sizes():
    a = spd(3, 3, 3).astype(np.float32)
    check(tj.linalg.inv, torch.linalg.inv, a, tol=2e-4, compiled=False)
    check(tj.linalg.cholesky, torch.linalg.cholesky, a, tol=2e-4, compiled=False)
    check(tj.linalg.det, torch.linalg.det, a, tol=2e-3, compiled=False)
    assert tj.linalg.inv(a).dtype == tj.float32
    one = np.array([[2.0]])
    check(tj.linalg.inv, torch.linalg.inv, one)
    check(tj.linalg.cholesky, torch.linalg.cholesky, one)
    check(tj.linalg.det, torch.linalg.det, one)
    for fn in (tj.linalg.inv, tj.linalg.cholesky, tj.linalg.det):
        assert tuple(fn(np.zeros((0, 3, 3))).shape) == tuple(
            getattr(torch.linalg, fn.__name__)(torch.zeros(0, 3, 3, dtype=torch.float64)).shape)
    assert tj.linalg.det(np.zeros((0, 0))).item() == 1.0


def test_det_gradient_of_singular_matrix_is_the_cofactor():
    g = RNG.standard_normal((2, 3, 3))
    g[:, 2] = g[:, 0] + g[:, 1]                      # rank 2
    x = tj.tensor(g, requires_grad=True)
    tj.linalg.det(x).sum().backward()
    h = 1e-6
    fd = np.zeros_like(g)
    for idx in np.ndindex(g.shape):
        e = np.zeros_like(g)
        e[idx] = h
        fd[idx] = (np.linalg.det(g + e) - np.linalg.det(g - e)).sum() / (2 * h)
    np.testing.assert_allclose(x.grad.numpy(), fd, atol=1e-7)


def test_forward_mode_and_vmap():
    a = spd(3, 3)
    b = RNG.standard_normal((3, 2))
    d = RNG.standard_normal((3, 3))
    cases = [(tj.linalg.inv, torch.linalg.inv), (tj.linalg.det, torch.linalg.det),
             (tj.linalg.cholesky, torch.linalg.cholesky),
             (lambda x: tj.linalg.slogdet(x)[1], lambda x: torch.linalg.slogdet(x)[1]),
             (lambda x: tj.linalg.solve(x, tj.tensor(b)),
              lambda x: torch.linalg.solve(x, torch.tensor(b))),
             (lambda x: tj.linalg.solve_triangular(x, tj.tensor(b), upper=False),
              lambda x: torch.linalg.solve_triangular(x, torch.tensor(b), upper=False))]
    for f, tf in cases:
        _, t1 = tj.jvp(f, (tj.tensor(a),), (tj.tensor(d),))
        _, t2 = torch.func.jvp(tf, (torch.tensor(a),), (torch.tensor(d),))
        np.testing.assert_allclose(t1.numpy(), t2.numpy(), atol=1e-10)
    batch = spd(4, 3, 3)
    np.testing.assert_allclose(tj.vmap(tj.linalg.inv)(tj.tensor(batch)).numpy(),
                               np.linalg.inv(batch), atol=1e-12)
    np.testing.assert_allclose(
        tj.vmap(tj.linalg.solve, in_dims=(0, None))(tj.tensor(batch), tj.tensor(b)).numpy(),
        np.linalg.solve(batch, b), atol=1e-12)


def test_errors_name_op_shape_and_line():
    with pytest.raises(tj.linalg.LinAlgError,
                       match=r"linalg\.inv: .*singular.*test_linalg_solvers"):
        tj.linalg.inv(np.zeros((2, 3, 3)))
    with pytest.raises(RuntimeError, match=r"linalg\.cholesky: .*positive-definite"):
        tj.compile(tj.linalg.cholesky)(-np.eye(3))
    with pytest.raises(RuntimeError, match=r"linalg\.solve: .*singular"):
        tj.linalg.solve(np.ones((2, 2)), np.ones((2, 1)))
    with pytest.raises(ValueError, match=r"linalg\.inv: .*square.*3 by 2.*test_linalg_solvers"):
        tj.linalg.inv(np.zeros((3, 2)))
    with pytest.raises(ValueError, match=r"linalg\.det: .*square"):
        tj.compile(tj.linalg.det)(np.zeros((3, 2)))
    with pytest.raises(TypeError, match=r"linalg\.cholesky: .*float32 or float64.*i64"):
        tj.linalg.cholesky(np.eye(3, dtype=np.int64))
    with pytest.raises(ValueError, match=r"linalg\.solve: incompatible shapes"):
        tj.linalg.solve(np.eye(3), np.ones((2, 1)))
    with pytest.raises(ValueError, match=r"linalg\.solve_triangular: .*not broadcastable"):
        tj.linalg.solve_triangular(np.eye(3)[None].repeat(2, 0), np.ones((3, 3, 1)), upper=True)
    with pytest.raises(ValueError, match=r"at least 2 dimensions"):
        tj.linalg.det(np.ones(3))


def test_tensor_methods():
    a = spd(2, 3, 3)
    x, t = tj.tensor(a), torch.tensor(a)
    for name in ("inverse", "det", "logdet", "cholesky", "pinverse"):
        np.testing.assert_allclose(getattr(x, name)().numpy(), getattr(t, name)().numpy(),
                                   atol=1e-12)
    np.testing.assert_allclose(x.cholesky(True).numpy(), t.cholesky(True).numpy(), atol=1e-12)
    np.testing.assert_allclose(x.slogdet()[1].numpy(), t.slogdet()[1].numpy(), atol=1e-12)


def test_ex_forms_report_info_as_torch():
    a = np.stack([2 * np.eye(3), np.diag([1.0, -1.0, 2.0]),
                  np.array([[1.0, 2, 3], [2, 1, 0], [3, 0, 1]])])
    s = np.stack([np.eye(3), np.array([[1.0, 2, 3], [2, 4, 6], [1, 1, 1]]),
                  np.array([[0.0, 0, 0], [1, 2, 3], [4, 5, 6]])])
    for fn, tfn, m in ((tj.linalg.cholesky_ex, torch.linalg.cholesky_ex, a),
                       (tj.linalg.inv_ex, torch.linalg.inv_ex, s)):
        want = tfn(torch.tensor(m))
        for got in (fn(m), tj.compile(fn)(m)):
            np.testing.assert_array_equal(got.info.numpy(), want.info.numpy())
            assert got.info.dtype == tj.int32
            np.testing.assert_allclose(got[0].numpy()[0], want[0].numpy()[0], atol=1e-12)
            assert np.isnan(got[0].numpy()[1:]).all()
    assert tj.linalg.cholesky_ex(a[:1]).L.shape == (1, 3, 3)
    assert tj.linalg.inv_ex(s[:1]).inverse.shape == (1, 3, 3)
    with pytest.raises(tj.linalg.LinAlgError, match="positive-definite"):
        tj.linalg.cholesky_ex(a, check_errors=True)
    check(lambda x: tj.linalg.cholesky_ex(x).L, lambda x: torch.linalg.cholesky_ex(x).L, a[:1])
