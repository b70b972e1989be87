"""Gate slices and transposes of a tensor that requires grad, recorded on NumPy's view without
dispatching the primitive (#14, the LSTM step): one SliceBackward0/PermuteBackward0 node each,
as torch's, with torch's gradients, hooks, retain_grad, version counters, double backward,
checkpointing, no_grad and in-place behaviour."""
import numpy as np
import pytest

import tracejit as tj

torch = pytest.importorskip("torch")


def _pair(a, grad=True):
    return tj.tensor(a, requires_grad=grad), torch.tensor(a, requires_grad=grad)


KEYS = [(slice(None), slice(2, 5)), (slice(1, 3),), (slice(None), slice(None, None, 2)),
        (slice(None),), (slice(3, 1),), (slice(None), slice(5, None))]


@pytest.mark.parametrize("key", KEYS, ids=repr)
def test_slice_with_grad_dispatches_nothing_and_is_one_torch_node(key, applied_primitives):
    a = np.arange(20.0).reshape(4, 5)
    x, xt = _pair(a)
    y, yt = x[key], xt[key]
    assert applied_primitives == []
    # (torch names a tuple key of whole slices, x[:, :] or x[(slice(None),)], AliasBackward0)
    assert y.grad_fn.name() == yt.grad_fn.name()
    np.testing.assert_array_equal(y.detach().numpy(), yt.detach().numpy())
    assert y.shape == tuple(yt.shape) and y.dtype == x.dtype
    assert y._version == x._version
    w = np.linspace(-1.0, 1.0, max(yt.numel(), 1))[:yt.numel()].reshape(yt.shape)
    (y * tj.tensor(w)).sum().backward()
    (yt * torch.tensor(w)).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), xt.grad.numpy())


def test_transposes_with_grad_are_torch_nodes(applied_primitives):
    a = np.arange(6.0, dtype=np.float32).reshape(2, 3)
    x, xt = _pair(a)
    b = np.arange(24.0, dtype=np.float32).reshape(2, 3, 4)
    z, zt = _pair(b)
    pairs = [(x.T, xt.T), (x.t(), xt.t()), (x.mT, xt.mT), (z.mT, zt.mT), (z.T, zt.permute(2, 1, 0))]
    assert applied_primitives == []
    for y, yt in pairs:
        np.testing.assert_array_equal(y.detach().numpy(), yt.detach().numpy())
        assert y.grad_fn.name() == yt.grad_fn.name()    # Permute, T, Transpose
    sum(((y * y).sum() for y, _ in pairs), tj.tensor(0.0)).backward()
    sum(((yt * yt).sum() for _, yt in pairs), torch.tensor(0.0)).backward()
    np.testing.assert_allclose(x.grad.numpy(), xt.grad.numpy())
    np.testing.assert_allclose(z.grad.numpy(), zt.grad.numpy())


def test_lstm_gates_hooks_retain_grad_and_pieces_used_twice():
    rng = np.random.default_rng(1)
    a, w = rng.standard_normal((3, 4)), rng.standard_normal((8, 4))
    res = []
    for lib, mk in ((tj, tj.tensor), (torch, torch.tensor)):
        x, W = mk(a), mk(w, requires_grad=True)
        g = x @ W.T
        i, f, c, o = g[:, :2], g[:, 2:4], g[:, 4:6], g[:, 6:]
        seen = []
        f.register_hook(lambda gr: seen.append(gr.numpy().copy()) or gr * 2.0)
        i.retain_grad()
        y = (lib.sigmoid(i) * lib.tanh(c) + f * o + i * i).sum()
        y.backward()
        res.append((W.grad.numpy().copy(), i.grad.numpy().copy(), seen[0]))
    for got, want in zip(*res):
        np.testing.assert_allclose(got, want, rtol=1e-12)


def test_double_backward_through_slices_and_transposes():
    a = np.array([[0.3, -1.2, 0.5], [2.0, 0.1, -0.7]])
    res = []
    for lib, mk in ((tj, tj.tensor), (torch, torch.tensor)):
        x = mk(a, requires_grad=True)
        y = (x.T[1:, :] ** 3).sum() + (x[:, :2] * x[:, 1:]).sum()
        (gx,) = (tj.autograd.grad if lib is tj else torch.autograd.grad)(y, x, create_graph=True)
        (gx * gx).sum().backward()
        res.append((gx.detach().numpy().copy(), x.grad.numpy().copy()))
    for got, want in zip(*res):
        np.testing.assert_allclose(got, want, rtol=1e-12)


def test_in_place_after_a_slice_is_saved_is_detected_and_writes_through():
    x = tj.tensor(np.ones((2, 4)), requires_grad=True)
    h = x * 1.0
    s = h[:, 1:3]
    y = (s * s).sum()                 # mul saves s
    h.add_(1.0)                       # bumps s's version (a view of h)
    assert s._version == h._version
    np.testing.assert_array_equal(s.detach().numpy(), np.full((2, 2), 2.0))
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.backward()
    # in place on the piece itself writes into its base, and the gradient follows torch's
    res = []
    for lib, mk in ((tj, tj.tensor), (torch, torch.tensor)):
        x = mk(np.arange(8.0).reshape(2, 4), requires_grad=True)
        h = x * 1.0
        s = h[:, 1:3]
        s.mul_(3.0)
        (h * h).sum().backward()
        res.append((h.detach().numpy().copy(), x.grad.numpy().copy()))
    for got, want in zip(*res):
        np.testing.assert_allclose(got, want)


def test_no_grad_and_checkpoint_and_compile():
    x = tj.tensor(np.arange(12.0).reshape(3, 4), requires_grad=True)
    with tj.no_grad():
        y = x[:, 1:]
        t = x.T
    # (torch: a view made under no_grad of a base that requires grad requires grad, no history)
    assert y.grad_fn is None and y.requires_grad and t.grad_fn is None and y.is_leaf

    def f(v):
        return (v[:, 1:3] * v.T[1:3, :].T).sum()
    xc = tj.tensor(np.arange(12.0).reshape(3, 4), requires_grad=True)
    tj.checkpoint(f, xc).backward()
    xt = torch.tensor(np.arange(12.0).reshape(3, 4), requires_grad=True)
    (xt[:, 1:3] * xt.T[1:3, :].T).sum().backward()
    np.testing.assert_allclose(xc.grad.numpy(), xt.grad.numpy())
    g = tj.compile(tj.grad(f))(tj.tensor(np.arange(12.0).reshape(3, 4)))
    np.testing.assert_allclose(g.numpy(), xt.grad.numpy())
