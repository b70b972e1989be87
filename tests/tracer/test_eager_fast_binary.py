"""Binary and unary ops on host float tensors of one dtype take a short path in ops._binary /
ops._unary (no dtype lookups); its results, dtypes, node names, gradients and errors are those
of the general path, checked against torch and NumPy."""
import numpy as np
import pytest

import tracejit as tj

torch = pytest.importorskip("torch")

SHAPES = [((4, 8), (4, 8)), ((4, 8), (8,)), ((8,), (4, 8)), ((4, 1), (1, 8)), ((), (3,)),
          ((0, 3), (3,)), ((1,), (1,)), ((2, 3, 4), (3, 1))]
OPS = ["add", "sub", "mul", "div", "maximum", "pow"]


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("op", OPS)
def test_binary_matches_torch(op, dtype):
    rng = np.random.default_rng(1)
    for sa, sb in SHAPES:
        a = (rng.random(sa) + 0.5).astype(dtype)
        b = (rng.random(sb) + 0.5).astype(dtype)
        x, y = tj.tensor(a, requires_grad=True), tj.tensor(b, requires_grad=True)
        xt, yt = torch.tensor(a, requires_grad=True), torch.tensor(b, requires_grad=True)
        z, zt = getattr(tj, op)(x, y), getattr(torch, op)(xt, yt)
        assert z.dtype.np == zt.detach().numpy().dtype
        assert z.shape == tuple(zt.shape)
        tol = 1e-2 if dtype == np.float16 else 1e-5
        np.testing.assert_allclose(z.detach().numpy(), zt.detach().numpy(), rtol=tol)
        assert z.grad_fn.name() == zt.grad_fn.name()
        if z.numel():
            z.sum().backward()
            zt.sum().backward()
            np.testing.assert_allclose(x.grad.numpy(), xt.grad.numpy(), rtol=tol, atol=tol)
            np.testing.assert_allclose(y.grad.numpy(), yt.grad.numpy(), rtol=tol, atol=tol)


def test_equal_dtypes_that_are_not_one_object():
    """Two float32 arrays whose dtype objects are equal but distinct (a non-native byte order
    made native again) give the same result as ones sharing NumPy's dtype object."""
    a = np.arange(6, dtype=">f4").astype("<f4")
    b = np.frombuffer(np.arange(6, dtype=np.float32).tobytes(), dtype=np.dtype("f4"))
    for x, y in ((a, b), (b, a)):
        z = tj.tensor(x) * tj.tensor(y)
        np.testing.assert_array_equal(z.numpy(), x * y)
        assert z.dtype is tj.float32


def test_mixed_dtypes_and_errors_take_the_general_path():
    f32 = tj.tensor(np.ones((2, 3), np.float32))
    f64 = tj.tensor(np.ones((2, 3), np.float64))
    assert (f32 + f64).dtype is tj.float64
    i64 = tj.tensor(np.ones((2, 3), np.int64))
    assert (f32 * i64).dtype is tj.float32
    with pytest.raises(ValueError, match=r"mul.*not broadcastable"):
        tj.tensor(np.ones((2, 3), np.float32)) * tj.tensor(np.ones((4,), np.float32))
    with pytest.raises(ValueError, match=r"add.*not broadcastable"):
        tj.tensor(np.ones((2, 3), np.float32)) + tj.tensor(np.ones((2, 4), np.float32))


@pytest.mark.parametrize("op", ["tanh", "exp", "neg", "abs", "sqrt", "log", "sin"])
def test_unary_matches_torch(op):
    a = np.linspace(0.1, 2.0, 12, dtype=np.float32).reshape(3, 4)
    x, xt = tj.tensor(a, requires_grad=True), torch.tensor(a, requires_grad=True)
    y, yt = getattr(tj, op)(x), getattr(torch, op)(xt)
    np.testing.assert_allclose(y.detach().numpy(), yt.detach().numpy(), rtol=1e-5)
    assert y.grad_fn.name() == yt.grad_fn.name()
    y.sum().backward()
    yt.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), xt.grad.numpy(), rtol=1e-5)
    i = tj.tensor(np.arange(3))
    if op in ("neg", "abs"):
        assert getattr(tj, op)(i).dtype is tj.int64
    else:
        assert getattr(tj, op)(i).dtype is tj.float32       # integers compute in float32


def test_inside_a_trace_and_with_weak_scalars():
    f = tj.compile(lambda x, y, s: (x * y + s, tj.tanh(x) - y))
    a = np.arange(4.0, dtype=np.float32)
    p, q = f(tj.tensor(a), tj.tensor(a + 1), 0.5)
    np.testing.assert_allclose(p.numpy(), a * (a + 1) + 0.5)
    np.testing.assert_allclose(q.numpy(), np.tanh(a) - (a + 1), rtol=1e-6)
    assert p.dtype is tj.float32
