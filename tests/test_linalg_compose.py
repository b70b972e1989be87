"""tj.linalg.matrix_power/multi_dot/vecdot/cond and tj.cholesky_solve/cholesky_inverse
against torch (values and gradients, eager and compiled)."""
import numpy as np
import torch

import tracejit as tj
from test_linalg_solvers import check, spd

RNG = np.random.default_rng(5)


def test_matrix_power_multi_dot_vecdot():
    a = spd(2, 3, 3)
    for n in (0, 1, 5):
        check(lambda x: tj.linalg.matrix_power(x, n), lambda x: torch.linalg.matrix_power(x, n),
              a, tol=1e-8, compiled=n == 5)
    # (torch's own backward of a negative power fails: values only)
    np.testing.assert_allclose(tj.matrix_power(a, -3).numpy(),
                               np.linalg.matrix_power(np.linalg.inv(a), 3), atol=1e-12)
    check(lambda x, y, z: tj.linalg.multi_dot([x, y, z]),
          lambda x, y, z: torch.linalg.multi_dot([x, y, z]),
          RNG.standard_normal(3), RNG.standard_normal((3, 4)), RNG.standard_normal(4))
    check(lambda x, y: tj.linalg.vecdot(x, y), lambda x, y: torch.linalg.vecdot(x, y),
          RNG.standard_normal((2, 3)), RNG.standard_normal(3))


def test_cond_and_cholesky_solve():
    g = RNG.standard_normal((2, 3, 3))
    for p in (None, -2):
        check(lambda x: tj.linalg.cond(x, p), lambda x: torch.linalg.cond(x, p), g, tol=1e-8,
              compiled=p is None)
    for p in ("fro", "nuc", 1, -np.inf):          # (torch's backward of these fails)
        np.testing.assert_allclose(tj.linalg.cond(g, p).numpy(),
                                   torch.linalg.cond(torch.tensor(g), p).numpy(), rtol=1e-10)
    lo = np.linalg.cholesky(spd(2, 3, 3))
    b = RNG.standard_normal((3, 2))
    for upper in (False, True):
        f = np.swapaxes(lo, -1, -2) if upper else lo
        check(lambda x: tj.cholesky_solve(x, tj.tensor(f), upper),
              lambda x: torch.cholesky_solve(x, torch.tensor(f), upper), b)
        np.testing.assert_allclose(tj.cholesky_inverse(f[0], upper).numpy(),
                                   torch.cholesky_inverse(torch.tensor(f[0]), upper).numpy(),
                                   atol=1e-12)
