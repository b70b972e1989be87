"""Reverse mode through forward_ad dual tensors (#15): backward() and autograd.grad of
results computed from duals give gradients that carry tangents, exactly where PyTorch's
forward_ad does (forward over reverse without create_graph), and drop them where it does."""
from __future__ import annotations

import numpy as np
import pytest

import tracejit as tj

torch = pytest.importorskip("torch")
import torch.autograd.forward_ad as tfw  # noqa: E402

fwAD = tj.autograd.forward_ad
X = np.array([0.3, -1.2, 2.0, 0.7])
T = np.array([1.0, 0.5, -0.25, 2.0])


def _np(t):
    return None if t is None else t.detach().numpy()


def close(a, b, tol=1e-10):
    assert (a is None) == (b is None), (a, b)
    if a is not None:
        np.testing.assert_allclose(_np(a), _np(b), rtol=tol, atol=tol)


def f(lib, d):
    return (lib.sin(d) * d + lib.exp(d * 0.5) * d * d).sum()


def _both(run):
    """run(lib, fw, x, t) under a dual level of each library: (tracejit's, torch's) results."""
    out = []
    for lib, fw in ((tj, fwAD), (torch, tfw)):
        x = lib.tensor(X, requires_grad=True)
        t = lib.tensor(T)
        with fw.dual_level():
            out.append(run(lib, fw, x, t))
    return out


def test_autograd_grad_of_a_dual_result_carries_the_tangent():
    """Without create_graph: the gradient's tangent is the Hessian-vector product."""
    def run(lib, fw, x, t):
        d = fw.make_dual(x, t)
        (g,) = lib.autograd.grad(f(lib, d), x)
        return g, fw.unpack_dual(g).tangent
    (g, gt), (want_g, want_t) = _both(run)
    close(g, want_g)
    assert gt is not None
    close(gt, want_t)
    # the closed form: the Hessian of f is diagonal
    h = -np.sin(X) * X + 2 * np.cos(X) + np.exp(X / 2) * (X * X / 4 + 2 * X + 2)
    np.testing.assert_allclose(gt.numpy(), h * T, rtol=1e-10)


def test_gradient_with_respect_to_the_dual_itself():
    def run(lib, fw, x, t):
        d = fw.make_dual(x, t)
        (g,) = lib.autograd.grad((d * d * d).sum(), d)
        return fw.unpack_dual(g).tangent
    got, want = _both(run)
    close(got, want)


def test_backward_fills_grad_as_torch_does():
    """.backward() without create_graph: a fresh .grad has no tangent (PyTorch detaches it);
    the second backward adds in place, so .grad then takes the new gradient's tangent; hooks
    and retain_grad see the tangents."""
    def run(lib, fw, x, t):
        seen = []
        d = fw.make_dual(x, t)
        y = lib.sin(d) * d
        y.retain_grad()
        y.register_hook(lambda g: seen.append(fw.unpack_dual(g).tangent))
        z = (y * y).sum()
        z.backward(retain_graph=True)
        first = fw.unpack_dual(x.grad).tangent
        ytan = fw.unpack_dual(y.grad).tangent
        z.backward()
        return first, ytan, seen[0], x.grad, fw.unpack_dual(x.grad).tangent
    got, want = _both(run)
    assert got[0] is None and want[0] is None
    for a, b in zip(got[1:], want[1:]):
        close(a, b)


def test_backward_with_create_graph_keeps_the_tangent():
    def run(lib, fw, x, t):
        d = fw.make_dual(x, t)
        f(lib, d).backward(create_graph=True)
        return x.grad, fw.unpack_dual(x.grad).tangent
    got, want = _both(run)
    close(got[0], want[0])
    close(got[1], want[1])


def test_no_open_level_keeps_the_lean_backward():
    x = tj.tensor(X, requires_grad=True)
    f(tj, x).backward()
    tx = torch.tensor(X, requires_grad=True)
    f(torch, tx).backward()
    close(x.grad, tx.grad)


def _composites(lib):
    F = lib.nn.functional
    labels = lib.tensor(np.array([0, 2, 4]))
    return {"softmax": lambda x: (lib.softmax(x, -1) ** 2).sum(),
            "log_softmax": lambda x: (lib.log_softmax(x, -1) ** 2).sum(),
            "layer_norm": lambda x: (F.layer_norm(x, (5,)) ** 3).sum(),
            "gelu": lambda x: (F.gelu(x) ** 2).sum(),
            "cross_entropy": lambda x: F.cross_entropy(x, labels),
            "logsumexp": lambda x: lib.logsumexp(x, -1).sum()}


@pytest.mark.parametrize("name", ["softmax", "log_softmax", "layer_norm", "gelu",
                                  "cross_entropy", "logsumexp"])
def test_hessian_vector_products_through_composites(name):
    """Composites run as nodes of their own in the eager engine: their backward carries the
    tangents too (forward over reverse: the gradient's tangent is H t)."""
    xs = np.random.default_rng(0).standard_normal((3, 5))
    ts = np.random.default_rng(1).standard_normal((3, 5))
    out = []
    for lib, fw in ((tj, fwAD), (torch, tfw)):
        x = lib.tensor(xs, requires_grad=True)
        with fw.dual_level():
            d = fw.make_dual(x, lib.tensor(ts))
            (g,) = lib.autograd.grad(_composites(lib)[name](d), x)
            out.append(fw.unpack_dual(g).tangent)
    close(out[0], out[1])
