"""A VJP plan replayed by the Python function written for it (vjp_plans._compile): the same
values, bit for bit, as the rule applied to Tensors (the recording path of create_graph),
for the cases its straight-line code has to get right: 0-d operands (NumPy returns scalars),
empty arrays, non-contiguous gradients, params, constants and fills, views of operands (kept
read-only), 16-bit floats (matmul and sum accumulate in float32: in_float32's wrapper stays),
and every replay's fresh arrays."""
import numpy as np
import pytest

import tracejit as tj
from tracejit.tracer import vjp_plans


def _grads(f, arrays, create_graph=False):
    ts = [tj.tensor(a, requires_grad=True) for a in arrays]
    out = f(*ts)
    if create_graph:
        gs = tj.autograd.grad(out, ts, create_graph=True)
        return [g.detach().numpy().copy() for g in gs]
    out.backward()
    return [t.grad.numpy().copy() for t in ts]


def _same(f, arrays):
    want = _grads(f, arrays, create_graph=True)
    for _ in range(3):                      # records, then replays twice
        got = _grads(f, arrays)
        for a, b in zip(want, got):
            assert a.dtype == b.dtype and a.shape == b.shape
            np.testing.assert_array_equal(a, b)


CASES = {
    "zero_d": (lambda x, y: tj.exp(x * y) / (y + 2.0), [(), ()]),
    "empty": (lambda x, y: (tj.tanh(x) * y).sum(), [(0, 3), (0, 3)]),
    "transposed_grad": (lambda x, y: ((x @ y).T * 2.0).sum(0).sum(), [(3, 4), (4, 5)]),
    "params": (lambda x, y: (x.sum(1, keepdim=True) * y).amax(0).sum(), [(3, 4), (3, 4)]),
    "views": (lambda x, y: (x.reshape(4, 3).T * y).permute(1, 0).sum(), [(3, 4), (3, 4)]),
    "fills": (lambda x, y: (tj.relu(x) + tj.abs(y) + tj.sqrt(x * x + 1.0)).sum(),
              [(2, 5), (2, 5)]),
    "pow_and_where": (lambda x, y: tj.where(x > 0, x ** 3, y ** 2).sum(), [(4, 4), (4, 4)]),
}


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("case", sorted(CASES))
def test_replayed_function_equals_the_rule(case, dtype):
    f, shapes = CASES[case]
    rng = np.random.default_rng(len(case))
    _same(f, [rng.standard_normal(s).astype(dtype) for s in shapes])


def test_half_matmul_accumulates_in_float32():
    """float16 operands: the plan keeps in_float32's wrapper (float32 accumulation, one
    rounding); float32 operands call NumPy's matmul directly, the same values."""
    rng = np.random.default_rng(3)
    a = (rng.standard_normal((8, 64)) * 4).astype(np.float16)
    b = (rng.standard_normal((64, 8)) * 4).astype(np.float16)
    for _ in range(2):
        x, w = tj.tensor(a, requires_grad=True), tj.tensor(b, requires_grad=True)
        (x @ w).sum().backward()
    g = np.ones((8, 8), np.float32)
    np.testing.assert_array_equal(
        x.grad.numpy(), (g @ b.astype(np.float32).T).astype(np.float16))
    np.testing.assert_array_equal(
        w.grad.numpy(), (a.astype(np.float32).T @ g).astype(np.float16))


def test_a_plan_is_one_function_per_key(monkeypatch):
    made = []
    real = vjp_plans._compile

    def counting(*a):
        made.append(1)
        return real(*a)
    monkeypatch.setattr(vjp_plans, "_compile", counting)
    rng = np.random.default_rng(4)
    v = rng.standard_normal((7, 13))        # shapes no other test records
    for _ in range(4):
        x = tj.tensor(v, requires_grad=True)
        (tj.sin(x) * x).sum().backward()
    assert 1 <= len(made) <= 3, made        # sin's, mul's, sum's: recorded once each
    np.testing.assert_allclose(x.grad.numpy(), np.cos(v) * v + np.sin(v), rtol=1e-12)
