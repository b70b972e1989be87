"""A compiled fused composite with data-dependent index checks (cross_entropy's targets) runs
its checks inside its forward: one native call per eager call instead of a check call and a
forward call (#14, makemore's loss). Values and gradients match torch; a bad target still
raises IndexError naming the op, the target and the user's file:line, and the plan keeps
serving good calls afterwards."""
import os

import numpy as np
import pytest

import tracejit as tj
from tracejit.tracer import fused

torch = pytest.importorskip("torch")
F = tj.nn.functional
TF = torch.nn.functional
HERE = os.path.basename(__file__)


@pytest.fixture
def native_calls(monkeypatch):
    """Compile plans on their first call; count the compiled graphs' runs."""
    calls = []
    real = fused._COMPILER[0]
    assert real is not None          # the runtime registers the compiler at import

    def counting(graph):
        run = real(graph)

        def counted(xs):
            calls.append(graph.name)
            return run(xs)
        return counted
    monkeypatch.setattr(fused, "COMPILE_AFTER", 1)
    fused.set_compiler(counting)
    fused.clear()
    try:
        yield calls
    finally:
        fused.set_compiler(real)
        fused.clear()


@pytest.mark.parametrize("kw", [{}, {"ignore_index": 2}, {"reduction": "none"},
                                {"label_smoothing": 0.1}])
@pytest.mark.parametrize("n", [53, 1])
def test_checked_forward_is_one_native_call(native_calls, kw, n):
    rng = np.random.default_rng(0)
    v = rng.standard_normal((n, 27)).astype(np.float32)
    t = rng.integers(0, 27, (n,))
    for _ in range(3):
        x = tj.tensor(v, requires_grad=True)
        native_calls.clear()
        loss = F.cross_entropy(x, tj.tensor(t), **kw)
        assert len(native_calls) == 1, native_calls
        tx = torch.tensor(v, requires_grad=True)
        want = TF.cross_entropy(tx, torch.tensor(t), **kw)
        np.testing.assert_allclose(loss.detach().numpy(), want.detach().numpy(), rtol=1e-5,
                                   atol=1e-6)
        g = rng.standard_normal(want.shape).astype(np.float32)
        loss.backward(tj.tensor(g))
        want.backward(torch.tensor(g))
        np.testing.assert_allclose(x.grad.numpy(), tx.grad.numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("bad", [27, -1, 1000, -1000])
def test_bad_target_still_raises_after_compiling(native_calls, bad):
    rng = np.random.default_rng(1)
    x = tj.tensor(rng.standard_normal((5, 27)).astype(np.float32), requires_grad=True)
    good = np.array([0, 26, 3, 4, 5])
    F.cross_entropy(x, tj.tensor(good)).backward()        # compiles the plan
    t = good.copy()
    t[2] = bad
    with pytest.raises(IndexError, match="cross_entropy: .*target.* out of bounds for 27 classes") \
            as info:
        F.cross_entropy(x, tj.tensor(t))
    assert HERE in str(info.value)
    x.grad = None
    loss = F.cross_entropy(x, tj.tensor(good))        # the plan still serves good calls
    loss.backward()
    tx = torch.tensor(x.detach().numpy(), requires_grad=True)
    want = TF.cross_entropy(tx, torch.tensor(good))
    want.backward()
    np.testing.assert_allclose(loss.item(), want.item(), rtol=1e-5)
    np.testing.assert_allclose(x.grad.numpy(), tx.grad.numpy(), rtol=1e-5, atol=1e-6)
