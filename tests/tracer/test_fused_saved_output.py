"""A fused composite whose node keeps its OUTPUT (sigmoid and relu: `composite(..., out_vjp=)`,
as torch's SigmoidBackward0 and ReluBackward0 keep their results): values and gradients against torch in both tiers,
the output changed in place before backward is an error as in torch (it was allowed), the input
changed in place is legal, double backward through the saved output, 16-bit floats, the fake
GPU, and the saved output freed after backward."""
import gc
import weakref

import numpy as np
import pytest

import tracejit as tj
from tracejit.tracer import fused

torch = pytest.importorskip("torch")


def _pair(xv):
    return tj.tensor(xv, requires_grad=True), torch.tensor(xv, requires_grad=True)


def test_node_keeps_the_output_not_the_input(tier):
    xv = np.random.default_rng(0).standard_normal((4, 8))
    for _ in range(3):                  # (the compiled tier compiles on the first call)
        x = tj.tensor(xv, requires_grad=True)
        y = tj.sigmoid(x)
        node = y.grad_fn
        assert node.name() == "SigmoidBackward0"
        assert len(node.residuals) == 1 and node.residuals[0] is y._data
        assert -1 in node.checked           # the output's version is checked at backward


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_values_and_gradient_match_torch(dtype, tier):
    rng = np.random.default_rng(1)
    for shape in [(4, 8), (0, 3), (1,), (), (7, 5)]:
        for _ in range(2):
            xv = rng.standard_normal(shape).astype(dtype) * 4
            gv = rng.standard_normal(shape).astype(dtype)
            x, tx = _pair(xv)
            y, ty = tj.sigmoid(x), torch.sigmoid(tx)
            y.backward(tj.tensor(gv))
            ty.backward(torch.tensor(gv))
            tol = 1e-6 if dtype == np.float32 else 1e-14
            np.testing.assert_allclose(y.detach().numpy(), ty.detach().numpy(), rtol=tol,
                                       atol=tol)
            np.testing.assert_allclose(x.grad.numpy(), tx.grad.numpy(), rtol=tol, atol=tol)


@pytest.mark.parametrize("how", ["no_grad", "detach"])
def test_output_changed_in_place_before_backward_raises_as_torch(how, tier):
    """torch's node keeps sigmoid's result, so changing it in place is an error at backward.
    (The node used to keep the input, and this passed silently with the old gradient.)"""
    xv = np.random.default_rng(2).standard_normal((3, 4))
    for _ in range(3):
        for lib, (x, t) in (("tj", (tj.tensor(xv, requires_grad=True), tj)),
                            ("torch", (torch.tensor(xv, requires_grad=True), torch))):
            y = t.sigmoid(x)
            if how == "no_grad":
                with t.no_grad():
                    y.mul_(2.0)
            else:
                y.detach().add_(1.0)        # (detach shares the version counter)
            with pytest.raises(RuntimeError, match="modified by an inplace operation"):
                y.sum().backward()


def test_output_read_by_a_later_op_then_changed_raises(tier):
    """The same through a use of the output: y * 2 records first, then y changes."""
    xv = np.random.default_rng(3).standard_normal((2, 5))
    x, tx = _pair(xv)
    for y, lib in ((tj.sigmoid(x), tj), (torch.sigmoid(tx), torch)):
        z = y * 2.0
        with lib.no_grad():
            y.zero_()
        with pytest.raises(RuntimeError, match="modified by an inplace operation"):
            z.sum().backward()


def test_input_changed_in_place_after_the_call_is_legal(tier):
    xv = np.random.default_rng(4).standard_normal((3, 4))
    for _ in range(3):
        x, tx = _pair(xv)
        h, th = x * 1.0, tx * 1.0
        y, ty = tj.sigmoid(h), torch.sigmoid(th)
        h.mul_(3.0)
        th.mul_(3.0)
        y.backward(tj.ones_like(y))
        ty.backward(torch.ones_like(ty))
        np.testing.assert_allclose(x.grad.numpy(), tx.grad.numpy(), rtol=1e-12)


def test_double_and_triple_backward_through_the_saved_output(tier):
    xv = np.random.default_rng(5).standard_normal(6)
    for _ in range(3):
        x, tx = _pair(xv)
        got, want = [], []
        for lib, v, out in ((tj, x, got), (torch, tx, want)):
            y = lib.sigmoid(v)
            g1, = lib.autograd.grad((y * y).sum(), [v], create_graph=True)
            g2, = lib.autograd.grad((g1 * g1).sum(), [v], create_graph=True)
            g2.sum().backward()
            out += [g1.detach().numpy(), g2.detach().numpy(), v.grad.numpy()]
        for a, b in zip(got, want):
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


def test_double_backward_after_the_input_changed_in_place(tier):
    """create_graph reads the saved output, not the input: an input changed after the call
    is legal here too, as in torch (recomputing from the input raised)."""
    xv = np.random.default_rng(6).standard_normal(5)
    x, tx = _pair(xv)
    res = []
    for lib, v in ((tj, x), (torch, tx)):
        h = v * 1.0
        y = lib.sigmoid(h)
        h.mul_(2.0)
        g, = lib.autograd.grad(y.sum(), [v], create_graph=True)
        g.sum().backward()
        res += [g.detach().numpy(), v.grad.numpy()]
    np.testing.assert_allclose(res[0], res[2], rtol=1e-12)
    np.testing.assert_allclose(res[1], res[3], rtol=1e-12)


def test_output_changed_then_double_backward_raises(tier):
    x = tj.tensor(np.linspace(-1, 1, 4), requires_grad=True)
    y = tj.sigmoid(x)
    with tj.no_grad():
        y.add_(1.0)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        tj.autograd.grad(y.sum(), [x], create_graph=True)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_16_bit_gradient_computed_in_float32_as_torch(dtype, tier):
    """torch's sigmoid_backward on 16-bit floats computes g (1 - y) y in float32 and rounds
    once; so does the out_vjp."""
    xv = np.random.default_rng(7).standard_normal((4, 8)) * 3
    gv = np.random.default_rng(8).standard_normal((4, 8))
    tdt = getattr(torch, dtype)
    for _ in range(3):
        x = tj.tensor(xv, requires_grad=True, dtype=dtype)
        tx = torch.tensor(xv, dtype=tdt, requires_grad=True)
        y, ty = tj.sigmoid(x), torch.sigmoid(tx)
        y.backward(tj.tensor(gv, dtype=dtype))
        ty.backward(torch.tensor(gv, dtype=tdt))
        assert x.grad.dtype == y.dtype
        got = x.grad.float().numpy()
        want = tx.grad.float().numpy()
        np.testing.assert_allclose(got, want, rtol=1e-2 if dtype == "bfloat16" else 1e-3,
                                   atol=1e-3)


def test_hooks_and_retain_grad_on_the_output(tier):
    xv = np.random.default_rng(9).standard_normal((2, 3))
    for _ in range(2):
        x, tx = _pair(xv)
        seen = []
        out = []
        for lib, v in ((tj, x), (torch, tx)):
            y = lib.sigmoid(v)
            y.retain_grad()
            y.register_hook(lambda g: g * 3)
            (y * y).sum().backward()
            out += [y.grad.numpy(), v.grad.numpy()]
        np.testing.assert_allclose(out[0], out[2], rtol=1e-12)
        np.testing.assert_allclose(out[1], out[3], rtol=1e-12)


def test_saved_output_is_freed_after_backward(tier, no_gc):
    x = tj.tensor(np.ones((3, 3)), requires_grad=True)
    for _ in range(3):
        y = tj.sigmoid(x)
        node = y.grad_fn
        ref = weakref.ref(y)
        (y * 2.0).sum().backward()
        assert node.residuals is None
        del y
        assert ref() is None


def test_fake_gpu_saved_output(fake_gpu):
    fused.clear()
    xv = np.random.default_rng(10).standard_normal((3, 4))
    x = tj.tensor(xv, requires_grad=True, device="cuda")
    y = tj.sigmoid(x)
    assert y.grad_fn.residuals[0] is y._data
    y.backward(tj.ones_like(y))
    s = 1 / (1 + np.exp(-xv))
    np.testing.assert_allclose(x.grad.cpu().numpy(), s * (1 - s), rtol=1e-12)
    x2 = tj.tensor(xv, requires_grad=True, device="cuda")
    y2 = tj.sigmoid(x2)
    with tj.no_grad():
        y2.mul_(2.0)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y2.sum().backward()
    fused.clear()


@pytest.mark.gpu
@pytest.mark.skipif(not tj.cuda_available(), reason="needs an NVIDIA GPU and CuPy")
def test_real_gpu_saved_output():
    xv = np.random.default_rng(11).standard_normal((64, 33))
    x = tj.tensor(xv, requires_grad=True, device="cuda")
    for _ in range(3):
        x.grad = None
        y = tj.sigmoid(x)
        y.backward(tj.ones_like(y))
    s = 1 / (1 + np.exp(-xv))
    np.testing.assert_allclose(x.grad.cpu().numpy(), s * (1 - s), rtol=1e-12)
    gc.collect()


def test_relu_keeps_its_output_as_torch(tier):
    """relu's node keeps its result (torch's threshold_backward on it): the gradient at 0, -0.0
    and NaN as torch's, the output changed in place raises, the input changed is legal,
    in-place relu and double backward agree."""
    xv = np.array([[-1.0, 0.0, 2.0, np.nan], [3.0, -0.0, -5.0, 0.5]])
    gv = np.arange(8.0).reshape(2, 4)
    for _ in range(3):
        x, tx = _pair(xv)
        y, ty = tj.relu(x), torch.relu(tx)
        assert y.grad_fn.residuals[0] is y._data
        y.backward(tj.tensor(gv))
        ty.backward(torch.tensor(gv))
        np.testing.assert_array_equal(x.grad.numpy(), tx.grad.numpy())
        for lib, v in ((tj, _pair(xv)[0]), (torch, _pair(xv)[1])):
            y = lib.relu(v * 1.0)
            with lib.no_grad():
                y.mul_(2.0)
            with pytest.raises(RuntimeError, match="modified by an inplace operation"):
                y.sum().backward()
        res = []
        for lib, F, v in ((tj, tj.nn.functional, _pair(xv[:, :3])[0]),
                          (torch, torch.nn.functional, _pair(xv[:, :3])[1])):
            h = v * 2.0
            y = F.relu(h, inplace=True)
            (y * y).sum().backward()
            g, = lib.autograd.grad((lib.relu(v) ** 2).sum(), [v], create_graph=True)
            res += [v.grad.numpy().copy(), g.detach().numpy()]
        for a, b in zip(res[:2], res[2:]):
            np.testing.assert_array_equal(a, b)
