"""Grad mode inside and around a compiled call, against PyTorch eager: which results require
grad, their values, and the gradients a loss mixing them gets (no_grad, enable_grad,
set_grad_enabled, inference_mode, nested either way; a plain function, a compiled module with
a captured parameter, tj.grad of a compiled function)."""
import contextlib

import numpy as np
import pytest
import torch

import tracejit as tj

X = np.array([0.5, -1.25, 2.0])
W = np.array([1.5, 0.25, -0.75])


def _body(kind, T, x, w):
    """The same function for both libraries (T: tracejit or torch)."""
    if kind == "enable_inside":
        a = x * 2
        with T.enable_grad():
            b = x * w
        return a + b, b, a
    if kind == "no_grad_then_enable":
        with T.no_grad():
            a = x.exp()
        with T.enable_grad():
            b = a * w
            c = b.sin() + x
        return c, a
    if kind == "set_grad_enabled_true":
        with T.set_grad_enabled(True):
            b = x * w
        return b * 3, x + w
    if kind == "nested":
        with T.enable_grad():
            with T.no_grad():
                a = x * 3
            b = a * w + x
        return b, a * w
    if kind == "plain":
        return (x * w).tanh(), x.exp()
    if kind == "inference_inside":
        with T.inference_mode():
            a = x * 2
            with T.enable_grad():       # (records nothing inside inference_mode)
                c = x * w
        return a + w, c
    if kind == "set_false_inside":
        with T.set_grad_enabled(False):
            a = x * w
        with T.enable_grad():
            b = a * x
        return b, a + x
    raise AssertionError(kind)


KINDS = ["enable_inside", "no_grad_then_enable", "set_grad_enabled_true", "nested", "plain",
         "inference_inside", "set_false_inside"]


def _outer(kind, T):
    if kind == "none":
        return contextlib.nullcontext()
    if kind == "no_grad":
        return T.no_grad()
    if kind == "set_false":
        return T.set_grad_enabled(False)
    if kind == "inference":
        return T.inference_mode()
    if kind == "enable_in_no_grad":
        stack = contextlib.ExitStack()
        stack.enter_context(T.no_grad())
        stack.enter_context(T.enable_grad())
        return stack
    raise AssertionError(kind)


OUTERS = ["none", "no_grad", "set_false", "inference", "enable_in_no_grad"]


def _torch_run(kind, outer):
    x = torch.tensor(X, requires_grad=True)
    w = torch.tensor(W, requires_grad=True)
    with _outer(outer, torch):
        outs = _body(kind, torch, x, w)
    return x, w, outs


def _compare(outs, touts, x, w, tx, tw):
    assert [o.requires_grad for o in outs] == [o.requires_grad for o in touts]
    for o, t in zip(outs, touts):
        np.testing.assert_allclose(o.detach().numpy(), t.detach().numpy(), rtol=1e-12)
    live = [k for k, t in enumerate(touts) if t.requires_grad]
    if not live:
        return
    tloss = sum((touts[k] * (k + 2.0)).sum() for k in live)
    tloss.backward()
    loss = sum((outs[k] * (k + 2.0)).sum() for k in live)
    loss.backward()
    for a, b in ((x, tx), (w, tw)):
        if b.grad is None:
            assert a.grad is None or not np.any(a.grad.numpy())
        else:
            np.testing.assert_allclose(a.grad.numpy(), b.grad.numpy(), rtol=1e-12)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("outer", OUTERS)
def test_compiled_function_grad_modes_match_torch(kind, outer):
    f = tj.compile(lambda x, w: _body(kind, tj, x, w))
    # every mode in turn through one compiled function: its cache must not hand a trace made
    # for one grad mode to a caller in another
    for first in ("none", outer, "no_grad", outer):
        x = tj.tensor(X, requires_grad=True)
        w = tj.tensor(W, requires_grad=True)
        with _outer(first, tj):
            outs = f(x, w)
        tx, tw, touts = _torch_run(kind, first)
        _compare(outs, touts, x, w, tx, tw)


class _Scale(tj.nn.Module):
    def __init__(self, kind):
        super().__init__()
        self.kind = kind
        self.w = tj.nn.Parameter(tj.tensor(W))

    def forward(self, x):
        return _body(self.kind, tj, x, self.w)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("outer", ["none", "no_grad", "inference"])
def test_compiled_module_grad_modes_match_torch(kind, outer):
    m = _Scale(kind)
    cm = tj.compile(m)
    for first in (outer, "none", outer):
        m.w.grad = None
        x = tj.tensor(X, requires_grad=True)
        with _outer(first, tj):
            outs = cm(x)
        tx, tw, touts = _torch_run(kind, first)
        _compare(outs, touts, x, m.w, tx, tw)


def test_grad_of_compiled_function_ignores_outer_no_grad_as_torch_func():
    def f(T, x):
        with T.enable_grad():
            y = (x * x * x).sum()
        return y
    g = tj.grad(tj.compile(lambda x: f(tj, x)))
    tg = torch.func.grad(lambda x: f(torch, x))
    for outer in ("no_grad", "none", "no_grad"):
        x = tj.tensor(X, requires_grad=True)
        tx = torch.tensor(X, requires_grad=True)
        with _outer(outer, tj):
            r = g(x)
        with _outer(outer, torch):
            tr = tg(tx)
        assert r.requires_grad == tr.requires_grad
        np.testing.assert_allclose(r.detach().numpy(), tr.detach().numpy(), rtol=1e-12)
    assert g.cache_info().misses == 1       # one trace, whatever the caller's grad mode


def test_enable_grad_part_of_a_larger_loss_gets_its_gradient():
    """The README's case: the enable_grad part of a compiled call made under no_grad, mixed
    into a loss computed with grad on, gets its gradient (it was silently missing)."""
    @tj.compile
    def f(x, w):
        with tj.enable_grad():
            h = (x * w).tanh()
        return h, x * 2

    x = tj.tensor(X)
    w = tj.tensor(W, requires_grad=True)
    with tj.no_grad():
        h, d = f(x, w)
    loss = (h * 3).sum() + (w * w).sum() + d.sum()
    loss.backward()
    expect = 3 * X * (1 - np.tanh(X * W) ** 2) + 2 * W
    np.testing.assert_allclose(w.grad.numpy(), expect, rtol=1e-12)
    assert not d.requires_grad


def test_checkpoint_under_no_grad_inside_compiled_gets_no_gradient():
    """checkpoint inside the user's no_grad (inside a compiled function): its ops are
    constants to the compiled call's gradient, as eagerly (they were differentiated)."""
    def body(x, w):
        with tj.no_grad():
            a = tj.checkpoint(lambda t: (t * w).exp(), x, use_reentrant=False)
        return (a * w).sum()

    x = tj.tensor(X)
    w1 = tj.tensor(W, requires_grad=True)
    body(x, w1).backward()
    w2 = tj.tensor(W, requires_grad=True)
    tj.compile(body)(x, w2).backward()
    np.testing.assert_allclose(w2.grad.numpy(), w1.grad.numpy(), rtol=1e-12)
    np.testing.assert_allclose(w1.grad.numpy(), np.exp(X * W), rtol=1e-12)


def test_repeated_calls_with_plain_arrays_alternating_grad_mode():
    """Calls with NumPy arguments take the fast path (a cheaper cache key without grad mode):
    a function that turns grad on inside must still see each caller's grad mode."""
    w = tj.nn.Parameter(tj.tensor(W))

    @tj.compile
    def f(x):
        with tj.enable_grad():
            h = x * w
        return h, x * 2

    for mode in ("no_grad", "none", "no_grad", "no_grad", "none", "none", "no_grad"):
        w.grad = None
        with _outer(mode, tj):
            h, d = f(X)
        assert h.requires_grad and not d.requires_grad
        (h * 3).sum().backward()
        np.testing.assert_allclose(w.grad.numpy(), 3 * X, rtol=1e-12)
