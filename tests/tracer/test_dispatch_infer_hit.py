"""dispatch.apply_primitive looks the inference cache up itself for one- and two-operand
primitives without params (its key is eager.infer's): a repeated op makes no infer call, and
what it finds is what infer gives."""
import numpy as np
import pytest

import tracejit as tj
from tracejit.tracer import eager


@pytest.fixture
def infer_calls(monkeypatch):
    calls = []
    orig = eager.infer

    def counted(prim, params, data):
        calls.append(prim.name)
        return orig(prim, params, data)
    monkeypatch.setattr(eager, "infer", counted)
    return calls


def test_repeated_ops_hit_the_cache_without_infer(infer_calls):
    x = tj.tensor(np.ones((3, 4), np.float32), requires_grad=True)
    y = tj.tensor(np.ones((3, 4), np.float32))
    w = tj.tensor(np.ones((4, 2), np.float32), requires_grad=True)
    for _ in range(2):
        x * y, tj.tanh(x), x @ w
    infer_calls.clear()
    for _ in range(3):
        z = tj.tanh(x * y) @ w
    assert infer_calls == []
    assert z.grad_fn.name() == "MmBackward0"


def test_what_the_lookup_finds_is_infers_entry():
    from tracejit.ir.primitives import P
    a, b = np.ones((2, 3), np.float32), np.ones((2, 3), np.float32)
    tj.tensor(a) * tj.tensor(b)
    key = (P.mul, (), a.shape, a.dtype.num, b.shape, b.dtype.num)
    assert eager._INFER[key] is eager.infer(P.mul, {}, [a, b])


def test_new_shapes_dtypes_and_errors_still_infer(infer_calls):
    for dtype in (np.float32, np.float64, np.int32):
        for shape in ((2,), (0, 3), ()):
            a = np.ones(shape, dtype)
            r = tj.tensor(a) * tj.tensor(a)
            assert r.dtype.np == np.dtype(dtype) and r.shape == shape
    assert infer_calls
    with pytest.raises(ValueError, match="matmul"):
        tj.tensor(np.ones((2, 3), np.float32)) @ tj.tensor(np.ones((4, 2), np.float32))


def test_repeated_transposes_make_no_infer_call_and_keep_their_names(infer_calls):
    torch = pytest.importorskip("torch")
    a = np.arange(6.0, dtype=np.float32).reshape(2, 3)
    w, wt = tj.tensor(a, requires_grad=True), torch.tensor(a, requires_grad=True)
    for rep in range(3):
        if rep == 1:
            infer_calls.clear()
        ys = [w.T, w.t(), w.mT]
        yts = [wt.T, wt.t(), wt.mT]
        assert [y.grad_fn.name() for y in ys] == [y.grad_fn.name() for y in yts]
        for y, yt in zip(ys, yts):
            np.testing.assert_array_equal(y.detach().numpy(), yt.detach().numpy())
    assert "transpose" not in infer_calls
    g = np.arange(6.0, dtype=np.float32).reshape(3, 2)
    (w.T * tj.tensor(g)).sum().backward()
    (wt.T * torch.tensor(g)).sum().backward()
    np.testing.assert_array_equal(w.grad.numpy(), wt.grad.numpy())
    with tj.no_grad():
        assert w.T.grad_fn is None
    b = tj.tensor(np.ones((2, 3, 4)), requires_grad=True)
    assert b.T.shape == (4, 3, 2) and b.mT.shape == (2, 4, 3)
