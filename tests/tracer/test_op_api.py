"""PyTorch's op API where users meet it first: max/min with a dimension (values and indices),
argmax/argmin, amax/amin, // and %, cross_entropy's full signature, the keyword arguments
PyTorch code passes, and edge cases that used to crash. Values, indices and gradients are
compared with PyTorch, eagerly and compiled."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

import tracejit as tj
from conftest import assert_close

torch = pytest.importorskip("torch")
F = torch.nn.functional


def _np(t) -> np.ndarray:
    return t.detach().numpy() if isinstance(t, (tj.Tensor, torch.Tensor)) else np.asarray(t)


def _same(got, want, rtol=1e-5, atol=1e-6):
    g, w = _np(got), _np(want)
    assert g.shape == w.shape, (g.shape, w.shape)
    np.testing.assert_allclose(g, w, rtol=rtol, atol=atol, equal_nan=True)


def _ties_and_nans() -> np.ndarray:
    x = np.array([[1.0, 3.0, 3.0, 0.0, -2.0],
                  [np.nan, 2.0, np.nan, 5.0, 5.0],
                  [2.0, 2.0, 2.0, 2.0, 2.0],
                  [-np.inf, -np.inf, 4.0, np.inf, np.inf]], np.float32)
    return x


# -- max / min with a dimension ----------------------------------------------------------------
@pytest.mark.parametrize("op", ["max", "min"])
@pytest.mark.parametrize("dim,keepdim", [(0, False), (1, False), (-1, True), (1, True)])
def test_max_min_dim_returns_values_and_indices_like_torch(op, dim, keepdim):
    x = _ties_and_nans()
    want = getattr(torch, op)(torch.tensor(x), dim, keepdim)
    for got in (getattr(tj, op)(tj.tensor(x), dim, keepdim),
                getattr(tj.tensor(x), op)(dim=dim, keepdim=keepdim),
                tj.compile(lambda a: getattr(a, op)(dim, keepdim))(x)):
        vals, idx = got                      # unpacks as a pair, like torch.return_types.max
        assert got.values is vals and got.indices is idx
        assert idx.dtype is tj.int64
        _same(vals, want.values)
        assert (_np(idx) == want.indices.numpy()).all()


def test_max_dim_on_integers_3d_and_0d():
    x = np.random.default_rng(0).integers(-3, 3, (3, 4, 5))
    for dim in range(-3, 3):
        got, want = tj.tensor(x).max(dim), torch.tensor(x).max(dim)
        assert (_np(got.values) == want.values.numpy()).all()
        assert (_np(got.indices) == want.indices.numpy()).all()
        got = tj.compile(lambda a, d=dim: tj.min(a, d))(x)
        want = torch.tensor(x).min(dim)
        assert (_np(got.indices) == want.indices.numpy()).all()
    v, i = tj.max(tj.tensor(3.5), 0)
    assert v.shape == i.shape == () and v.item() == 3.5 and i.item() == 0


def test_max_dim_gradient_goes_to_the_selected_index_only():
    """Ties: torch's max(dim) gives the whole gradient to the index it returns; amax (and
    the full max()) split it evenly."""
    x = np.array([[1.0, 3.0, 3.0, 0.0], [2.0, 2.0, 2.0, 2.0], [5.0, -1.0, 5.0, 4.0]], np.float32)
    g_out = np.array([1.0, 2.0, 3.0, 4.0], np.float32)
    for op, dim in itertools.product(("max", "min"), (0, 1)):
        xt = torch.tensor(x, requires_grad=True)
        w = torch.tensor(g_out[:x.shape[1 - dim]])
        (getattr(torch, op)(xt, dim).values * w).sum().backward()
        xj = tj.tensor(x, requires_grad=True)
        vals = getattr(xj, op)(dim).values
        assert vals.grad_fn.name() == ("MaxBackward0" if op == "max" else "MinBackward0")
        (vals * w.numpy()).sum().backward()
        _same(xj.grad, xt.grad)
        compiled = tj.grad(tj.compile(lambda a: (getattr(a, op)(dim).values * w.numpy()).sum()))
        _same(compiled(x), xt.grad)
    for op in ("amax", "amin"):
        xt = torch.tensor(x, requires_grad=True)
        getattr(torch, op)(xt, 1).sum().backward()
        xj = tj.tensor(x, requires_grad=True)
        getattr(tj, op)(xj, 1).sum().backward()
        _same(xj.grad, xt.grad)


def test_axis_keeps_returning_values_and_two_tensors_give_the_elementwise_max():
    x = np.random.default_rng(1).standard_normal((3, 4)).astype(np.float32)
    _same(tj.max(tj.tensor(x), axis=1), x.max(1))
    _same(tj.tensor(x).min(axis=(0, 1), keepdims=True), x.min(keepdims=True))
    _same(tj.compile(lambda a: a.max(axis=0))(x), x.max(0))
    _same(tj.tensor(x).max(), x.max())
    _same(tj.max(tj.tensor(x), tj.tensor(-x)), np.maximum(x, -x))
    _same(tj.min(tj.tensor(x), tj.tensor(-x)), np.minimum(x, -x))
    with pytest.raises(TypeError, match=r"max: dim must be an int.*test_op_api.py"):
        tj.tensor(x).max((0, 1))


def test_max_dim_over_an_empty_axis_is_an_index_error():
    with pytest.raises(IndexError, match="max: cannot reduce over the empty axis"):
        tj.zeros((0, 3)).max(0)
    v, i = tj.zeros((0, 3)).max(1)              # empty rows of a non-empty axis: fine
    assert v.shape == i.shape == (0,)


# -- argmax / argmin / amax / amin -----------------------------------------------------------
@pytest.mark.parametrize("op", ["argmax", "argmin"])
def test_argmax_argmin_match_torch_with_ties_and_nans(op):
    x = _ties_and_nans()
    xt = torch.tensor(x)
    for kw in ({}, {"dim": 0}, {"dim": 1}, {"dim": -1, "keepdim": True}):
        want = getattr(torch, op)(xt, **kw).numpy()
        for got in (getattr(tj, op)(tj.tensor(x), **kw), getattr(tj.tensor(x), op)(**kw),
                    tj.compile(lambda a: getattr(tj, op)(a, **kw))(x)):
            assert got.dtype is tj.int64
            assert _np(got).shape == want.shape and (_np(got) == want).all(), (kw, got, want)
    # the NumPy spelling, and large rows that the compiled reduction splits across threads
    y = np.random.default_rng(2).standard_normal((300, 257)).astype(np.float32)
    y[7, 100] = np.nan
    for axis in (0, 1):
        want = getattr(np, op)(y, axis=axis)
        assert (_np(tj.compile(lambda a: getattr(tj, op)(a, axis=axis))(y)) == want).all()
        assert (_np(getattr(tj, op)(tj.tensor(y), axis=axis)) == want).all()


def test_argmax_of_integers_bools_and_scalars():
    x = np.array([[3, 7, 7], [-1, -5, -5]], np.int32)
    assert (_np(tj.argmax(tj.tensor(x), 1)) == [1, 0]).all()
    assert (_np(tj.compile(lambda a: tj.argmin(a, 1))(x)) == [0, 1]).all()
    assert tj.argmax(tj.tensor(np.array([False, True, True]))).item() == 1
    assert tj.argmax(tj.tensor(2.0)).item() == 0 and tj.argmax(tj.tensor(2.0), 0).shape == ()


def test_amax_amin_take_torch_and_numpy_spellings():
    x = np.random.default_rng(3).standard_normal((2, 3, 4)).astype(np.float32)
    xt = torch.tensor(x)
    _same(tj.amax(tj.tensor(x), (0, 2)), torch.amax(xt, (0, 2)))
    _same(tj.tensor(x).amin(dim=-1, keepdim=True), xt.amin(-1, keepdim=True))
    _same(tj.amax(tj.tensor(x)), torch.amax(xt, ()))               # dim=() means every dim
    _same(tj.amin(tj.tensor(x), axis=1, keepdims=True), x.min(1, keepdims=True))
    _same(tj.compile(lambda a: tj.amax(a, dim=(1, 2)))(x), torch.amax(xt, (1, 2)))


def test_max_namedtuple_is_a_pytree_of_a_compiled_function():
    x = np.random.default_rng(4).standard_normal((3, 5)).astype(np.float32)
    got = tj.compile(lambda a: {"m": a.max(1), "n": tj.min(a, 0, True)})(x)
    assert type(got["m"]).__name__ == "ValuesIndices"
    _same(got["m"].values, x.max(1))
    assert (_np(got["n"].indices) == x.argmin(0)[None]).all()
