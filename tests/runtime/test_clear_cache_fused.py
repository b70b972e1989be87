"""tj.clear_cache() also drops the eager composites' fused plans (tracer/fused.py)."""
import numpy as np

import tracejit as tj
from tracejit.tracer import fused, fused_nograd


def test_clear_cache_drops_fused_plans():
    x = tj.tensor(np.linspace(-1.0, 1.0, 12).reshape(3, 4), requires_grad=True)
    tj.softmax(x, -1).sum().backward()
    assert fused._PLANS, "softmax with gradients should have made a fused plan"
    tj.clear_cache()
    assert not fused._PLANS
    x.grad = None
    tj.softmax(x, -1).sum().backward()          # a fresh plan gives the same gradient
    np.testing.assert_allclose(x.grad.numpy(), np.zeros((3, 4)), atol=1e-12)


def test_clear_cache_drops_no_grad_plans():
    x = tj.tensor(np.linspace(-1.0, 1.0, 8192, dtype=np.float32))
    for _ in range(3):
        tj.sigmoid(x)
    assert fused_nograd._PLANS
    tj.clear_cache()
    assert not fused_nograd._PLANS
