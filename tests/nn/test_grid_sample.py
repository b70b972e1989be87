"""F.affine_grid and F.grid_sample (nn/functional_grid.py) against torch: values and gradients
to the input, the grid and theta, eagerly and compiled, over modes, padding modes,
align_corners, 4-D and 5-D input, size-1 axes, half-pixel ties, NaN points and bad input."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import tracejit as tj
from tracejit.nn import functional as F

R = np.random.default_rng(0)


def _np(t):
    return t.detach().numpy() if hasattr(t, "detach") else np.asarray(t)


def _close(got, want, tol=1e-12):
    got, want = _np(got), _np(want)
    assert got.shape == want.shape, (got.shape, want.shape)
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol)


def _both(x, g, compiled, **kw):
    """grid_sample's output and the gradients of <out, probe> to input and grid, from torch and
    from tracejit (eager, and compiled when asked)."""
    tx, tg = torch.tensor(x, requires_grad=True), torch.tensor(g, requires_grad=True)
    ty = TF.grid_sample(tx, tg, **kw)
    probe = R.standard_normal(tuple(ty.shape))
    (ty * torch.tensor(probe)).sum().backward()
    X, G = tj.tensor(x, requires_grad=True), tj.tensor(g, requires_grad=True)
    y = F.grid_sample(X, G, **kw)
    _close(y, ty)
    (y * tj.tensor(probe)).sum().backward()
    _close(X.grad, tx.grad)
    _close(G.grad, tg.grad)
    if compiled:
        f = tj.compile(lambda x, g, p: (F.grid_sample(x, g, **kw) * p).sum())
        gx, gg = tj.grad(f, argnums=(0, 1))(x, g, probe)
        _close(gx, tx.grad)
        _close(gg, tg.grad)


@pytest.mark.parametrize("mode", ["bilinear", "nearest"])
@pytest.mark.parametrize("padding_mode", ["zeros", "border", "reflection"])
def test_grid_sample_4d_matches_torch(mode, padding_mode):
    x = R.standard_normal((2, 3, 4, 5))
    g = R.uniform(-1.4, 1.4, (2, 3, 2, 2))       # points inside and outside the input
    for ac in (False, True):
        compiled = ac and (mode == "bilinear" or padding_mode == "reflection")
        _both(x, g, compiled=compiled, mode=mode, padding_mode=padding_mode, align_corners=ac)


@pytest.mark.parametrize("padding_mode", ["zeros", "reflection"])
def test_grid_sample_5d_matches_torch(padding_mode):
    x = R.standard_normal((2, 2, 3, 4, 2))
    g = R.uniform(-1.3, 1.3, (2, 2, 3, 2, 3))
    _both(x, g, compiled=padding_mode == "zeros", padding_mode=padding_mode, align_corners=False)
    _both(x, g, compiled=False, mode="nearest", padding_mode=padding_mode, align_corners=True)


def test_grid_sample_size_one_axes_ties_and_non_contiguous_grid():
    x = R.standard_normal((1, 2, 1, 4))            # height 1
    for ac in (False, True):
        for pm in ("zeros", "border", "reflection"):
            _both(x, R.uniform(-1.2, 1.2, (1, 2, 3, 2)), False, padding_mode=pm, align_corners=ac)
    # points on pixel centres and half-way between them (nearest rounds half to even, as torch)
    x = R.standard_normal((1, 1, 3, 4))
    px = np.array([0.0, 0.5, 1.0, 1.5, 2.5, 3.0])
    gx = (2 * px + 1) / 4 - 1                      # align_corners=False unnormalization inverse
    g = np.stack([gx, np.full(6, 0.0)], -1).reshape(1, 1, 6, 2)
    for mode in ("nearest", "bilinear"):
        _both(x, g, False, mode=mode, align_corners=False)
    # a grid read through a transpose (non-contiguous) and an input read through a slice
    x, g = R.standard_normal((2, 3, 5, 6)), R.uniform(-1, 1, (2, 3, 4, 2))
    want = TF.grid_sample(torch.tensor(x)[:, ::2], torch.tensor(g).transpose(1, 2),
                          align_corners=False)
    got = F.grid_sample(tj.tensor(x)[:, ::2], tj.tensor(g).transpose(1, 2), align_corners=False)
    _close(got, want)


@pytest.mark.parametrize("padding_mode", ["zeros", "border"])
@pytest.mark.parametrize("mode", ["bilinear", "nearest"])
def test_grid_sample_far_points_and_non_finite_points(mode, padding_mode):
    """Far finite points read zeros (or the border) as torch; non-finite ones give NaN (torch's
    result there depends on the kernel), and an infinity in the input at the index that
    outside corners read does not leak into other points."""
    x = R.standard_normal((1, 2, 3, 3)).astype(np.float32)
    x[0, :, 0, 0] = np.inf
    g = np.array([[[[1e30, 0.0], [-3.0, 0.5], [0.2, -0.3], [np.nan, 0.0], [0.0, -np.inf]]]],
                 np.float32)
    kw = dict(mode=mode, padding_mode=padding_mode, align_corners=False)
    want = TF.grid_sample(torch.tensor(x), torch.tensor(g), **kw).numpy()
    runs = [F.grid_sample(tj.tensor(x), tj.tensor(g), **kw)]
    if mode == "bilinear" and padding_mode == "zeros":       # one compile is enough
        runs.append(tj.compile(lambda a, b: F.grid_sample(a, b, **kw))(x, g))
    for got in runs:
        got = _np(got)
        np.testing.assert_allclose(got[..., :3], want[..., :3], rtol=1e-6, atol=1e-6)
        assert np.isnan(got[..., 3:]).all()


@pytest.mark.parametrize("size", [(2, 3, 4, 5), (2, 1, 3, 1, 4)], ids=["4d", "5d"])
def test_affine_grid_matches_torch_and_trains_theta(size):
    nd = len(size) - 2
    theta = R.standard_normal((size[0], nd, nd + 1))
    for ac in (False, True):
        tt = torch.tensor(theta, requires_grad=True)
        tgrid = TF.affine_grid(tt, size, align_corners=ac)
        T = tj.tensor(theta, requires_grad=True)
        grid = F.affine_grid(T, size, align_corners=ac)
        _close(grid, tgrid)
    # theta's gradient through grid_sample (a spatial transformer), eager and compiled
    x = R.standard_normal(size)
    ty = TF.grid_sample(torch.tensor(x), TF.affine_grid(tt, size, align_corners=False),
                        align_corners=False)
    (ty ** 2).sum().backward()

    def loss(th, x):
        return (F.grid_sample(x, F.affine_grid(th, size, align_corners=False),
                              align_corners=False) ** 2).sum()
    _close(tj.grad(loss)(tj.tensor(theta), tj.tensor(x)), tt.grad)
    _close(tj.grad(tj.compile(loss))(theta, x), tt.grad)


def test_bad_input_names_the_op_and_shapes():
    x = tj.tensor(np.zeros((2, 3, 4, 5), np.float32))
    with pytest.raises(ValueError, match=r"grid_sample: .*input f32\[2, 3, 4, 5\] and grid "
                                         r"f32\[2, 4, 2\].*test_grid_sample.py:\d+"):
        F.grid_sample(x, tj.tensor(np.zeros((2, 4, 2), np.float32)))
    with pytest.raises(ValueError, match=r"grid_sample: grid f32\[3, 2, 2, 2\] must be"):
        F.grid_sample(x, tj.tensor(np.zeros((3, 2, 2, 2), np.float32)))
    with pytest.raises(TypeError, match=r"grid_sample: .*same floating dtype"):
        F.grid_sample(x, tj.tensor(np.zeros((2, 2, 2, 2), np.float64)))
    with pytest.raises(NotImplementedError, match=r"grid_sample: mode 'bicubic'"):
        F.grid_sample(x, tj.tensor(np.zeros((2, 2, 2, 2), np.float32)), mode="bicubic")
    with pytest.raises(ValueError, match=r"affine_grid: .*\(N, 2, 3\) for size \[2, 3, 4, 5\]"):
        F.affine_grid(tj.tensor(np.zeros((2, 3, 4), np.float32)), (2, 3, 4, 5))
