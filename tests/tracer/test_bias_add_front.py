"""x + bias (and bias + x, x - bias, bias - x) through the operators' one-frame broadcast
step (broadcast_add.front), and x.T by rank: values against NumPy, gradients and node names
against torch, and the shapes and dtypes that leave the shortcut for the general path."""
import numpy as np
import pytest

import tracejit as tj

torch = pytest.importorskip("torch")

SHAPES = [((4, 32), (32,)), ((32,), (4, 32)), ((2, 3, 5), (5,)), ((2, 3, 5), (3, 5)),
          ((3, 5), (2, 3, 5)), ((4, 3), ()), ((), (4, 3)), ((0, 6), (6,)), ((1, 1), (1,)),
          ((4, 1), (3,)), ((4, 32), (1, 32)), ((3,), (4, 1))]


@pytest.mark.parametrize("op", ["add", "sub"])
@pytest.mark.parametrize("sa,sb", SHAPES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_values_grads_and_names_match_torch(op, sa, sb, dtype):
    rng = np.random.default_rng(len(sa) * 7 + len(sb))
    a, b = rng.standard_normal(sa).astype(dtype), rng.standard_normal(sb).astype(dtype)
    ta, tb = tj.tensor(a, requires_grad=True), tj.tensor(b, requires_grad=True)
    qa, qb = torch.tensor(a, requires_grad=True), torch.tensor(b, requires_grad=True)
    out = ta + tb if op == "add" else ta - tb
    want = qa + qb if op == "add" else qa - qb
    np.testing.assert_array_equal(out.detach().numpy(), (a + b) if op == "add" else (a - b))
    assert out.dtype.np == dtype and tuple(out.shape) == tuple(want.shape)
    assert out.grad_fn.name() == want.grad_fn.name()
    g = rng.standard_normal(tuple(want.shape)).astype(dtype)
    out.backward(tj.tensor(g))
    want.backward(torch.tensor(g))
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(ta.grad.numpy(), qa.grad.numpy(), rtol=tol, atol=tol)
    np.testing.assert_allclose(tb.grad.numpy(), qb.grad.numpy(), rtol=tol, atol=tol)
    assert tuple(ta.grad.shape) == sa and tuple(tb.grad.shape) == sb


def test_one_side_requires_grad_and_no_grad():
    x = tj.tensor(np.ones((4, 3), np.float32))
    b = tj.tensor(np.arange(3, dtype=np.float32), requires_grad=True)
    y = b - x
    assert y.requires_grad
    y.sum().backward()
    np.testing.assert_array_equal(b.grad.numpy(), np.full(3, 4, np.float32))
    with tj.no_grad():
        z = x + b
    assert not z.requires_grad and z.grad_fn is None
    np.testing.assert_array_equal(z.numpy(), np.ones((4, 3)) + np.arange(3))


def test_float16_large_and_mixed_dtypes_take_the_general_path():
    # (the shortcut is float32/float64 up to broadcast_add.MAX_ELEMENTS: these go elsewhere and
    # still give NumPy's values and torch's promotion)
    h = tj.tensor(np.ones((4, 3), np.float16), requires_grad=True)
    hb = tj.tensor(np.arange(3, dtype=np.float16), requires_grad=True)
    r = h + hb
    assert r.dtype.np == np.float16
    np.testing.assert_array_equal(r.detach().numpy(), np.ones((4, 3), np.float16) + np.arange(3))
    big = tj.tensor(np.ones((200, 100), np.float32), requires_grad=True)
    bias = tj.tensor(np.arange(100, dtype=np.float32), requires_grad=True)
    s = big + bias
    np.testing.assert_array_equal(s.detach().numpy(), np.ones((200, 100)) + np.arange(100))
    s.sum().backward()
    np.testing.assert_array_equal(bias.grad.numpy(), np.full(100, 200, np.float32))
    m = tj.tensor(np.ones((4, 3), np.float64)) + tj.tensor(np.arange(3, dtype=np.float32))
    assert m.dtype.np == np.float64


def test_shapes_that_do_not_broadcast_name_the_op():
    a = tj.tensor(np.ones((4, 3), np.float32))
    with pytest.raises(Exception, match="add"):
        a + tj.tensor(np.ones(4, np.float32))
    with pytest.raises(Exception, match="sub"):
        tj.tensor(np.ones((2, 3), np.float32)) - tj.tensor(np.ones((3, 2), np.float32))


@pytest.mark.parametrize("shape", [(), (5,), (3, 4), (2, 3, 4), (0, 3), (1, 1)])
def test_full_transpose_by_rank(shape):
    rng = np.random.default_rng(3)
    v = rng.standard_normal(shape)
    t = tj.tensor(v, requires_grad=True)
    q = torch.tensor(v, requires_grad=True)
    # (torch warns that .T of another rank than 2 is deprecated: the axes reversed, as it does)
    want = q.T if len(shape) == 2 else q.permute(tuple(range(len(shape) - 1, -1, -1)))
    out = t.T
    np.testing.assert_array_equal(out.detach().numpy(), v.T)
    if len(shape) >= 2:
        assert out.grad_fn.name() == want.grad_fn.name()
    g = rng.standard_normal(want.shape)
    (out * tj.tensor(g)).sum().backward()
    (want * torch.tensor(g)).sum().backward()
    np.testing.assert_array_equal(t.grad.numpy(), q.grad.numpy())
