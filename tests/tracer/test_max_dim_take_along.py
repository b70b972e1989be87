"""max(x, dim) / min(x, dim) values read with the take_along primitive (tracer/selection.py):
the gradient is a select against the argmax along dim, fused into one loop; the compiled
gradient has no zero-filled scatter buffer, no transpose back and no run-time bounds check
(argmax's result is in range by construction). Values and gradients against torch 2.13."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import tracejit as tj


def _torch(x, fn, d, keepdim, g):
    xt = torch.tensor(x, requires_grad=True)
    v, i = getattr(torch, fn)(xt, d, keepdim=keepdim)
    v.backward(torch.tensor(g))
    return v.detach().numpy(), i.numpy(), xt.grad.numpy()


@pytest.mark.parametrize("fn", ["max", "min"])
@pytest.mark.parametrize("d", [0, 1, 2, -1])
@pytest.mark.parametrize("keepdim", [False, True])
def test_values_indices_and_grad_match_torch(fn, d, keepdim):
    rng = np.random.default_rng(5)
    x = rng.integers(-2, 3, (3, 4, 5)).astype(np.float64)     # many ties: the first one wins
    x[1, 2, 3] = np.nan
    g = rng.standard_normal(getattr(torch, fn)(torch.tensor(x), d, keepdim=keepdim)[0].shape)
    vt, it, gt = _torch(x, fn, d, keepdim, g)

    def loss(x):
        return (getattr(tj, fn)(x, d, keepdim=keepdim).values * tj.tensor(g)).sum()

    xe = tj.tensor(x, requires_grad=True)
    r = getattr(tj, fn)(xe, d, keepdim=keepdim)
    np.testing.assert_array_equal(r.values.detach().numpy(), vt)
    np.testing.assert_array_equal(r.indices.numpy(), it)
    (r.values * tj.tensor(g)).sum().backward()
    np.testing.assert_array_equal(xe.grad.numpy(), gt)
    np.testing.assert_array_equal(tj.compile(tj.grad(loss))(x).numpy(), gt)


def test_non_contiguous_input_and_sizes_one():
    rng = np.random.default_rng(6)
    base = rng.standard_normal((5, 4, 3))
    g = rng.standard_normal((3, 5))

    def loss(b):
        return (tj.max(b.permute(2, 0, 1), 2).values * tj.tensor(g)).sum()

    _, _, gt = _torch(base.transpose(2, 0, 1), "max", 2, False, g)
    np.testing.assert_array_equal(tj.compile(tj.grad(loss))(base).numpy(), gt.transpose(1, 2, 0))
    np.testing.assert_array_equal(tj.grad(loss)(tj.tensor(base)).numpy(),
                                  gt.transpose(1, 2, 0))
    one = np.array([[2.5]])
    for d in (0, 1):
        got = tj.compile(tj.grad(lambda x: tj.max(x, d).values.sum()))(one)
        np.testing.assert_array_equal(got.numpy(), [[1.0]])


def test_compiled_grad_is_a_select_not_a_scatter():
    x = np.random.default_rng(7).standard_normal((6, 8, 5))
    lowered = tj.compile(tj.grad(lambda x: tj.max(x, 1).values.sum())).lower(x)
    text = str(lowered.graph)
    assert "scatter_add" not in text and "gather" not in text, text
    assert "take_along" in text, text
    # one output: the gradient; no folded index check (argmax is in range by construction)
    assert len(lowered.graph.outputs) == 1, text


def test_second_derivative_and_vmap():
    rng = np.random.default_rng(8)
    x = rng.standard_normal((4, 6))
    # d/dx of sum(max(x, 1) ** 2) is 2 * max at the argmax; its derivative 2 there
    xt = torch.tensor(x, requires_grad=True)
    (gt,) = torch.autograd.grad((torch.max(xt, 1).values ** 3).sum(), xt, create_graph=True)
    (hv,) = torch.autograd.grad(gt.sum(), xt)
    xe = tj.tensor(x, requires_grad=True)
    (ge,) = tj.autograd.grad((tj.max(xe, 1).values ** 3).sum(), xe, create_graph=True)
    (he,) = tj.autograd.grad(ge.sum(), xe)
    np.testing.assert_allclose(ge.detach().numpy(), gt.detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(he.numpy(), hv.numpy(), rtol=1e-12)
    batched = tj.vmap(tj.grad(lambda r: tj.max(r, 0).values))(tj.tensor(x))
    want = np.zeros_like(x)
    want[np.arange(4), x.argmax(1)] = 1.0
    np.testing.assert_array_equal(batched.numpy(), want)


def test_eager_on_the_device_matches_the_cpu(fake_gpu):
    import fakecupy
    x = np.random.default_rng(9).standard_normal((4, 6, 3))
    g = np.random.default_rng(10).standard_normal((4, 3))
    grads = []
    for device in ("cpu", "cuda"):
        xe = tj.tensor(x, device=device, requires_grad=True)
        r = tj.max(xe, 1)
        (r.values * tj.tensor(g, device=device)).sum().backward()
        grads.append(xe.grad)
        np.testing.assert_array_equal(r.indices.cpu().numpy(), x.argmax(1))
    assert isinstance(grads[1]._data, fakecupy.ndarray)
    np.testing.assert_array_equal(grads[1].cpu().numpy(), grads[0].numpy())


@pytest.mark.gpu
@pytest.mark.skipif(not tj.cuda_available(), reason="needs an NVIDIA GPU and CuPy")
def test_compiled_grad_on_the_gpu_matches_torch():
    rng = np.random.default_rng(11)
    x = rng.standard_normal((8, 33, 5))
    g = rng.standard_normal((8, 5))
    _, _, gt = _torch(x, "max", 1, False, g)
    fn = tj.compile(tj.grad(lambda x, g: (tj.max(x, 1).values * g).sum()))
    got = fn(tj.tensor(x, device="cuda"), tj.tensor(g, device="cuda"))
    np.testing.assert_array_equal(got.cpu().numpy(), gt)
