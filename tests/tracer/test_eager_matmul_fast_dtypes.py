"""`a @ b` on two 2-D host tensors takes dispatch.fast_binary's one frame from its second call
(#14); there float32/float64 call NumPy's matmul directly and float16 keeps the registry's
rule (accumulate in float32, round once), bit for bit as the first, general-path call."""
import numpy as np
import pytest

import tracejit as tj


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_matmul_fast_path_rounds_as_the_rule(dtype):
    rng = np.random.default_rng(3)
    a = rng.standard_normal((5, 64)).astype(dtype)
    b = rng.standard_normal((64, 7)).astype(dtype)
    want = (a.astype(np.float32) @ b.astype(np.float32)).astype(dtype) \
        if dtype == np.float16 else a @ b
    w = tj.tensor(b, requires_grad=True)
    for _ in range(3):                      # the first fills the inference cache
        x = tj.tensor(a)
        y = x @ w.T.T
        assert y.dtype.np == dtype
        np.testing.assert_array_equal(y.detach().numpy(), want)
        assert y.grad_fn.name() == "MmBackward0"
    y.sum().backward()
    gw = (a.astype(np.float32).T @ np.ones((5, 7), np.float32)).astype(dtype) \
        if dtype == np.float16 else a.T @ np.ones((5, 7), dtype)
    np.testing.assert_allclose(w.grad.numpy(), gw, rtol=1e-3 if dtype == np.float16 else 1e-12)
