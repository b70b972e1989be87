"""tj.linalg.matrix_norm / norm / vector_norm against torch.linalg: values and gradients (ties
included), eagerly and compiled, float32/float64, batches, keepdim, dims, non-contiguous input;
the SVD norms raise NotImplementedError, bad arguments raise as torch."""
import math

import numpy as np
import pytest

import tracejit as tj

torch = pytest.importorskip("torch")


def _check(tf, torchf, x, compiled):
    w = np.random.default_rng(2).standard_normal(torchf(torch.tensor(x)).shape).astype(x.dtype)
    t = torch.tensor(x, requires_grad=True)
    y = torchf(t)
    (y * torch.tensor(w)).sum().backward()
    loss = (lambda a: (tf(a) * tj.tensor(w)).sum())
    if compiled:
        got_y = tj.compile(tf)(tj.tensor(x))
        got_g = tj.compile(tj.grad(loss))(tj.tensor(x))
    else:
        a = tj.tensor(x, requires_grad=True)
        got_y = tf(a)
        loss(a).backward()
        got_g = a.grad
    tol = 8 * np.finfo(x.dtype).eps
    got_y = got_y.detach()
    assert got_y.numpy().dtype == y.detach().numpy().dtype
    assert got_y.shape == tuple(y.shape)
    np.testing.assert_allclose(got_y.numpy(), y.detach().numpy(), rtol=tol, atol=tol)
    np.testing.assert_allclose(got_g.numpy(), t.grad.numpy(), rtol=tol, atol=tol)


A = np.random.default_rng(0).standard_normal((2, 3, 4))
A[0, 0, :2] = [5.0, -5.0]                # ties in the row/column sums and maxima
A[0, 1, :2] = [-5.0, 5.0]


@pytest.mark.parametrize("compiled", [False, True])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("ord", ["fro", 1, -1, math.inf, -math.inf])
@pytest.mark.parametrize("dim,keepdim", [((-2, -1), False), ((0, 2), True), ((2, 1), False)])
def test_matrix_norm(ord, dtype, compiled, dim, keepdim):
    x = A.astype(dtype)
    _check(lambda a: tj.linalg.matrix_norm(a, ord, dim, keepdim),
           lambda a: torch.linalg.matrix_norm(a, ord, dim, keepdim), x, compiled)


@pytest.mark.parametrize("compiled", [False, True])
@pytest.mark.parametrize("case", [
    {}, {"ord": 3}, {"dim": 1}, {"dim": (0, 1), "ord": "fro"}, {"dim": (1, 2), "ord": 1},
    {"dim": 2, "ord": math.inf, "keepdim": True}, {"dim": (1,)},
])
def test_linalg_norm(case, compiled):
    x = A if "ord" not in case or "dim" in case else A[0, 0]
    _check(lambda a: tj.linalg.norm(a, **case), lambda a: torch.linalg.norm(a, **case), x,
           compiled)


@pytest.mark.parametrize("ord", [None, 1, math.inf, "fro", -1])
def test_linalg_norm_2d_and_1d_and_noncontiguous(ord):
    for x in (A[1], A[1].T, A[0, 0]):
        if x.ndim == 1 and ord in ("fro",):
            continue
        got = tj.linalg.norm(tj.tensor(A[1]).t() if x is A[1].T else tj.tensor(x), ord)
        np.testing.assert_allclose(got.numpy(),
                                   torch.linalg.norm(torch.tensor(x), ord).numpy(), rtol=1e-12)


def test_svd_norms_match_torch():
    for ord in (2, -2, "nuc"):
        for keepdim in (False, True):
            np.testing.assert_allclose(
                tj.linalg.matrix_norm(tj.tensor(A), ord, keepdim=keepdim).numpy(),
                torch.linalg.matrix_norm(torch.tensor(A), ord, keepdim=keepdim).numpy(),
                rtol=1e-12)
        np.testing.assert_allclose(
            tj.linalg.matrix_norm(tj.tensor(A), ord, dim=(0, -1)).numpy(),
            torch.linalg.matrix_norm(torch.tensor(A), ord, dim=(0, -1)).numpy(), rtol=1e-12)
        np.testing.assert_allclose(tj.linalg.norm(tj.tensor(A[0]), ord).numpy(),
                                   torch.linalg.norm(torch.tensor(A[0]), ord).numpy(),
                                   rtol=1e-12)


@pytest.mark.parametrize("call", [
    lambda m, x: m.linalg.matrix_norm(x[0, 0]),                 # 1-D
    lambda m, x: m.linalg.matrix_norm(x, 3),                    # a bad order
    lambda m, x: m.linalg.matrix_norm(x, "abc"),
    lambda m, x: m.linalg.matrix_norm(x, dim=(1, 1)),
    lambda m, x: m.linalg.norm(x, 2),                           # ord with a 3-D input
    lambda m, x: m.linalg.norm(x[0, 0], "fro"),                 # a matrix ord, vector dims
    lambda m, x: m.linalg.matrix_norm(x.long()),                # integers
])
def test_errors_as_torch(call):
    with pytest.raises(RuntimeError):
        call(torch, torch.tensor(A))
    with pytest.raises(RuntimeError, match=r"linalg\.\w+.*test_math_norms_vs_torch.py"):
        call(tj, tj.tensor(A))
