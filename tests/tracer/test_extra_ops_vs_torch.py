"""torch's extra functions (stats_ops, hist_ops, scatter_ops, assorted_ops) against torch 2.13:
values, dtypes, float64 gradients, eager and tj.compile'd, sizes 0 and 1, non-contiguous
inputs, and the error cases."""
import numpy as np
import pytest
import torch

import tracejit as tj

RNG = np.random.default_rng(7)


def T(a, grad=False):
    return tj.tensor(np.asarray(a), requires_grad=grad)


def t(a, grad=False):
    return torch.tensor(np.asarray(a), requires_grad=grad)


def same(ours, theirs, tol=1e-9):
    if isinstance(theirs, torch.Size):
        assert tuple(ours) == tuple(theirs)
        return
    if isinstance(theirs, (tuple, list)):
        assert len(ours) == len(theirs)
        for o, r in zip(ours, theirs):
            same(o, r, tol)
        return
    want = theirs.detach().numpy()
    got = np.asarray(ours.detach().numpy())
    assert got.shape == want.shape, (got.shape, want.shape)
    assert got.dtype == want.dtype, (got.dtype, want.dtype)
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol, equal_nan=True)


def check_grad(fn_tj, fn_torch, *arrays):
    """Values and the float64 gradients of sum(out * fixed weights) against torch's."""
    xs, ys = [T(a, True) for a in arrays], [t(a, True) for a in arrays]
    out, ref = fn_tj(*xs), fn_torch(*ys)
    same(out, ref)
    w = RNG.standard_normal(ref.shape)
    (out * T(w)).sum().backward()
    (ref * t(w)).sum().backward()
    for x, y in zip(xs, ys):
        same(x.grad, y.grad)


def _vander_pow(v, n):
    """torch.vander(v, n) as powers (differentiable, unlike torch.vander in torch 2.13)."""
    return v.unsqueeze(1) ** torch.arange(n - 1, -1, -1, dtype=v.dtype)


def test_stats_values_and_grads():
    x = RNG.standard_normal((4, 6))
    x[1, 3] = x[1, 1]                                   # a tie
    xn = x.copy()
    xn[2, 2] = np.nan
    xn[3, 0] = np.nan
    for dim in (0, 1, -1):
        for op in ("cummax", "cummin"):
            same(tuple(getattr(tj, op)(T(xn), dim)), tuple(getattr(torch, op)(t(xn), dim)))
            check_grad(lambda a: getattr(tj, op)(a, dim).values,
                       lambda a: getattr(torch, op)(a, dim).values, x)
    xi = RNG.integers(0, 3, (5, 4))
    same(tuple(tj.cummax(T(xi), 0)), tuple(torch.cummax(t(xi), 0)))
    same(tuple(tj.cummin(T(xi[:0]), 0)), tuple(torch.cummin(t(xi[:0]), 0)))
    same(tuple(tj.cummax(T(np.float64(2.0)), 0)), tuple(torch.cummax(t(np.float64(2.0)), 0)))
    same(tuple(tj.mode(T(xi), 0)), tuple(torch.mode(t(xi), 0)))
    same(tuple(tj.mode(T(xi), 1, True)), tuple(torch.mode(t(xi), 1, True)))
    same(tuple(T(xi).T.mode()), tuple(t(xi).T.mode()))                 # non-contiguous
    check_grad(lambda a: tj.mode(a, 1).values, lambda a: torch.mode(a, 1).values,
               np.round(x))
    long = RNG.integers(0, 4, (3, 40))        # torch's index is some occurrence here: ours last
    got, want = tj.mode(T(long), 1), torch.mode(t(long), 1)
    same(got.values, want.values)
    assert [row.nonzero()[0][-1] for row in long == want.values.numpy()[:, None]] == \
        list(got.indices.numpy())
    same(tj.nansum(T(xn), 1), torch.nansum(t(xn), 1))
    same(tj.nansum(T(xi)), torch.nansum(t(xi)))
    same(T(xn).nanmean(0, keepdim=True), t(xn).nanmean(0, keepdim=True))
    same(tj.nanmean(T(np.full((2, 3), np.nan)), 1), torch.nanmean(t(np.full((2, 3), np.nan)), 1))
    check_grad(lambda a: tj.nanmean(a * 1.0, 1), lambda a: torch.nanmean(a * 1.0, 1), x)
    with pytest.raises(RuntimeError, match="nanmean"):
        tj.nanmean(T(xi))


def test_quantile_modes_and_grads():
    y = RNG.standard_normal((3, 7))
    yn = y.copy()
    yn[1, 4] = np.nan
    yn[2, :] = np.nan
    q = np.array([0.0, 0.25, 0.5, 0.9, 1.0])
    for interp in ("linear", "lower", "higher", "midpoint", "nearest"):
        for op in ("quantile", "nanquantile"):
            f, g = getattr(tj, op), getattr(torch, op)
            same(f(T(yn), T(q), 1, interpolation=interp), g(t(yn), t(q), 1, interpolation=interp))
            same(f(T(yn), 0.4, 0, True, interpolation=interp),
                 g(t(yn), 0.4, 0, True, interpolation=interp))
            same(f(T(yn), T(q), interpolation=interp), g(t(yn), t(q), interpolation=interp))
    same(tj.quantile(T(y[:1, :1]), 0.3), torch.quantile(t(y[:1, :1]), 0.3))
    same(T(y).T.quantile(T(q), 0), t(y).T.quantile(t(q), 0))
    check_grad(lambda a: tj.quantile(a, T(q), 1), lambda a: torch.quantile(a, t(q), 1), y)
    with pytest.raises(RuntimeError, match="quantile"):
        tj.quantile(T(y), 1.5)
    with pytest.raises(RuntimeError, match="float or double"):
        tj.quantile(T(np.arange(3)), 0.5)


def test_cov_corrcoef():
    z = RNG.standard_normal((3, 6))
    fw, aw = RNG.integers(0, 3, 6), RNG.random(6)
    same(tj.cov(T(z)), torch.cov(t(z)))
    same(tj.cov(T(z), correction=0, fweights=T(fw), aweights=T(aw)),
         torch.cov(t(z), correction=0, fweights=t(fw), aweights=t(aw)))
    same(tj.cov(T(z), aweights=T(aw)), torch.cov(t(z), aweights=t(aw)))
    same(tj.cov(T(z[0])), torch.cov(t(z[0])))
    same(T(z).T.T.cov(), t(z).cov())
    same(tj.corrcoef(T(z)), torch.corrcoef(t(z)))
    same(tj.corrcoef(T(z[0])), torch.corrcoef(t(z[0])))
    check_grad(lambda a: tj.cov(a, fweights=T(fw)), lambda a: torch.cov(a, fweights=t(fw)), z)
    check_grad(tj.corrcoef, torch.corrcoef, z)
    with pytest.raises(RuntimeError, match="fweights"):
        tj.cov(T(z), fweights=T(aw))


def test_bins():
    xi = RNG.integers(0, 5, 30)
    w32 = RNG.random(30).astype(np.float32)
    same(tj.bincount(T(xi)), torch.bincount(t(xi)))
    same(tj.bincount(T(xi), T(w32), 9), torch.bincount(t(xi), t(w32), 9))
    same(T(xi).bincount(T(xi)), t(xi).bincount(t(xi)))          # int weights: float64
    same(tj.bincount(T(xi[:0])), torch.bincount(t(xi[:0])))
    same(tj.bincount(T(xi[:1]), minlength=2), torch.bincount(t(xi[:1]), minlength=2))
    with pytest.raises(RuntimeError, match="non-negative"):
        tj.bincount(T(xi - 1))
    with pytest.raises(RuntimeError, match="bincount"):
        tj.bincount(T(xi * 1.0))
    y = RNG.standard_normal(40).astype(np.float32)
    yn = y.copy()
    yn[3] = np.nan
    same(tj.histc(T(y), bins=7), torch.histc(t(y), bins=7))
    same(T(yn).histc(5, -1, 1), t(yn).histc(5, -1, 1))
    same(tj.histc(T(np.array([2.0, 2.0])), 4), torch.histc(t(np.array([2.0, 2.0])), 4))
    with pytest.raises(RuntimeError, match="not finite"):
        tj.histc(T(yn))
    edges = np.array([-2, -0.5, 0, 0.3, 3], np.float32)
    for args, kw in [((7,), {}), ((4,), {"range": (-1.0, 1.0)}), ((5,), {"density": True}),
                     ((3,), {"weight": np.abs(y)}), ((edges,), {}), ((edges,), {"density": True})]:
        kt = {k: (t(v) if isinstance(v, np.ndarray) else v) for k, v in kw.items()}
        kj = {k: (T(v) if isinstance(v, np.ndarray) else v) for k, v in kw.items()}
        aj = [T(a) if isinstance(a, np.ndarray) else a for a in args]
        at = [t(a) if isinstance(a, np.ndarray) else a for a in args]
        same(tuple(tj.histogram(T(y), *aj, **kj)), tuple(torch.histogram(t(y), *at, **kt)), 1e-6)
    for n in (0, 1):
        same(tuple(tj.histogram(T(y[:n]), 2)), tuple(torch.histogram(t(y[:n]), 2)))


def test_scatter_family_values_and_grads():
    x = RNG.standard_normal((3, 4))
    i0, i1 = np.array([0, 2, 0]), np.array([1, -1, 1])
    check_grad(lambda a: tj.take(a, T(np.array([[0, -1], [5, 2]]))),
               lambda a: torch.take(a, t(np.array([[0, -1], [5, 2]]))), x)
    same(tj.take(T(x).T, T(np.array([1, 2]))), torch.take(t(x).T, t(np.array([1, 2]))))
    same(tj.take(T(x), T(np.zeros(0, np.int64))), torch.take(t(x), t(np.zeros(0, np.int64))))
    src = RNG.standard_normal(3)
    for acc in (False, True):
        # (a position written twice: accumulate adds; without, the last write wins, and every
        # write gets its position's gradient, as torch's)
        pos, j1 = [0, -1, 0], i1
        check_grad(lambda a, s: tj.put(a, T(np.array(pos)), s, acc),
                   lambda a, s: torch.put(a, t(np.array(pos)), s, acc), x, src)
        check_grad(lambda a, v: tj.index_put(a, (T(i0), T(j1)), v, acc),
                   lambda a, v: torch.index_put(a, (t(i0), t(j1)), v, acc), x, src)
        rows = i0
        check_grad(lambda a, v: a.index_put((T(rows),), v, acc),
                   lambda a, v: a.index_put((t(rows),), v, acc), x, RNG.standard_normal(4))
    same(tj.put(T(x), T(np.array([0, 0])), T(np.array([np.inf, 2.0]))),
         torch.put(t(x), t(np.array([0, 0])), t(np.array([np.inf, 2.0]))))
    same(tj.index_put(T(x), (T(x > 0),), T(np.float64(1.0))),
         torch.index_put(t(x), (t(x > 0),), t(np.float64(1.0))))
    m = x > 0.2
    check_grad(lambda a, s: tj.masked_scatter(a, T(m), s),
               lambda a, s: torch.masked_scatter(a, t(m), s), x, RNG.standard_normal(13))
    same(tj.masked_scatter(T(x), T(m[0]), T(np.arange(12.0))),      # broadcast mask
         torch.masked_scatter(t(x), t(m[0]), t(np.arange(12.0))))
    with pytest.raises(RuntimeError, match="masked_scatter"):
        tj.masked_scatter(T(x), T(np.ones((3, 4), bool)), T(np.arange(11.0)))
    check_grad(lambda a, s: tj.diagonal_scatter(a, s, 1), lambda a, s: torch.diagonal_scatter(a, s, 1),
               x, RNG.standard_normal(3))
    check_grad(lambda a, s: tj.select_scatter(a, s, 1, -1),
               lambda a, s: torch.select_scatter(a, s, 1, -1), x, RNG.standard_normal(3))
    check_grad(lambda a, s: tj.slice_scatter(a, s, 1, 0, 4, 2),
               lambda a, s: torch.slice_scatter(a, s, 1, 0, 4, 2), x, RNG.standard_normal((3, 2)))
    same(tj.slice_scatter(T(x.astype(np.float32)), T(np.ones((1, 4))), 0, 1, 2),   # src cast
         torch.slice_scatter(t(x.astype(np.float32)), t(np.ones((1, 4))), 0, 1, 2))
    check_grad(lambda a: tj.as_strided(a, (3, 3), (1, 2), 1),
               lambda a: torch.as_strided(a, (3, 3), (1, 2), 1), x)       # overlapping reads
    with pytest.raises(RuntimeError, match="out of bounds"):
        tj.as_strided(T(x), (4, 4), (4, 1))
    with pytest.raises(NotImplementedError, match="contiguous"):
        tj.as_strided(T(x).T, (2,), (1,))
    with pytest.raises(NotImplementedError, match="storage_offset"):
        tj.as_strided(T(x)[1:], (2,), (1,), 0)
    same(T(x)[1:].as_strided((2, 2), (1, 1)), t(x)[1:].as_strided((2, 2), (1, 1)))
    with pytest.raises(IndexError, match="out of range"):
        tj.take(T(x), T(np.array([12])))
    y = T(x.copy())
    y.put_(T(np.array([1])), T(np.array([5.0])))
    y.index_put_((T(np.array([2])),), T(np.float64(7.0)), accumulate=True)
    y.masked_scatter_(T(m), T(np.arange(12.0)))
    ref = t(x.copy())
    ref.put_(t(np.array([1])), t(np.array([5.0])))
    ref.index_put_((t(np.array([2])),), t(np.float64(7.0)), accumulate=True)
    ref.masked_scatter_(t(m), t(np.arange(12.0)))
    same(y, ref)


def test_assorted():
    a, b = RNG.integers(0, 5, (3, 4)), np.array([1, 3, 7])
    same(tj.isin(T(a), T(b)), torch.isin(t(a), t(b)))
    same(tj.isin(T(a).T, 2, invert=True), torch.isin(t(a).T, 2, invert=True))
    same(tj.isin(T(a), T(b[:0])), torch.isin(t(a), t(b[:0])))
    same(tj.isin(T(a), T(b * 1.5)), torch.isin(t(a), t(b * 1.5)))
    with pytest.raises(RuntimeError, match="bool"):
        tj.isin(T(a), T(np.array([True])))
    same(tj.broadcast_shapes((3, 1), (4,), 1), torch.broadcast_shapes((3, 1), (4,), 1))
    same(tj.broadcast_tensors(T(a[:, :1]), T(b[:1])), torch.broadcast_tensors(t(a[:, :1]), t(b[:1])))
    with pytest.raises(RuntimeError, match="broadcast"):
        tj.broadcast_shapes((3,), (4,))
    same(tj.block_diag(T(np.ones((2, 2))), T(np.array(3)), T(np.arange(3.0))),
         torch.block_diag(t(np.ones((2, 2))), t(np.array(3)), t(np.arange(3.0))))
    same(tj.vander(T(b)), torch.vander(t(b)))
    same(tj.vander(T(b[:0]), 0), torch.vander(t(b[:0]), 0))
    y, xs = RNG.standard_normal((3, 5)), np.cumsum(RNG.random(5))
    # (torch.vander's own backward fails, an in-place cumprod: the gradient of x^j instead)
    check_grad(lambda v: tj.vander(v, 4, True), lambda v: _vander_pow(v, 4).flip(1), xs)
    check_grad(lambda v, p: tj.trapezoid(v, p), lambda v, p: torch.trapezoid(v, p), y, xs)
    check_grad(lambda v: tj.cumulative_trapezoid(v, dx=0.5, dim=0),
               lambda v: torch.cumulative_trapezoid(v, dx=0.5, dim=0), y)
    same(tj.trapz(T(y), 0.3), torch.trapz(t(y), dx=0.3))
    same(tj.trapezoid(T(b)), torch.trapezoid(t(b)))
    for n in (0, 1):
        same(tj.trapezoid(T(y[:, :n])), torch.trapezoid(t(y[:, :n])))
    idx = np.array([0, 5, -1, 11])
    same(tj.unravel_index(T(idx), (3, 4)), torch.unravel_index(t(idx), (3, 4)))
    with pytest.raises(IndexError, match="out of bounds"):
        tj.unravel_index(T(np.array([12])), (3, 4))
    for r, rep in ((2, False), (3, True), (0, False), (5, False)):
        same(tj.combinations(T(b), r, rep), torch.combinations(t(b), r, rep))
    check_grad(lambda v: tj.combinations(v, 2), lambda v: torch.combinations(v, 2), xs)
    z = RNG.standard_normal((3, 4, 2))
    for p, dim, mx in ((2, 1, 1.0), (1, 0, 2.0), (float("inf"), 2, 0.5), (3, -1, 0.5)):
        check_grad(lambda v: tj.renorm(v, p, dim, mx), lambda v: torch.renorm(v, p, dim, mx), z)
    check_grad(tj.inner, torch.inner, z, y[:, :2])
    check_grad(tj.vdot, torch.vdot, xs, xs[::-1].copy())
    check_grad(lambda p, q: tj.chain_matmul(p, q, p), lambda p, q: torch.linalg.multi_dot([p, q, p]),
               y[:, :3], y[:, 2:])
    with pytest.raises(RuntimeError, match="dtype"):
        tj.vdot(T(xs), T(xs.astype(np.float32)))


def test_compiled():
    """One compiled function over the ops that compile, its values and gradients (the
    compiled backward) against torch's; bincount under compile needs minlength."""
    x = RNG.standard_normal((4, 5))
    xi = RNG.integers(0, 4, 12)
    q = np.array([0.1, 0.5, 0.8])
    m = x > 0
    fw = RNG.integers(1, 3, 5)

    def body(lib, a, ints, T_):
        outs = [lib.cummax(a, 1).values, lib.cummin(a, 0).values, lib.nansum(a, 0),
                lib.quantile(a, T_(q), 1), lib.nanquantile(a, 0.3, 0), lib.mode(a, 1).values,
                lib.cov(a, fweights=T_(fw)), lib.take(a, T_(np.array([0, -1, 7]))),
                lib.index_put(a, (T_(np.array([1, 1])),), T_(np.array(2.0)), accumulate=True),
                lib.index_put(a, (T_(np.array([2, 0, 2])),), a[1:4] * 3.0),
                lib.masked_scatter(a, T_(m), a.flip(1)), lib.slice_scatter(a, a[:, :2] * 2, 1, 3),
                lib.diagonal_scatter(a, a[0, :4], 0), lib.as_strided(a * 1.0, (3, 3), (2, 1)),
                lib.renorm(a, 2, 0, 1.0), lib.inner(a, a),
                lib.cumulative_trapezoid(a), (lib.vander(a[0], 3) if lib is tj else _vander_pow(a[0], 3)),
                lib.combinations(a[0]), lib.block_diag(a, a[0])]
        counts = [lib.bincount(ints, minlength=4), lib.histc(a.detach(), 6),
                  lib.histogram(a.detach(), 5).hist, lib.isin(ints, T_(np.array([1, 3]))),
                  lib.unravel_index(ints, (4, 4))[1]]
        loss = sum((o * (k + 1.0)).sum() for k, o in enumerate(outs))
        return (loss,) + tuple(outs) + tuple(counts)

    f = tj.compile(lambda a, ints: body(tj, a, ints, T))
    xa = T(x, True)
    ours = f(xa, T(xi))
    xt = t(x, True)
    ref = body(torch, xt, t(xi), t)
    same(ours, ref)
    ours[0].backward()
    ref[0].backward()
    same(xa.grad, xt.grad)
    with pytest.raises(RuntimeError, match="minlength"):
        f(T(x), T(xi + 2))
    with pytest.raises(RuntimeError, match="minlength"):
        tj.compile(lambda v: tj.bincount(v))(T(xi))
