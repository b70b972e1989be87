"""In-place ops and indexing corners the eager fuzzer found differing from torch: overwrites
of a tensor that requires grad (zero_/fill_/copy_), an in-place op whose other operand alone
requires grad, a detached tensor's view written with a value that has history, empty list and
0-d boolean indices; and a captured parameter updated under no_grad inside a compiled
function, then read again."""
import numpy as np
import pytest
import torch

import tracejit as tj

A = np.array([[0.5, -1.0, 2.0], [1.5, 3.0, -0.25]])
B = np.array([1.25, -0.5, 2.0])


def _both(fn):
    """fn(T) for tracejit and torch."""
    return fn(tj), fn(torch)


def _np(t):
    return t.detach().numpy()


@pytest.mark.parametrize("op", ["zero_", "fill_", "copy_", "copy_same"])
def test_overwrite_keeps_requires_grad_and_gives_zero_gradient(op):
    def run(T):
        x = T.tensor(A, requires_grad=True)
        y = (x * 2).clone()
        if op == "zero_":
            y.zero_()
        elif op == "fill_":
            y.fill_(3.0)
        elif op == "copy_":
            y.copy_(T.tensor(B))
        else:
            y.copy_(T.tensor(A + 1))
        loss = (y * y).sum() + x.sum()
        loss.backward()
        return y.requires_grad, y.grad_fn is not None, _np(y), _np(x.grad)
    (r, g, v, gx), (tr, tg, tv, tgx) = _both(run)
    assert (r, g) == (tr, tg) == (True, True)
    np.testing.assert_array_equal(v, tv)
    np.testing.assert_array_equal(gx, tgx)


def test_overwrite_only_path_gives_zeros_not_none():
    def run(T):
        x = T.tensor(A, requires_grad=True)
        y = x.sin()             # (saves x, not its output, which zero_ overwrites)
        y.zero_()
        y.sum().backward()
        return _np(x.grad)
    a, b = _both(run)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, np.zeros_like(A))


@pytest.mark.parametrize("op", ["mul_", "div_", "pow_"])
def test_inplace_with_only_the_other_operand_requiring_grad(op):
    def run(T):
        b = T.tensor(B, requires_grad=True)
        t = T.tensor(A + 3.0)
        getattr(t, op)(b)
        (t * T.tensor(A)).sum().backward()
        return _np(t), _np(b.grad)
    (v, g), (tv, tg) = _both(run)
    np.testing.assert_allclose(v, tv, rtol=1e-13)
    np.testing.assert_allclose(g, tg, rtol=1e-13)


def test_inplace_on_a_view_with_only_the_other_operand_requiring_grad():
    def run(T):
        b = T.tensor(B, requires_grad=True)
        t = T.tensor(A + 3.0)
        t[1].mul_(b)
        (t * t).sum().backward()
        return _np(t), _np(b.grad)
    (v, g), (tv, tg) = _both(run)
    np.testing.assert_allclose(v, tv, rtol=1e-13)
    np.testing.assert_allclose(g, tg, rtol=1e-13)


def test_view_of_detached_tensor_gives_the_detached_tensor_history():
    def run(T):
        x = T.tensor(np.eye(3) * 2.0, requires_grad=True)
        b = T.tensor(B, requires_grad=True)
        d = x.detach()
        v = d.diagonal()
        v.add_(b)
        flags = (v.requires_grad, d.requires_grad, x.requires_grad)
        (d * T.tensor(np.arange(9.0).reshape(3, 3))).sum().backward()
        return flags, _np(d), _np(b.grad), x.grad
    (f, d, g, xg), (tf, td, tgb, txg) = _both(run)
    assert f == tf == (True, True, True)
    np.testing.assert_array_equal(d, td)
    np.testing.assert_array_equal(g, tgb)
    assert xg is None and txg is None


def test_empty_list_index():
    (a, b) = _both(lambda T: T.tensor(A)[[]])
    assert tuple(a.shape) == tuple(b.shape) == (0, 3)
    assert a.dtype.name == "f64"


@pytest.mark.parametrize("value", [1.5, -2.0])
def test_boolean_mask_on_a_zero_dim_tensor(value):
    def run(T):
        s = T.tensor(value, requires_grad=True, dtype=T.float64)
        y = s[s > 0]
        z = T.tensor(A)[T.tensor(value > 0)]
        (y * 3).sum().backward()
        return tuple(y.shape), _np(y), tuple(z.shape), _np(s.grad)
    (sh, v, zs, g), (tsh, tv, tzs, tg) = _both(run)
    assert (sh, zs) == (tsh, tzs)
    np.testing.assert_array_equal(v, tv)
    np.testing.assert_array_equal(g, tg)


def test_python_bool_index():
    for key in (True, False):
        a, b = _both(lambda T: T.tensor(A)[key])
        assert tuple(a.shape) == tuple(b.shape)
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_compiled_parameter_updated_under_no_grad_then_read_again():
    """torch computes this (the first product saved only x); tracejit raised a version error:
    the gradient reaches the parameter through both reads."""
    def run(T, compile_):
        p = T.nn.Parameter(T.tensor(B))
        x = T.tensor(A)

        def f(x):
            y = (p * x).sum()
            with T.no_grad():
                p.mul_(0.5)
            return y + (p * x * p).sum()
        out = (compile_(f) if compile_ else f)(x)
        out.backward()
        return out.item(), _np(p.grad), _np(p)
    got = run(tj, tj.compile)
    want = run(torch, None)
    np.testing.assert_allclose(got[0], want[0], rtol=1e-13)
    np.testing.assert_allclose(got[1], want[1], rtol=1e-13)
    np.testing.assert_array_equal(got[2], want[2])


def test_compiled_parameter_update_when_its_old_value_is_saved():
    """The product before the update saved the old value (torch raises here); the compiled
    gradient uses the value the call read, not the one written back after it."""
    p = tj.nn.Parameter(tj.tensor(B))
    x = tj.tensor(B * 2)

    @tj.compile
    def f(x):
        y = (p * p).sum()
        with tj.no_grad():
            p.mul_(0.5)
        return y + (p * x).sum()
    f(x).backward()
    np.testing.assert_allclose(p.grad.numpy(), 2 * B + 2 * B, rtol=1e-13)
    np.testing.assert_array_equal(p.detach().numpy(), B * 0.5)


@pytest.mark.parametrize("target", ["tensor", "whole_view", "index_copy"])
def test_copy_of_a_value_with_history_gives_the_old_history_a_zero_gradient(target):
    """torch's CopyBackwards/CopySlices keep an edge to the overwritten history: its leaves
    get zeros, not None (tracejit dropped the edge)."""
    def run(T):
        a = T.tensor(A, requires_grad=True)
        b = T.tensor(A + 1, requires_grad=True)
        y = a * 2
        if target == "tensor":
            y.copy_(b)
        elif target == "whole_view":
            y.view(6).copy_(b.reshape(6))
        else:
            y = a[[1, 0]] * 1
            y.copy_(b)
        (y * y).sum().backward()
        return a.grad is None, _np(b.grad), None if a.grad is None else _np(a.grad)
    (n, gb, ga), (tn, tgb, tga) = _both(run)
    assert n == tn
    np.testing.assert_array_equal(gb, tgb)
    if ga is not None:
        np.testing.assert_array_equal(ga, tga)


def test_views_of_a_detached_tensor_follow_its_new_history():
    """Views made of d = x.detach() before an in-place op gave d a history take it too (torch
    regenerates a view's grad_fn from its base)."""
    def run(T):
        x = T.tensor(np.arange(4.0).reshape(2, 2), requires_grad=True)
        b = T.tensor(np.full((2, 2), 2.0), requires_grad=True)
        d = x.detach()
        r, q = d.reshape(4), d[0]
        d.diagonal().mul_(b[0])
        flags = (r.requires_grad, q.requires_grad, d.requires_grad)
        ((r * T.tensor(np.arange(4.0))).sum() + (q * 3).sum()).backward()
        return flags, _np(b.grad)
    (f, g), (tf, tg) = _both(run)
    assert f == tf == (True, True, True)
    np.testing.assert_array_equal(g, tg)


def test_copy_into_a_detached_tensor_reaches_its_earlier_views():
    def run(T):
        x = T.tensor(np.float64(1.5), requires_grad=True)
        d = x.detach()
        r = d.reshape(1)
        b = T.tensor(np.float64(2.0), requires_grad=True)
        d.copy_(b)
        (r * 4).sum().backward()
        return r.requires_grad, _np(b.grad)
    (f, g), (tf, tg) = _both(run)
    assert f == tf
    np.testing.assert_array_equal(g, tg)


def test_compiled_outputs_overwritten_in_place_require_grad_as_torch():
    """fill_/zero_/copy_ of a traced value with history: the compiled output still requires
    grad (torch: FillBackward2 & co.), its old history gets zeros; values exact also where the
    old value is inf and the new one -0.0."""
    def body(T, a, b):
        y = a.abs()
        y.fill_(3.0)
        z = a * 2
        z.zero_()
        w = a + 1
        w.copy_(b)
        return y, z, w, y * a

    def run(T, compile_):
        a = T.tensor(np.array([1.0, -2.0, np.inf]), requires_grad=True)
        b = T.tensor(np.array([5.0, -0.0, 2.0]), requires_grad=True)
        f = compile_(lambda a, b: body(T, a, b)) if compile_ else (lambda a, b: body(T, a, b))
        outs = f(a, b)
        sum((o * (i + 1)).sum() for i, o in enumerate(outs)).backward()
        return [o.requires_grad for o in outs], [_np(o) for o in outs], _np(a.grad), _np(b.grad)
    got, want = run(tj, tj.compile), run(torch, None)
    assert got[0] == want[0]
    for g, w in zip(got[1], want[1]):
        np.testing.assert_array_equal(g, w)
        np.testing.assert_array_equal(np.signbit(g), np.signbit(w))
    np.testing.assert_array_equal(got[2], want[2])
    np.testing.assert_array_equal(got[3], want[3])


@pytest.mark.parametrize("how", ["iadd", "setitem", "view"])
def test_compiled_detached_tensor_written_with_a_parameter_passes_its_gradient(how):
    """d = x.detach() written in place with a value that requires grad, returned from a
    compiled call: the parameter gets its gradient (the graph read d as x's stop_gradient)."""
    def run(T, compile_):
        p = T.nn.Parameter(T.tensor(B))
        x = T.tensor(A)

        def f(x):
            d = x.detach()
            if how == "iadd":
                d += p
            elif how == "setitem":
                d[1] = p * 2
            else:
                d[0].mul_(p)
            return d * 3
        out = (compile_(f) if compile_ else f)(x)
        out.sum().backward()
        return _np(out), _np(p.grad)
    got, want = run(tj, tj.compile), run(torch, None)
    np.testing.assert_allclose(got[0], want[0], rtol=1e-13)
    np.testing.assert_allclose(got[1], want[1], rtol=1e-13)
