"""A fused composite's node made on its lean path (one tensor argument, a compiled plan): the
node's edges, the inputs and output it checks for in-place changes, and its gradients, against
torch, on the interpreted calls and on the compiled ones after them."""
import numpy as np
import pytest

import tracejit as tj
from tracejit.tracer import fused

torch = pytest.importorskip("torch")

CALLS = fused.COMPILE_AFTER + 3 if fused.COMPILE_AFTER else 3


@pytest.mark.parametrize("name", ["sigmoid", "relu", "tanh"])
def test_repeated_calls_match_torch(name):
    rng = np.random.default_rng(0)
    a = rng.standard_normal((4, 8)).astype(np.float32)
    for _ in range(CALLS):
        x = tj.tensor(a, requires_grad=True)
        xt = torch.tensor(a, requires_grad=True)
        h, ht = x * 2, xt * 2                         # a non-leaf input (an edge to MulBackward0)
        y, yt = getattr(tj, name)(h), getattr(torch, name)(ht)
        assert y.grad_fn.name() == yt.grad_fn.name()
        assert y.grad_fn.next_functions[0][0] is h.grad_fn
        w = rng.standard_normal((4, 8)).astype(np.float32)
        (y * tj.tensor(w)).sum().backward()
        (yt * torch.tensor(w)).sum().backward()
        np.testing.assert_allclose(y.detach().numpy(), yt.detach().numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(x.grad.numpy(), xt.grad.numpy(), rtol=1e-5, atol=1e-6)


def test_leaf_edge_and_input_changed_after_the_call():
    """sigmoid keeps its result, not its input (as torch): changing the input in place after
    the call is legal and the gradient is unchanged."""
    a = np.linspace(-2, 2, 12, dtype=np.float32).reshape(3, 4)
    for _ in range(CALLS):
        x = tj.tensor(a, requires_grad=True)
        y = tj.sigmoid(x)
        assert y.grad_fn.next_functions[0][0] is not None
        assert y.grad_fn.next_functions[0][0].name() == "AccumulateGrad"
        z = tj.tensor(a.copy(), requires_grad=True) * 1.0
        yz = tj.sigmoid(z)
        with tj.no_grad():
            z.mul_(3.0)                                  # the input: legal
        yz.sum().backward()
        s = 1 / (1 + np.exp(-a.astype(np.float64)))
        y.sum().backward()
        np.testing.assert_allclose(x.grad.numpy(), s * (1 - s), rtol=1e-5)
        x2 = tj.tensor(a, requires_grad=True)
        y2 = tj.sigmoid(x2)
        with tj.no_grad():
            y2.add_(1.0)
        try:            # torch refuses; a node that saved no alias of y2 may give the gradient
            y2.sum().backward()
        except RuntimeError as e:
            assert "modified by an inplace operation" in str(e)
        else:           # ... of the function at the call, never one read from the new y2
            np.testing.assert_allclose(x2.grad.numpy(), s * (1 - s), rtol=1e-5)


def test_input_without_grad_has_no_edge():
    a = np.ones((2, 3), np.float32)
    for _ in range(CALLS):
        x = tj.tensor(a, requires_grad=True)
        c = tj.tensor(a)
        y = tj.softmax(x * c, -1)
        assert y.requires_grad
        y2 = tj.sigmoid(c)
        assert y2.grad_fn is None and not y2.requires_grad


def test_a_compiled_plan_is_not_compiled_again(monkeypatch):
    """Calls after the compiling one do not count towards compiling again (raising
    TRACEJIT_FUSED_COMPILE_AFTER's value later compiled a compiled plan a second time)."""
    if fused.COMPILE_AFTER == 0:
        pytest.skip("compiling fused composites is off (TRACEJIT_FUSED_COMPILE_AFTER=0)")
    x = tj.tensor(np.ones((3, 7), np.float32), requires_grad=True)
    for _ in range(fused.COMPILE_AFTER):
        tj.sigmoid(x)
    assert tj.sigmoid(x).grad_fn.plan.compiled
    before = fused.stats["compiles"]
    monkeypatch.setattr(fused, "COMPILE_AFTER", fused.COMPILE_AFTER + 2)
    for _ in range(4):
        y = tj.sigmoid(x)
    assert fused.stats["compiles"] == before
    y.sum().backward()
    s = 1 / (1 + np.exp(-1.0))
    np.testing.assert_allclose(x.grad.numpy(), np.full((3, 7), s * (1 - s)), rtol=1e-6)
