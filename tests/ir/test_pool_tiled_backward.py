"""The adjoint of `windows` when the windows tile the plane (stride == window, no dilation: a
2x2 pool of stride 2, a patchify convolution) is a transpose back (zero-padded at an uncovered
edge), not a sum of kH*kW padded views: the graph, and gradients against torch, eager and
compiled, for max/avg pooling (uneven edges, padding, ceil_mode) and a stride==kernel conv."""
import re

import numpy as np
import pytest
import torch

import tracejit as tj

F = tj.nn.functional
TF = torch.nn.functional

POOLS = [("max_pool2d", dict(kernel_size=2)), ("max_pool2d", dict(kernel_size=3)),
         ("max_pool2d", dict(kernel_size=2, padding=1)),
         ("max_pool2d", dict(kernel_size=2, ceil_mode=True)),
         ("max_pool2d", dict(kernel_size=(2, 3), stride=(2, 3))),
         ("avg_pool2d", dict(kernel_size=2)), ("avg_pool2d", dict(kernel_size=3)),
         ("avg_pool2d", dict(kernel_size=2, padding=1, count_include_pad=False)),
         ("avg_pool2d", dict(kernel_size=2, ceil_mode=True))]


def _grad(lib, fn, x, gout, compiled):
    if lib is torch:
        t = torch.tensor(x, requires_grad=True)
        (fn(t) * torch.tensor(gout)).sum().backward()
        return t.grad.numpy()
    t = tj.tensor(x, requires_grad=True)

    def f(g):
        (fn(t) * g).sum().backward()
        return t.grad

    return (tj.compile(f) if compiled else f)(tj.tensor(gout)).numpy()


@pytest.mark.parametrize("hw", [(8, 8), (7, 9), (1, 2)])
@pytest.mark.parametrize("op,kw", POOLS, ids=[f"{o}-{k}" for o, k in POOLS])
def test_pool_grads_vs_torch(op, kw, hw):
    rs = np.random.RandomState(0)
    x = rs.randn(2, 3, *hw).astype(np.float32)
    try:
        want_out = getattr(TF, op)(torch.tensor(x), **kw)
    except RuntimeError:           # torch rejects the geometry (window larger than the input)
        with pytest.raises((RuntimeError, ValueError)):
            getattr(F, op)(tj.tensor(x), **kw)
        return
    gout = rs.randn(*want_out.shape).astype(np.float32)
    want = _grad(torch, lambda t: getattr(TF, op)(t, **kw), x, gout, False)
    for compiled in (False, True):
        got = _grad(tj, lambda t: getattr(F, op)(t, **kw), x, gout, compiled)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("hw", [(8, 8), (9, 10)])
def test_patchify_conv_grads_vs_torch(hw):
    rs = np.random.RandomState(1)
    x = rs.randn(2, 3, *hw).astype(np.float32)
    w = rs.randn(4, 3, 2, 2).astype(np.float32)
    tx, tw = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)
    out = TF.conv2d(tx, tw, stride=2)
    gout = rs.randn(*out.shape).astype(np.float32)
    (out * torch.tensor(gout)).sum().backward()
    for compiled in (False, True):
        jx, jw = tj.tensor(x, requires_grad=True), tj.tensor(w, requires_grad=True)

        def f(g):
            (F.conv2d(jx, jw, stride=2) * g).sum().backward()
            return jx.grad, jw.grad

        gx, gw = (tj.compile(f) if compiled else f)(tj.tensor(gout))
        np.testing.assert_allclose(gx.numpy(), tx.grad.numpy(), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(gw.numpy(), tw.grad.numpy(), rtol=1e-4, atol=1e-5)


def test_tiled_pool_backward_has_no_padded_views():
    x = tj.tensor(np.random.RandomState(2).randn(2, 3, 8, 8).astype(np.float32),
                  requires_grad=True)

    @tj.compile
    def f(g):
        (F.max_pool2d(x, 2) * g).sum().backward()
        return x.grad

    text = f.lower(tj.ones(2, 3, 4, 4)).as_text()
    assert not re.search(r"= pad ", text)
