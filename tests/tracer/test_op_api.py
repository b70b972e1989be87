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
    with pytest.raises(RuntimeError, match="bool"):      # (as torch)
        tj.argmax(tj.tensor(np.array([False, True, True])))
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


# -- edge cases that used to crash -----------------------------------------------------------
def test_compiled_cat_of_empty_tensors():
    e = np.zeros((0, 3), np.float32)
    assert tj.compile(lambda a, b: tj.cat([a, b]))(e, e).shape == (0, 3)
    assert tj.compile(lambda a, b: tj.cat([a, b * 2], 1))(e, e).shape == (0, 6)
    x = np.ones((2, 3), np.float32)
    _same(tj.compile(lambda a, b: tj.cat([a, b, a]))(e, x), np.concatenate([e, x, e]))


@pytest.mark.parametrize("op", ["sum", "mean", "amax", "amin"])
def test_reductions_of_a_0d_tensor_accept_dim_minus_one(op):
    want = getattr(torch, op)(torch.tensor(2.5), dim=-1)
    _same(getattr(tj, op)(tj.tensor(2.5), dim=-1), want)
    _same(tj.compile(lambda a: getattr(tj, op)(a, dim=-1))(np.float32(2.5)), want)
    _same(getattr(tj, op)(tj.tensor(2.5), dim=0, keepdim=True), want)
    with pytest.raises(IndexError, match=f"{op}: axis 1 is out of range"):
        getattr(tj, op)(tj.tensor(2.5), dim=1)


def test_transpose_of_a_0d_tensor():
    s = tj.tensor(4.0)
    for a, b in ((0, 0), (-1, 0), (0, -1)):
        assert s.transpose(a, b).item() == torch.tensor(4.0).transpose(a, b).item()
        assert tj.compile(lambda v: tj.transpose(v, a, b))(np.float32(4)).item() == 4.0
    with pytest.raises(IndexError, match="transpose: axis 1 is out of range"):
        s.transpose(0, 1)
    x = np.arange(6.0).reshape(2, 3)
    _same(tj.tensor(x).transpose(-1, 0), x.T)


@pytest.mark.parametrize("fn", ["softmax", "log_softmax", "logsumexp"])
def test_softmax_family_over_an_empty_axis(fn):
    x = np.zeros((2, 0), np.float32)
    want = getattr(torch, fn)(torch.tensor(x), 1)
    _same(getattr(tj, fn)(tj.tensor(x), 1), want)
    _same(tj.compile(lambda a: getattr(tj, fn)(a, 1))(x), want)
    y = np.zeros((0, 3), np.float32)            # an empty batch of non-empty rows
    _same(getattr(tj, fn)(tj.tensor(y), 1), getattr(torch, fn)(torch.tensor(y), 1))


def test_negative_padding_crops_like_torch():
    x = np.arange(20, dtype=np.float32).reshape(4, 5)
    # tracejit takes NumPy's ((lo, hi), ...) per axis; torch's F.pad the last axis first
    ours, theirs = ((-1, 2), (1, -3)), (1, -3, -1, 2)
    xt = torch.tensor(x, requires_grad=True)
    want = F.pad(xt, theirs, value=7.0)
    (want * want).sum().backward()
    xj = tj.tensor(x, requires_grad=True)
    got = tj.pad(xj, ours, value=7.0)
    (got * got).sum().backward()
    _same(got, want)
    _same(xj.grad, xt.grad)
    _same(tj.compile(lambda a: tj.pad(a, ours, value=7.0))(x), want)
    _same(tj.grad(tj.compile(lambda a: (tj.pad(a, ours) ** 2).sum()))(x),
          torch.autograd.grad((F.pad(xt, theirs) ** 2).sum(), xt)[0])
    with pytest.raises(ValueError, match=r"pad: padding .* crops more than all of f32\[4, 5\]"):
        tj.pad(tj.tensor(x), ((-3, -2), (0, 0)))
    # the fill value takes the input's dtype, as in torch
    n = np.arange(6).reshape(2, 3)
    got = tj.pad(tj.tensor(n), ((0, 1), (-1, 1)), value=2.0)
    want = F.pad(torch.tensor(n), (-1, 1, 0, 1), value=2.0)
    assert got.dtype is tj.int64 and (got.numpy() == want.numpy()).all()


# -- keyword arguments PyTorch code passes -----------------------------------------------------
def test_add_and_sub_take_alpha():
    rng = np.random.default_rng(5)
    a, b = rng.standard_normal((2, 3)).astype(np.float32), rng.standard_normal(3).astype(np.float32)
    for op in ("add", "sub"):
        at, bt = torch.tensor(a, requires_grad=True), torch.tensor(b, requires_grad=True)
        getattr(torch, op)(at, bt, alpha=2.5).sum().backward()
        aj, bj = tj.tensor(a, requires_grad=True), tj.tensor(b, requires_grad=True)
        got = getattr(aj, op)(bj, alpha=2.5)
        _same(got, getattr(torch, op)(torch.tensor(a), torch.tensor(b), alpha=2.5))
        got.sum().backward()
        _same(aj.grad, at.grad)
        _same(bj.grad, bt.grad)
        _same(tj.compile(lambda u, v: getattr(tj, op)(u, v, alpha=-3))(a, b),
              getattr(torch, op)(torch.tensor(a), torch.tensor(b), alpha=-3))
    assert tj.add(tj.tensor([1, 2]), 3, alpha=2).numpy().tolist() == [7, 8]
    with pytest.raises(TypeError, match="alpha must be a number"):
        tj.add(tj.tensor([1.0]), 1.0, alpha="2")


def test_softmax_and_log_softmax_take_dtype():
    x = np.array([[1, 2, 3], [0, 0, 5]], np.int64)
    for fn in ("softmax", "log_softmax"):
        want = getattr(torch, fn)(torch.tensor(x), 1, dtype=torch.float64)
        got = getattr(tj, fn)(tj.tensor(x), 1, dtype=tj.float64)
        assert got.dtype is tj.float64
        _same(got, want, rtol=1e-12)
        got = getattr(tj.tensor(x.astype(np.float32)), fn)(dim=0, dtype=tj.float64)
        assert got.dtype is tj.float64


def test_conversions_take_memory_format():
    x = tj.tensor(np.arange(6, dtype=np.float32).reshape(2, 3))
    pf = torch.preserve_format
    for conv, dtype in (("float", tj.float32), ("double", tj.float64), ("half", tj.float16),
                        ("int", tj.int32), ("long", tj.int64), ("bool", tj.bool_),
                        ("bfloat16", tj.bfloat16)):
        assert getattr(x, conv)(memory_format=pf).dtype is dtype
    assert x.to(tj.float64, memory_format=torch.contiguous_format).dtype is tj.float64
    _same(x.clone(memory_format=pf), x)
    _same(x.contiguous(memory_format=torch.contiguous_format), x)


def test_softplus_takes_beta_and_threshold():
    x = np.array([-30.0, -2.0, -0.1, 0.0, 0.3, 2.0, 4.9, 5.1, 30.0], np.float32)
    for kw in ({}, {"beta": 2.0}, {"beta": 0.5, "threshold": 1.0}, {"threshold": 5.0}):
        xt = torch.tensor(x, requires_grad=True)
        want = F.softplus(xt, **kw)
        want.sum().backward()
        xj = tj.tensor(x, requires_grad=True)
        got = tj.softplus(xj, **kw)
        got.sum().backward()
        _same(got, want)
        _same(xj.grad, xt.grad)
        _same(tj.compile(lambda a: tj.softplus(a, **kw))(x), want)
