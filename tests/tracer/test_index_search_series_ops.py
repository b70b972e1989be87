"""index_add, scatter, scatter_reduce, masked_select, kthvalue, median, searchsorted, bucketize,
isclose, allclose, unique, logcumsumexp, logaddexp, diff, cross, cdist and the float tests
against torch on the same inputs: values and gradients (float32 and float64, sizes 0 and 1,
non-contiguous inputs), eagerly and inside tj.compile where the op compiles."""
import numpy as np
import pytest

import tracejit as tj

torch = pytest.importorskip("torch")

DTYPES = [np.float32, np.float64]
TOL = {np.float32: 2e-5, np.float64: 1e-10}


def _run(jf, tf, xs, dtype, compiled=False, grad=True):
    """Values and gradients (for a random cotangent) of jf on tracejit and tf on torch."""
    rng = np.random.default_rng(7)
    tx = [torch.tensor(np.ascontiguousarray(x), requires_grad=grad and x.dtype.kind == "f") for x in xs]
    r = tf(*tx)
    jx = [tj.tensor(x, requires_grad=grad and x.dtype.kind == "f") for x in xs]
    if compiled:
        if grad:
            def loss(*a, g):
                return (jf(*a) * g).sum()
            g = rng.standard_normal(tuple(r.shape)).astype(dtype)
            value = tj.compile(jf)(*[tj.tensor(x) for x in xs])
            grads = tj.grad(lambda *a: loss(*a, g=tj.tensor(g)),
                            argnums=tuple(i for i, x in enumerate(xs) if x.dtype.kind == "f")
                            )(*[tj.tensor(x) for x in xs])
            grads = grads if isinstance(grads, tuple) else (grads,)
            r.backward(torch.tensor(g))
            tgrads = [t.grad for t, x in zip(tx, xs) if x.dtype.kind == "f"]
            _close(value, r, dtype)
            for a, b in zip(grads, tgrads):
                _close(a, b, dtype)
            return
        _close(tj.compile(jf)(*jx), r, dtype)
        return
    o = jf(*jx)
    _close(o, r, dtype)
    if grad and r.requires_grad:
        g = rng.standard_normal(tuple(r.shape)).astype(dtype)
        r.backward(torch.tensor(g))
        o.backward(tj.tensor(g))
        for a, b, x in zip(jx, tx, xs):
            if x.dtype.kind == "f":
                _close(a.grad, b.grad, dtype)


def _close(a, b, dtype):
    a = a.detach().numpy() if hasattr(a, "detach") else np.asarray(a)
    b = b.detach().numpy()
    assert a.shape == b.shape, (a.shape, b.shape)
    if b.dtype.kind in "biu":
        np.testing.assert_array_equal(a, b)
    else:
        np.testing.assert_allclose(a, b, rtol=TOL[dtype], atol=TOL[dtype])


@pytest.fixture
def rng():
    return np.random.default_rng(0)


# -- index_add, scatter, scatter_reduce ---------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("compiled", [False, True])
def test_index_add(rng, dtype, compiled):
    x = rng.standard_normal((5, 3)).astype(dtype)
    s = rng.standard_normal((3, 4)).astype(dtype)[:, ::-1].T.copy()[:, :3]  # (4, 3)
    idx = np.array([0, 2, 2, 4])
    _run(lambda a, i, b: tj.index_add(a, 0, i, b, alpha=2.0),
         lambda a, i, b: torch.index_add(a, 0, i, b, alpha=2.0), [x, idx, s], dtype, compiled)
    x2 = rng.standard_normal((3, 6)).astype(dtype)[:, ::2]               # non-contiguous
    _run(lambda a, i, b: tj.index_add(a, 1, i, b), lambda a, i, b: torch.index_add(a, 1, i, b),
         [x2, np.array([1, 1]), rng.standard_normal((3, 2)).astype(dtype)], dtype, compiled)


def test_index_add_sizes_and_inplace(rng):
    x = np.zeros((0, 3), np.float32)
    _run(lambda a, i, b: tj.index_add(a, 1, i, b), lambda a, i, b: torch.index_add(a, 1, i, b),
         [x, np.array([2]), np.zeros((0, 1), np.float32)], np.float32)
    _run(lambda a, i, b: tj.index_add(a, 0, i, b), lambda a, i, b: torch.index_add(a, 0, i, b),
         [np.ones(1, np.float32), np.array([0]), np.full(1, 3, np.float32)], np.float32)
    t = tj.zeros(3, 2)
    t.index_add_(0, tj.tensor([0, 0, 2]), tj.ones(3, 2))
    np.testing.assert_array_equal(t.numpy(), [[2, 2], [0, 0], [1, 1]])


def test_index_add_errors():
    with pytest.raises(RuntimeError, match="index_add.*same scalar type"):
        tj.index_add(tj.zeros(3), 0, tj.tensor([0]), tj.ones(1, dtype=tj.float64))
    with pytest.raises(RuntimeError, match="index_add.*source"):
        tj.index_add(tj.zeros(3, 2), 0, tj.tensor([0]), tj.ones(2, 2))
    with pytest.raises(IndexError, match="index_add.*out of range"):
        tj.index_add(tj.zeros(3), 0, tj.tensor([5]), tj.ones(1))
    with pytest.raises(IndexError, match="index_add.*out of range"):
        tj.index_add(tj.zeros(3), 0, tj.tensor([-1]), tj.ones(1))
    with pytest.raises(RuntimeError, match="index_add.*integer"):
        tj.index_add(tj.zeros(3), 0, tj.tensor([0.5]), tj.ones(1))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("compiled", [False, True])
def test_scatter_src_and_value(rng, dtype, compiled):
    x = rng.standard_normal((4, 3)).astype(dtype)
    idx = np.array([[0, 1, 2], [3, 0, 1]])          # no repeated position: one answer
    src = rng.standard_normal((2, 3)).astype(dtype)
    _run(lambda a, i, b: tj.scatter(a, 0, i, b), lambda a, i, b: torch.scatter(a, 0, i, b),
         [x, idx, src], dtype, compiled)
    big = rng.standard_normal((3, 4)).astype(dtype)   # larger than index: its leading part
    _run(lambda a, i, b: tj.scatter(a, 0, i, b), lambda a, i, b: torch.scatter(a, 0, i, b),
         [x, idx, big], dtype, compiled, grad=False)
    _run(lambda a, i: tj.scatter(a, 0, i, value=-2.5),
         lambda a, i: torch.scatter(a, 0, i, -2.5), [x, idx], dtype, compiled)


def test_scatter_repeated_index_eager_last_write_wins():
    x = tj.zeros(3)
    out = tj.scatter(x, 0, tj.tensor([1, 1, 2]), tj.tensor([5.0, 7.0, 1.0]))
    ref = torch.zeros(3).scatter(0, torch.tensor([1, 1, 2]), torch.tensor([5.0, 7.0, 1.0]))
    np.testing.assert_array_equal(out.numpy(), ref.numpy())
    # compiled, the index known only at run time: the last write wins too (was the mean), and
    # a losing inf adds nothing
    idx = np.array([[0, 1, 0, 2], [2, 2, 2, 0], [0, 1, 0, 2]])
    src = np.arange(12.0).reshape(3, 4)
    src[0, 0] = np.inf
    for d in (0, 1):
        for i in (idx, idx[:1, :1], idx[:0]):
            f = tj.compile(lambda a, j, b: tj.scatter(a, d, j, b))
            want = torch.zeros(3, 4, dtype=torch.float64).scatter(d, torch.tensor(i),
                                                                    torch.tensor(src))
            np.testing.assert_array_equal(f(np.zeros((3, 4)), i, src).numpy(), want.numpy())
            np.testing.assert_array_equal(tj.scatter(tj.zeros(3, 4, dtype=tj.float64), d,
                                                     tj.tensor(i), tj.tensor(src)).numpy(),
                                          want.numpy())
    t = tj.zeros(2, 2)
    t.scatter_(1, tj.tensor([[1], [0]]), 3.0)
    np.testing.assert_array_equal(t.numpy(), [[0, 3], [3, 0]])
    t.scatter_add_(1, tj.tensor([[1], [1]]), tj.ones(2, 1))
    np.testing.assert_array_equal(t.numpy(), [[0, 4], [3, 1]])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduce", ["sum", "mean", "amax", "amin", "prod"])
@pytest.mark.parametrize("include_self", [True, False])
def test_scatter_reduce(rng, dtype, reduce, include_self):
    x = rng.standard_normal((3, 4)).astype(dtype)
    idx = np.array([[0, 1, 0, 3], [0, 1, 1, 3], [2, 2, 0, 3]]) % 3
    src = rng.standard_normal((3, 4)).astype(dtype)
    _run(lambda a, i, b: tj.scatter_reduce(a, 0, i, b, reduce, include_self=include_self),
         lambda a, i, b: torch.scatter_reduce(a, 0, i, b, reduce, include_self=include_self),
         [x, idx, src], dtype)
    if reduce in ("sum", "mean"):
        _run(lambda a, i, b: tj.scatter_reduce(a, 0, i, b, reduce, include_self=include_self),
             lambda a, i, b: torch.scatter_reduce(a, 0, i, b, reduce,
                                                  include_self=include_self),
             [x, idx, src], dtype, compiled=True)


def test_scatter_reduce_errors():
    with pytest.raises(RuntimeError, match="reduce argument must be one of"):
        tj.scatter_reduce(tj.zeros(3), 0, tj.tensor([0]), tj.ones(1), "maximum")
    f = tj.compile(lambda a, i, b: tj.scatter_reduce(a, 0, i, b, "amax"))
    with pytest.raises(RuntimeError, match="scatter_reduce.*amax.*eager"):
        f(tj.zeros(3), tj.tensor([0]), tj.ones(1))


@pytest.mark.parametrize("dtype", DTYPES)
def test_masked_select(rng, dtype):
    x = rng.standard_normal((4, 6)).astype(dtype)[:, ::2]
    m = rng.random((1, 3)) > 0.4
    _run(lambda a: tj.masked_select(a, tj.tensor(m)),
         lambda a: torch.masked_select(a, torch.tensor(m)), [x], dtype)
    _run(lambda a: tj.masked_select(a, tj.tensor(np.zeros((4, 3), bool))),
         lambda a: torch.masked_select(a, torch.zeros((4, 3), dtype=torch.bool)), [x], dtype)
    with pytest.raises(RuntimeError, match="masked_select.*bool"):
        tj.masked_select(tj.tensor(x), tj.tensor(m.astype(np.int64)))
    f = tj.compile(lambda a, mm: tj.masked_select(a, mm))
    with pytest.raises(RuntimeError, match="masked_select.*data"):
        f(tj.tensor(x), tj.tensor(np.ones((4, 3), bool)))


# -- kthvalue, median --------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("compiled", [False, True])
def test_kthvalue_median(rng, dtype, compiled):
    x = rng.standard_normal((5, 8)).astype(dtype)[:, ::2]     # distinct values, non-contiguous
    for jf, tf in [(lambda a: tj.kthvalue(a, 2, dim=1)[0], lambda a: torch.kthvalue(a, 2, 1)[0]),
                   (lambda a: tj.median(a, 0, keepdim=True)[0],
                    lambda a: torch.median(a, 0, keepdim=True)[0]),
                   (lambda a: tj.median(a), lambda a: torch.median(a))]:
        _run(jf, tf, [x], dtype, compiled)
    i = tj.kthvalue(tj.tensor(x), 3, 0).indices.numpy()
    np.testing.assert_array_equal(i, torch.kthvalue(torch.tensor(x), 3, 0).indices.numpy())


def test_median_nan_and_sizes():
    x = np.array([[1.0, np.nan, 3.0, np.nan], [4.0, 2.0, 3.0, 1.0]])
    v, i = tj.median(tj.tensor(x), 1)
    tv, ti = torch.median(torch.tensor(x), 1)
    np.testing.assert_array_equal(np.isnan(v.numpy()), np.isnan(tv.numpy()))
    np.testing.assert_array_equal(i.numpy(), ti.numpy())
    assert tj.median(tj.tensor([2.0])).item() == 2.0
    assert np.isnan(tj.median(tj.zeros(0)).item())
    with pytest.raises(IndexError, match="median.*empty"):
        tj.median(tj.zeros(2, 0), 1)
    with pytest.raises(RuntimeError, match="kthvalue.*out of range"):
        tj.kthvalue(tj.zeros(3), 4)


# -- searchsorted, bucketize -------------------------------------------------------------------
@pytest.mark.parametrize("compiled", [False, True])
def test_searchsorted_bucketize(rng, compiled):
    seq = np.sort(rng.integers(0, 5, 10)).astype(np.float32)
    v = np.array([[-1, 0, 2.5, 3, 5, np.nan]], np.float32)
    seq2 = np.sort(rng.standard_normal((3, 6)), -1)
    v2 = rng.standard_normal((3, 4))
    for right in (False, True):
        _run(lambda s, a: tj.searchsorted(s, a, right=right),
             lambda s, a: torch.searchsorted(s, a, right=right), [seq, v], np.float32,
             compiled, grad=False)
        _run(lambda s, a: tj.searchsorted(s, a, side="right" if right else "left"),
             lambda s, a: torch.searchsorted(s, a, right=right), [seq2, v2], np.float64,
             compiled, grad=False)
        _run(lambda a, b: tj.bucketize(a, b, right=right),
             lambda a, b: torch.bucketize(a, b, right=right), [v, seq], np.float32, compiled,
             grad=False)
    perm = rng.permutation(10)
    out = tj.searchsorted(tj.tensor(seq[perm]), tj.tensor(v), sorter=tj.tensor(np.argsort(
        seq[perm], kind="stable")))
    ref = torch.searchsorted(torch.tensor(seq), torch.tensor(v))
    np.testing.assert_array_equal(out.numpy(), ref.numpy())
    assert tj.searchsorted(tj.tensor(seq), tj.tensor(v), out_int32=True).dtype == tj.int32
    assert tj.searchsorted(tj.zeros(0), tj.ones(2)).numpy().tolist() == [0, 0]


def test_searchsorted_errors():
    with pytest.raises(RuntimeError, match="searchsorted.*side"):
        tj.searchsorted(tj.zeros(3), tj.ones(2), side="middle")
    with pytest.raises(RuntimeError, match="searchsorted.*conflicting"):
        tj.searchsorted(tj.zeros(3), tj.ones(2), right=True, side="left")
    with pytest.raises(RuntimeError, match="searchsorted.*leading dims"):
        tj.searchsorted(tj.zeros(2, 3), tj.ones(3, 2))
    with pytest.raises(RuntimeError, match="bucketize.*1-d"):
        tj.bucketize(tj.ones(2), tj.zeros(2, 2))


# -- isclose, allclose, unique -----------------------------------------------------------------
@pytest.mark.parametrize("compiled", [False, True])
def test_isclose(compiled):
    a = np.array([1.0, np.inf, -np.inf, np.nan, 1e-9, 2.0, np.inf])
    b = np.array([1.0 + 1e-6, np.inf, np.inf, np.nan, 0.0, 2.1, 1.0])
    for equal_nan in (False, True):
        _run(lambda x, y: tj.isclose(x, y, equal_nan=equal_nan),
             lambda x, y: torch.isclose(x, y, equal_nan=equal_nan), [a, b], np.float64,
             compiled, grad=False)
        _run(lambda x, y: tj.isclose(x, y, rtol=0.1, atol=0.0, equal_nan=equal_nan),
             lambda x, y: torch.isclose(x, y, rtol=0.1, atol=0.0, equal_nan=equal_nan),
             [a.astype(np.float32), b.astype(np.float32)], np.float32, compiled, grad=False)
    assert tj.allclose(tj.tensor(a[:2]), tj.tensor(b[:2])) is True
    assert tj.allclose(tj.tensor(a), tj.tensor(b)) is False
    with pytest.raises(RuntimeError, match="isclose.*same dtype"):
        tj.isclose(tj.ones(2), tj.ones(2, dtype=tj.float64))
    with pytest.raises(RuntimeError, match="allclose.*compile"):
        tj.compile(lambda x: tj.allclose(x, x))(tj.ones(2))


def test_unique(rng):
    u = rng.integers(0, 4, (3, 5))[:, ::2]
    for kw in [{}, dict(return_inverse=True, return_counts=True),
               dict(dim=0, return_inverse=True, return_counts=True), dict(dim=1,
                                                                       return_counts=True)]:
        o = tj.unique(tj.tensor(u), **kw)
        r = torch.unique(torch.tensor(u), **kw)
        o, r = (o if isinstance(o, tuple) else (o,)), (r if isinstance(r, tuple) else (r,))
        assert len(o) == len(r)
        for a, b in zip(o, r):
            _close(a, b, np.float64)
    f = np.array([2.5, 1.0, 2.5], np.float32)
    _close(tj.unique(tj.tensor(f)), torch.unique(torch.tensor(f)), np.float32)
    _close(tj.unique(tj.zeros(0)), torch.unique(torch.zeros(0)), np.float32)
    nan = np.array([1.0, np.nan, np.nan, 2.0, 1.0])          # each NaN its own element, as torch
    for a, b in zip(tj.unique(tj.tensor(nan), return_inverse=True, return_counts=True),
                    torch.unique(torch.tensor(nan), return_inverse=True, return_counts=True)):
        _close(a, b, np.float64)
    with pytest.raises(RuntimeError, match="unique.*eagerly"):
        tj.compile(lambda x: tj.unique(x))(tj.ones(3))


# -- logcumsumexp, logaddexp, diff, cross, cdist -----------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("compiled", [False, True])
def test_logcumsumexp(rng, dtype, compiled):
    x = (rng.standard_normal((3, 14)) * 30).astype(dtype)[:, ::2]
    x[0, 0] = -1000.0           # far below the row's max: exp-cumsum-log would give -inf
    for d in (0, 1, -1):
        _run(lambda a: tj.logcumsumexp(a, d), lambda a: torch.logcumsumexp(a, d), [x], dtype,
             compiled)
    _run(lambda a: tj.logcumsumexp(a, 0), lambda a: torch.logcumsumexp(a, 0),
         [np.ones((1, 2), dtype)], dtype, compiled)
    _run(lambda a: tj.logcumsumexp(a, 1), lambda a: torch.logcumsumexp(a, 1),
         [np.ones((2, 0), dtype)], dtype)
    edge = np.array([-np.inf, 0.0, -np.inf], dtype)
    _close(tj.logcumsumexp(tj.tensor(edge), 0), torch.logcumsumexp(torch.tensor(edge), 0), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_logaddexp_diff_cross(rng, dtype):
    x = rng.standard_normal((4, 6)).astype(dtype)
    y = rng.standard_normal((4, 6)).astype(dtype)[:, ::-1]
    _run(tj.logaddexp, torch.logaddexp, [x * 50, y], dtype, compiled=True)
    _run(tj.logaddexp, torch.logaddexp, [x, y], dtype)
    _run(lambda a: tj.diff(a, 2, 1), lambda a: torch.diff(a, 2, 1), [x], dtype)
    _run(lambda a, p: tj.diff(a, 1, 0, prepend=p, append=p),
         lambda a, p: torch.diff(a, 1, 0, prepend=p, append=p), [x, y[:1].copy()], dtype,
         compiled=True)
    _run(lambda a: tj.diff(a, 1, 0), lambda a: torch.diff(a, 1, 0), [x[:1]], dtype)
    a3 = rng.standard_normal((5, 3)).astype(dtype)
    b3 = rng.standard_normal((5, 3)).astype(dtype)
    _run(lambda a, b: tj.cross(a, b, dim=1), lambda a, b: torch.linalg.cross(a, b, dim=1),
         [a3, b3], dtype, compiled=True)
    _run(lambda a, b: tj.cross(a, b), lambda a, b: torch.cross(a, b, dim=1),
         [a3.T.copy().T, b3[:1].copy()], dtype)
    with pytest.raises(RuntimeError, match="cross.*size 3"):
        tj.cross(tj.ones(4, 2), tj.ones(4, 2), dim=1)
    with pytest.raises(RuntimeError, match="diff.*one-dimensional"):
        tj.diff(tj.tensor(1.0))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("p", [2.0, 1.0, 3.0, np.inf, 0.0])
def test_cdist(rng, dtype, p):
    a = rng.standard_normal((2, 5, 3)).astype(dtype)
    b = rng.standard_normal((2, 4, 3)).astype(dtype)
    b[0, 0] = a[0, 0]               # a zero distance: gradient 0, as torch
    mode = "donot_use_mm_for_euclid_dist"
    _run(lambda x, y: tj.cdist(x, y, p), lambda x, y: torch.cdist(x, y, p, compute_mode=mode),
         [a, b], dtype, grad=p != 0)
    _run(lambda x, y: tj.cdist(x, y, p), lambda x, y: torch.cdist(x, y, p, compute_mode=mode),
         [a[0, :, ::2].copy().T.copy().T, b[1, :1, ::2]], dtype, compiled=p != 0, grad=p != 0)


def test_cdist_sizes_errors():
    _close(tj.cdist(tj.zeros(0, 3), tj.ones(2, 3)), torch.cdist(torch.zeros(0, 3),
                                                               torch.ones(2, 3)), np.float32)
    with pytest.raises(RuntimeError, match="cdist.*columns"):
        tj.cdist(tj.ones(2, 3), tj.ones(2, 4))
    with pytest.raises(RuntimeError, match="cdist.*2D"):
        tj.cdist(tj.ones(3), tj.ones(3))


def test_float_tests():
    x = np.array([1.0, np.nan, np.inf, -np.inf, 0.0])
    for f in ("isnan", "isinf", "isfinite"):
        np.testing.assert_array_equal(getattr(tj, f)(tj.tensor(x)).numpy(),
                                      getattr(torch, f)(torch.tensor(x)).numpy())
        np.testing.assert_array_equal(getattr(tj, f)(tj.tensor([1, 2])).numpy(),
                                      getattr(torch, f)(torch.tensor([1, 2])).numpy())


@pytest.mark.parametrize("dtype", DTYPES)
def test_on_transposed_views(rng, dtype):
    """Inputs that are views of other tensors (a transpose: strides not row-major)."""
    x = rng.standard_normal((6, 4)).astype(dtype)
    y = rng.standard_normal((6, 4)).astype(dtype)
    cases = [
        (lambda a: tj.logcumsumexp(a.t(), 1), lambda a: torch.logcumsumexp(a.t(), 1)),
        (lambda a: tj.median(a.t(), 1)[0], lambda a: torch.median(a.t(), 1)[0]),
        (lambda a: tj.kthvalue(a.t(), 3, 1)[0], lambda a: torch.kthvalue(a.t(), 3, 1)[0]),
        (lambda a: tj.diff(a.t(), 1, 1), lambda a: torch.diff(a.t(), 1, 1)),
        (lambda a: tj.cdist(a.t(), a.t()[:2]),
         lambda a: torch.cdist(a.t(), a.t()[:2], compute_mode="donot_use_mm_for_euclid_dist")),
        (lambda a: tj.index_add(a.t(), 1, tj.tensor([0, 5]), a.t()[:, :2]),
         lambda a: torch.index_add(a.t(), 1, torch.tensor([0, 5]), a.t()[:, :2])),
        (lambda a: tj.masked_select(a.t(), tj.tensor(x.T > 0)),
         lambda a: torch.masked_select(a.t(), torch.tensor(x.T > 0))),
    ]
    for jf, tf in cases:
        _run(jf, tf, [x], dtype)
    _run(lambda a, b: tj.cross(a.t()[:3], b.t()[:3], dim=0),
         lambda a, b: torch.linalg.cross(a.t()[:3], b.t()[:3], dim=0), [x, y], dtype)


# -- an op that changes nothing still returns a new tensor (fuzz seed 70050) ---------------------
@pytest.mark.parametrize("op", ["scatter", "scatter_value", "scatter_add", "scatter_reduce",
                                "index_add", "diff0", "diff_empty"])
def test_ops_that_write_nothing_return_a_new_tensor(op):
    def run(lib):
        x = lib.tensor(np.ones((3, 5)) if op != "diff_empty" else np.ones((3, 0)),
                       requires_grad=True)
        src = lib.tensor(np.ones((0, 5)), requires_grad=True)
        idx = lib.tensor(np.zeros((0, 5), np.int64))
        base = x * 1.0
        out = {"scatter": lambda: base.scatter(1, idx, src),
               "scatter_value": lambda: base.scatter(1, idx, value=2.0),
               "scatter_add": lambda: base.scatter_add(1, idx, src),
               "scatter_reduce": lambda: base.scatter_reduce(1, idx, src, "sum"),
               "index_add": lambda: base.index_add(0, lib.tensor(np.zeros(0, np.int64)), src),
               "diff0": lambda: lib.diff(base, n=0),
               "diff_empty": lambda: lib.diff(base, dim=1)}[op]()
        assert out is not base or lib is torch    # (torch.diff of an empty dim returns it)
        (out * 2).sum().backward()
        with lib.no_grad():
            base.mul_(3)            # must not reach out
        return out, x.grad, src.grad
    got, want = run(tj), run(torch)
    for a, b in zip(got, want):
        assert (a is None) == (b is None)
        if a is not None:
            _close(a, b, np.float64)
