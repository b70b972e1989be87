"""`x + bias` eagerly as one op with one backward node (#14, the LSTM step's gate biases): torch's
AddBackward0/SubBackward0 with no ExpandBackward0 below it; gradients, double backward,
hooks, retain_grad, checkpoint and the large-size path checked against torch."""
import numpy as np
import pytest

import tracejit as tj

torch = pytest.importorskip("torch")

SHAPES = [((4, 32), (32,)), ((32,), (4, 32)), ((4, 1), (1, 5)), ((3, 1, 5), (4, 1)),
          ((2, 3), (1,)), ((0, 3), (3,)), ((1, 1), (1,)), ((5, 1), (5, 7))]


def _pair(sa, sb, dtype, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal(sa).astype(dtype), rng.standard_normal(sb).astype(dtype)


def test_bias_add_is_one_node_on_the_leaves():
    x = tj.tensor(np.ones((4, 32), np.float32), requires_grad=True)
    b = tj.tensor(np.ones(32, np.float32), requires_grad=True)
    for op, name in ((lambda u, v: u + v, "AddBackward0"), (lambda u, v: u - v, "SubBackward0")):
        y = op(x, b)
        assert y.grad_fn.name() == name
        assert [type(n).__name__ for n, _ in y.grad_fn.next_functions] == \
            ["AccumulateGrad", "AccumulateGrad"]
        assert y.grad_fn.next_functions[1][0].variable is b


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("sa, sb", SHAPES, ids=repr)
@pytest.mark.parametrize("op", ["add", "sub"])
def test_values_and_gradients_match_torch(op, sa, sb, dtype):
    a, b = _pair(sa, sb, dtype)
    f = (lambda u, v: u + v) if op == "add" else (lambda u, v: u - v)
    res = []
    for lib in (tj, torch):
        x = lib.tensor(a, requires_grad=True)
        y = lib.tensor(b, requires_grad=True)
        z = f(x, y)
        w = lib.tensor(np.arange(z.numel(), dtype=dtype).reshape(tuple(z.shape)) % 5 - 2.0)
        (z * w).sum().backward()
        res.append((z.detach().numpy(), x.grad.numpy(), y.grad.numpy()))
    for got, want in zip(*res):
        assert got.shape == want.shape and got.dtype == want.dtype
        np.testing.assert_allclose(got, want, rtol=1e-6 if dtype == np.float32 else 1e-12)


@pytest.mark.parametrize("needs", [(True, False), (False, True)])
def test_one_operand_needing_grad(needs):
    a, b = _pair((4, 6), (6,), np.float64)
    x = tj.tensor(a, requires_grad=needs[0])
    y = tj.tensor(b, requires_grad=needs[1])
    (((x - y) ** 2).sum()).backward()
    t = x if needs[0] else y
    want = 2 * (a - b) if needs[0] else -2 * (a - b).sum(0)
    np.testing.assert_allclose(t.grad.numpy(), want, rtol=1e-12)
    assert (y if needs[0] else x).grad is None


def test_double_backward_matches_torch():
    a, b = _pair((3, 4), (4,), np.float64)
    res = []
    for lib in (tj, torch):
        x = lib.tensor(a, requires_grad=True)
        y = lib.tensor(b, requires_grad=True)
        z = ((x - y) ** 3).sum()
        gy, = (tj.autograd.grad if lib is tj else torch.autograd.grad)(z, (y,), create_graph=True)
        (gy * gy).sum().backward()
        res.append((gy.detach().numpy(), x.grad.numpy(), y.grad.numpy()))
    for got, want in zip(*res):
        np.testing.assert_allclose(got, want, rtol=1e-12)


def test_hooks_retain_grad_and_running_twice():
    a, b = _pair((2, 5), (5,), np.float32)
    res = []
    for lib in (tj, torch):
        x = lib.tensor(a, requires_grad=True)
        y = lib.tensor(b, requires_grad=True)
        z = x + y
        z.retain_grad()
        seen = []
        z.register_hook(lambda g: seen.append(g.numpy().copy()) or g * 2.0)
        z.sum().backward()
        z.sum().backward()          # saves nothing: it can run again, as torch's
        res.append((seen[0], seen[1], x.grad.numpy(), y.grad.numpy(), z.grad.numpy()))
    for got, want in zip(*res):
        np.testing.assert_array_equal(got, want)


def test_in_place_change_of_an_operand_afterwards_is_legal():
    x = tj.tensor(np.ones((3, 2)), requires_grad=True) * 1.0
    y = tj.tensor(np.ones(2), requires_grad=True)
    z = x + y
    x.mul_(5.0)                     # nothing saved: no version error, as torch
    z.sum().backward()
    np.testing.assert_array_equal(y.grad.numpy(), [3.0, 3.0])


def test_checkpoint_and_no_grad():
    a, b = _pair((4, 3), (3,), np.float64)
    x = tj.tensor(a, requires_grad=True)
    y = tj.tensor(b, requires_grad=True)
    out = tj.checkpoint(lambda u, v: tj.tanh(u + v), x, y, use_reentrant=False)
    out.sum().backward()
    np.testing.assert_allclose(y.grad.numpy(), (1 - np.tanh(a + b) ** 2).sum(0), rtol=1e-12)
    with tj.no_grad():
        z = x + y
    assert z.grad_fn is None and not z.requires_grad
    np.testing.assert_allclose(z.numpy(), a + b)


def test_large_and_mixed_dtypes_take_the_general_path():
    a, b = _pair((256, 128), (128,), np.float32)       # above MAX_ELEMENTS
    x = tj.tensor(a, requires_grad=True)
    y = tj.tensor(b, requires_grad=True)
    (x + y).sum().backward()
    np.testing.assert_allclose(y.grad.numpy(), np.full(128, 256.0), rtol=1e-6)
    z = tj.tensor(np.ones((2, 3), np.float32)) + tj.tensor(np.ones(3, np.float64))
    assert z.dtype == tj.float64
    i = tj.tensor(np.ones((2, 3), np.int64)) - tj.tensor(np.arange(3))
    np.testing.assert_array_equal(i.numpy(), 1 - np.arange(3)[None].repeat(2, 0))


def test_inside_compile_same_gradient():
    a, b = _pair((4, 3), (3,), np.float64)

    @tj.compile
    def f(u, v):
        return ((u - v) ** 2).sum()
    y = tj.tensor(b, requires_grad=True)
    f(tj.tensor(a), y).backward()
    np.testing.assert_allclose(y.grad.numpy(), -2 * (a - b).sum(0), rtol=1e-12)
