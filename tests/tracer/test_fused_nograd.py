"""Large elementwise composites without gradients run as one compiled loop
(tracer/fused_nograd.py): same values as torch, reductions stay op by op, no graph recorded."""
import numpy as np
import pytest

import tracejit as tj
import tracejit.nn.functional as F
from tracejit.tracer import fused_nograd

torch = pytest.importorskip("torch")
TF = torch.nn.functional

CASES = [
    ("sigmoid", tj.sigmoid, torch.sigmoid),
    ("gelu", F.gelu, TF.gelu),
    ("gelu_tanh", lambda x: F.gelu(x, approximate="tanh"),
     lambda x: TF.gelu(x, approximate="tanh")),
    ("silu", F.silu, TF.silu),
    ("elu", F.elu, TF.elu),
    ("softplus", F.softplus, TF.softplus),
    ("mish", F.mish, TF.mish),
]


def _run(f, x, times=4):
    for _ in range(times):       # compiled from the COMPILE_AFTER-th call
        y = f(x)
    return y


@pytest.mark.parametrize("dtype,tol", [(np.float32, 2e-6), (np.float64, 1e-12)])
@pytest.mark.parametrize("name,f,tf", CASES, ids=[c[0] for c in CASES])
def test_values_match_torch_and_compile(name, f, tf, dtype, tol):
    x = np.random.default_rng(0).standard_normal((96, 128)).astype(dtype) * 4
    before = fused_nograd.stats["compiled_calls"]
    y = _run(f, tj.tensor(x))
    assert fused_nograd.stats["compiled_calls"] > before, "should run as one compiled loop"
    np.testing.assert_allclose(y.numpy(), tf(torch.tensor(x)).numpy(), rtol=tol, atol=tol)
    assert y.dtype == tj.tensor(x).dtype


def test_non_contiguous_and_broadcast_inputs():
    base = np.random.default_rng(1).standard_normal((128, 256)).astype(np.float32)
    xt = tj.tensor(base).t()                           # a transposed view
    y = _run(tj.sigmoid, xt)
    np.testing.assert_allclose(y.numpy(), 1 / (1 + np.exp(-base.T.astype(np.float64))),
                               rtol=2e-6, atol=1e-7)


def test_no_grad_on_a_tensor_that_requires_grad_records_nothing():
    x = tj.tensor(np.linspace(-5, 5, 8192, dtype=np.float32), requires_grad=True)
    with tj.no_grad():
        y = _run(tj.sigmoid, x)
    assert y.grad_fn is None and not y.requires_grad
    z = tj.sigmoid(x)                                  # with grad: the fused node, as before
    z.sum().backward()
    s = 1 / (1 + np.exp(-x.detach().numpy().astype(np.float64)))
    np.testing.assert_allclose(x.grad.numpy(), s * (1 - s), rtol=1e-5, atol=1e-7)


def test_reductions_and_small_tensors_stay_op_by_op():
    x = np.random.default_rng(2).standard_normal((64, 128)).astype(np.float32)
    before = dict(fused_nograd.stats)
    s = _run(lambda t: tj.softmax(t, -1), tj.tensor(x))
    small = _run(tj.sigmoid, tj.tensor(x[:2, :8]))
    assert fused_nograd.stats == before
    e = np.exp(x - x.max(-1, keepdims=True))
    np.testing.assert_allclose(s.numpy(), e / e.sum(-1, keepdims=True), rtol=1e-6)
    np.testing.assert_allclose(small.numpy(), 1 / (1 + np.exp(-x[:2, :8])), rtol=1e-6)


def test_result_is_its_own_memory():
    x = tj.tensor(np.zeros(8192, np.float32))
    y = _run(tj.sigmoid, x)
    y2 = tj.sigmoid(x)
    y.add_(1)
    np.testing.assert_array_equal(y2.numpy(), np.full(8192, 0.5, np.float32))
    np.testing.assert_array_equal(x.numpy(), np.zeros(8192, np.float32))
