"""Small differences from torch closed: softmax/log_softmax of a size-0 input changed in place
(no spurious version error), is_grad_enabled() inside enable_grad inside inference_mode, and
atleast_1d/2d/3d and Tensor.unfold as views of their input. Each checked against torch."""
import numpy as np
import pytest
import torch

import tracejit as tj


def _np(t):
    return t.detach().numpy()


# -- 1. softmax / log_softmax keep their result, not their input --------------------------------
@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
@pytest.mark.parametrize("shape", [(0, 3), (3, 0), (2, 3)])
@pytest.mark.parametrize("calls", [1, 6])      # (several calls: the fused plan compiles)
def test_softmax_input_changed_in_place_before_backward(name, shape, calls):
    rng = np.random.default_rng(0)
    for _ in range(calls):
        a = rng.standard_normal(shape).astype(np.float32)
        w = rng.standard_normal(shape).astype(np.float32)
        grads = []
        for lib in (torch, tj):
            x = lib.tensor(a, requires_grad=True)
            y = x * 1
            z = getattr(lib, name)(y, 1)
            y.add_(1)                        # torch's node keeps z only: legal
            (z * lib.tensor(w)).sum().backward()
            grads.append(_np(x.grad))
        assert grads[1].shape == grads[0].shape
        np.testing.assert_allclose(grads[1], grads[0], rtol=1e-5, atol=1e-6)


def test_log_softmax_of_half_input_with_float_dtype_changed_in_place():
    a = np.linspace(-1, 1, 6, dtype=np.float32).reshape(2, 3)
    grads = []
    for lib in (torch, tj):
        x = lib.tensor(a, dtype=lib.float16, requires_grad=True)
        y = x * 1
        z = lib.log_softmax(y, 1, dtype=lib.float32)
        y.add_(1)
        (z * z).sum().backward()
        grads.append(_np(x.grad).astype(np.float32))
    np.testing.assert_allclose(grads[1], grads[0], rtol=1e-2, atol=1e-2)


# -- 2. grad mode reported inside inference_mode ---------------------------------------------------
def _modes(lib):
    """is_grad_enabled() at each step of nested mode changes inside inference_mode."""
    seen = []
    with lib.inference_mode():
        seen.append(lib.is_grad_enabled())
        with lib.enable_grad():
            seen.append(lib.is_grad_enabled())
            with lib.no_grad():
                seen.append(lib.is_grad_enabled())
            seen.append(lib.is_grad_enabled())
            with lib.set_grad_enabled(False):
                seen.append(lib.is_grad_enabled())
            seen.append(lib.is_grad_enabled())
            with lib.inference_mode():
                seen.append(lib.is_grad_enabled())
            seen.append(lib.is_grad_enabled())
        seen.append(lib.is_grad_enabled())
        with lib.set_grad_enabled(True):
            seen.append(lib.is_grad_enabled())
        seen.append(lib.is_grad_enabled())
        lib.set_grad_enabled(True)           # (called on its own: lasts to the block's end)
        seen.append(lib.is_grad_enabled())
    seen.append(lib.is_grad_enabled())
    with lib.no_grad():
        with lib.inference_mode():
            with lib.enable_grad():
                seen.append(lib.is_grad_enabled())
        seen.append(lib.is_grad_enabled())
    seen.append(lib.is_grad_enabled())
    return seen


def test_is_grad_enabled_inside_inference_mode_matches_torch():
    assert _modes(tj) == _modes(torch)


def test_enable_grad_inside_inference_mode_still_records_nothing():
    rec = []
    for lib in (torch, tj):
        x = lib.ones(3, requires_grad=True)
        with lib.inference_mode():
            with lib.enable_grad():
                y = x * 2
                rec.append((lib.is_grad_enabled(), y.requires_grad, y.grad_fn is None))

            @lib.enable_grad()
            def f(v):
                return v * 3, lib.is_grad_enabled()
            z, on = f(x)
            rec.append((on, z.requires_grad, z.grad_fn is None))
    assert rec[:2] == rec[2:]


# -- 3. atleast_*d and unfold are views ---------------------------------------------------------
@pytest.mark.parametrize("fn", ["atleast_1d", "atleast_2d", "atleast_3d"])
@pytest.mark.parametrize("shape", [(), (4,), (2, 3), (2, 1, 3), (0,)])
def test_atleast_is_a_view_both_ways(fn, shape):
    a = np.arange(float(np.prod(shape))).reshape(shape)
    seen = []
    for lib in (torch, tj):
        x = lib.tensor(a)
        v = getattr(lib, fn)(x)
        v.mul_(2)                              # through the view into x
        x.add_(1)                              # x's change shows in the view
        seen.append((tuple(v.shape), _np(x).copy(), _np(v).copy(), v is x))
    assert seen[1][0] == seen[0][0]
    np.testing.assert_array_equal(seen[1][1], seen[0][1])
    np.testing.assert_array_equal(seen[1][2], seen[0][2])
    assert seen[1][3] == seen[0][3]


def test_atleast_several_and_gradients_match_torch():
    a, b = np.float32(3.0), np.arange(4, dtype=np.float32)
    res = []
    for lib in (torch, tj):
        x = lib.tensor(a, requires_grad=True)
        y = lib.tensor(b, requires_grad=True)
        u, v = lib.atleast_3d(x * 1, y * 1)
        w = lib.atleast_2d([x * 1, y * 1])
        assert isinstance(w, tuple)
        v.mul_(lib.tensor(np.arange(4, dtype=np.float32).reshape(1, 4, 1)))
        (u.sum() * 5 + (v * v).sum() + w[1].sum()).backward()
        res.append((u.shape, v.shape, w[0].shape, type(v.grad_fn).__name__
                    if lib is torch else v.grad_fn.name(), _np(x.grad), _np(y.grad)))
    assert tuple(res[1][0]) == tuple(res[0][0]) and tuple(res[1][1]) == tuple(res[0][1])
    assert tuple(res[1][2]) == tuple(res[0][2])
    np.testing.assert_allclose(res[1][4], res[0][4])
    np.testing.assert_allclose(res[1][5], res[0][5])


@pytest.mark.parametrize("shape,dim,size,step", [
    ((7,), 0, 3, 2), ((7,), 0, 2, 3), ((3, 5, 4), 1, 2, 1), ((3, 5, 4), -1, 4, 4),
    ((3, 5), 0, 1, 5), ((2, 6), 1, 0, 2), ((0, 4), 1, 2, 2), ((4, 0), 1, 0, 1), ((), 0, 1, 1),
    ((5,), 0, 5, 1)])
def test_unfold_values_and_gradient_match_torch(shape, dim, size, step):
    rng = np.random.default_rng(1)
    a = rng.standard_normal(shape)
    out = []
    for lib in (torch, tj):
        x = lib.tensor(a, requires_grad=True)
        u = (x * 1).unfold(dim, size, step)
        w = lib.tensor(rng.standard_normal(tuple(u.shape))) if lib is torch else \
            tj.tensor(_np(out[0][2]))
        (u * w).sum().backward()
        out.append((_np(u), _np(x.grad), w))
    assert out[1][0].shape == out[0][0].shape
    np.testing.assert_allclose(out[1][0], out[0][0])
    np.testing.assert_allclose(out[1][1], out[0][1])


def test_unfold_is_a_view_both_ways():
    seen = []
    for lib in (torch, tj):
        x = lib.arange(12.0).reshape(2, 6)
        u = x.unfold(1, 2, 3)                  # windows that do not overlap
        x[0, 3] = -1.0                         # the base's change shows in the view
        before = _np(u).copy()
        u[1, 1] = 50.0                         # a write through the view reaches the base
        u.mul_(2)
        seen.append((before, _np(u).copy(), _np(x).copy()))
    for k in range(3):
        np.testing.assert_array_equal(seen[1][k], seen[0][k])


def test_unfold_write_through_with_gradient_matches_torch():
    a = np.arange(8.0)
    out = []
    for lib in (torch, tj):
        x = lib.tensor(a, requires_grad=True)
        s = lib.tensor(np.array([2.0, 3.0]), requires_grad=True)
        y = x * 1
        u = y.unfold(0, 2, 4)                  # [[0, 1], [4, 5]]
        u.mul_(s)                              # broadcast over the windows' last dim
        (y * y).sum().backward()
        out.append((_np(y), _np(x.grad), _np(s.grad)))
    for k in range(3):
        np.testing.assert_allclose(out[1][k], out[0][k])


def test_unfold_compiled_matches_eager_and_torch():
    a = np.random.default_rng(2).standard_normal((2, 3, 8)).astype(np.float32)

    def f(x):
        return (x.unfold(2, 3, 2) ** 2).sum(-1)

    want = f(torch.tensor(a)).numpy()
    np.testing.assert_allclose(tj.compile(f)(tj.tensor(a)).numpy(), want, rtol=1e-5)
    g = tj.compile(tj.grad(lambda x: f(x).sum()))(tj.tensor(a)).numpy()
    xt = torch.tensor(a, requires_grad=True)
    f(xt).sum().backward()
    np.testing.assert_allclose(g, xt.grad.numpy(), rtol=1e-5)


def test_unfold_bad_arguments_name_the_op():
    x = tj.ones((2, 3))
    with pytest.raises(RuntimeError, match=r"unfold.*maximum size for tensor at dimension 1 is 3"):
        x.unfold(1, 4, 1)
    with pytest.raises(RuntimeError, match=r"unfold.*step is 0 but must be > 0"):
        x.unfold(0, 1, 0)
    with pytest.raises(Exception, match="unfold"):
        x.unfold(2, 1, 1)
    with pytest.raises(TypeError, match="unfold"):
        x.unfold(0, 1.5, 1)
