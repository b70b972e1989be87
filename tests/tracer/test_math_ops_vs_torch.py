"""tracejit/tracer/math_ops.py against torch: values (bit-exact for the roundings, within an
ulp or two for log1p/expm1/hypot), gradients, eagerly and under tj.compile (values and the
gradient through tj.grad), float32 and float64, edge values (0, -0.0, inf, NaN), size-0/1,
broadcasting, non-contiguous inputs, integer inputs and errors as torch."""
import numpy as np
import pytest

import tracejit as tj

torch = pytest.importorskip("torch")

EDGE = [0.0, -0.0, np.inf, -np.inf, np.nan, 1e-300, -1e-300, 1e-8, -1e-8, 1e-3, -1e-3, 1.0, -1.0,
        100.0, -100.0, 0.5, -0.5, 1.5, -1.5, 2.5, -2.5, 0.49999999999999994, 3.7, -3.7,
        4503599627370497.0, 1e300, -2.0, 1e-40]
FLOATS = ["float32", "float64"]
TJ_DT = {"float32": tj.float32, "float64": tj.float64}


def _edge(dtype):
    with np.errstate(all="ignore"):
        return np.array(EDGE, dtype=dtype)


def _same(a, b, ulps=0):
    a, b = np.asarray(a), np.asarray(b)
    assert a.dtype == b.dtype and a.shape == b.shape, (a.dtype, b.dtype, a.shape, b.shape)
    assert np.array_equal(np.isnan(a), np.isnan(b)), (a, b)
    m = ~np.isnan(a)
    if ulps == 0 or not a.dtype.kind == "f":
        assert np.array_equal(a[m], b[m]), (a, b)
        if a.dtype.kind == "f":     # signs of zero too
            assert np.array_equal(np.signbit(a[m]), np.signbit(b[m])), (a, b)
        return
    eps = np.finfo(a.dtype).eps
    with np.errstate(all="ignore"):
        bad = ~((a == b) | (np.abs(a - b) <= ulps * eps * np.abs(b)))
    assert not bad[m].any(), (a[m][bad[m]], b[m][bad[m]])


UNARY = {"round": 0, "floor": 0, "ceil": 0, "trunc": 0, "fix": 0, "frac": 0, "log1p": 1,
         "expm1": 1, "sinc": 4, "deg2rad": 0, "rad2deg": 0, "nan_to_num": 0}


@pytest.mark.parametrize("compiled", [False, True])
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("name", sorted(UNARY))
def test_unary_values_edges(name, dtype, compiled):
    x = _edge(dtype)
    f = getattr(tj, name)
    fn = tj.compile(f) if compiled else f
    with np.errstate(all="ignore"):
        want = getattr(torch, name)(torch.tensor(x)).numpy()
    _same(fn(tj.tensor(x)).numpy(), want, UNARY[name])
    _same(getattr(tj.tensor(x), name)().numpy(), want, UNARY[name])   # the Tensor method


@pytest.mark.parametrize("dtype", FLOATS)
def test_log1p_expm1_tiny_and_large(dtype):
    x = np.array([1e-300, 1e-30, 1e-8, 1e-3, 1, 100, -1e-8, -1e-3, -0.5, -1, 700, 88, -800,
                  3e38], dtype=dtype)
    for name in ("log1p", "expm1"):
        with np.errstate(all="ignore"):
            want = getattr(torch, name)(torch.tensor(x)).numpy()
        _same(getattr(tj, name)(tj.tensor(x)).numpy(), want, 1)
        _same(tj.compile(getattr(tj, name))(tj.tensor(x)).numpy(), want, 1)


@pytest.mark.parametrize("dtype", FLOATS)
def test_round_half_to_even_exhaustive_halves(dtype):
    x = (np.arange(-4000, 4000, dtype=np.float64) / 2 + np.array([0.0, 0.25])[:, None]).ravel()
    x = np.concatenate([x, np.nextafter(x, np.inf), np.nextafter(x, -np.inf)]).astype(dtype)
    _same(tj.round(tj.tensor(x)).numpy(), np.round(x))
    _same(tj.compile(tj.round)(tj.tensor(x)).numpy(), torch.round(torch.tensor(x)).numpy())


@pytest.mark.parametrize("compiled", [False, True])
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("decimals", [1, 2, 3, -1, -2])
def test_round_decimals(decimals, dtype, compiled):
    x = (np.random.default_rng(0).standard_normal(200) * 300).astype(dtype)
    x = np.concatenate([x, np.array([0.125, -0.125, 2.5e-3, 15.0, 25.0, -0.0], dtype)])
    fn = tj.compile(lambda t: tj.round(t, decimals=decimals)) if compiled else \
        (lambda t: tj.round(t, decimals=decimals))
    want = torch.round(torch.tensor(x), decimals=decimals).numpy()
    _same(fn(tj.tensor(x)).numpy(), want)


def _torch_grads(f, arrays, w):
    ts = [torch.tensor(a, requires_grad=True) for a in arrays]
    y = f(*ts)
    (y * torch.tensor(w)).sum().backward()
    return y.detach().numpy(), [t.grad.numpy() for t in ts]


def _check_grads(tf, torchf, arrays, ulps=4, compiled=False):
    tt = [torch.tensor(a) for a in arrays]
    w = np.random.default_rng(1).standard_normal(torchf(*tt).shape).astype(arrays[0].dtype)
    want_y, want_g = _torch_grads(torchf, arrays, w)
    loss = (lambda *xs: (tf(*xs) * tj.tensor(w)).sum())
    if compiled:
        gs = tj.compile(tj.grad(loss, argnums=tuple(range(len(arrays)))))(
            *[tj.tensor(a) for a in arrays])
        _same(tj.compile(tf)(*[tj.tensor(a) for a in arrays]).numpy(), want_y, ulps)
    else:
        ts = [tj.tensor(a, requires_grad=True) for a in arrays]
        y = tf(*ts)
        _same(y.detach().numpy(), want_y, ulps)
        loss(*ts).backward()
        gs = [t.grad for t in ts]
    for g, wg in zip(gs, want_g):       # (sums over broadcast dims: in another order)
        g = g.numpy()
        assert g.dtype == wg.dtype and g.shape == wg.shape
        tol = max(ulps, 1) * np.finfo(wg.dtype).eps
        np.testing.assert_allclose(g, wg, rtol=tol, atol=tol * np.abs(wg).max(initial=0))


SMOOTH = np.array([1e-8, -1e-8, 1e-3, 0.3, -0.7, 2.0, 15.0, -3.0, 0.0])
GRAD_UNARY = {"round": SMOOTH, "floor": SMOOTH, "ceil": SMOOTH, "trunc": SMOOTH,
              "frac": SMOOTH, "log1p": SMOOTH, "expm1": SMOOTH, "sinc": SMOOTH,
              "deg2rad": SMOOTH, "rad2deg": SMOOTH,
              "logit": np.array([0.01, 0.3, 0.5, 0.9, 0.999]),
              "nan_to_num": np.array([1.0, np.nan, np.inf, -np.inf, -2.0])}


@pytest.mark.parametrize("compiled", [False, True])
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("name", sorted(GRAD_UNARY))
def test_unary_gradients(name, dtype, compiled):
    x = GRAD_UNARY[name].astype(dtype)
    _check_grads(getattr(tj, name), getattr(torch, name), [x], ulps=8, compiled=compiled)


BINARY = {
    "hypot": (lambda a, b: tj.hypot(a, b), lambda a, b: torch.hypot(a, b)),
    "xlogy": (lambda a, b: tj.xlogy(a, b), lambda a, b: torch.xlogy(a, b)),
    "fmax": (lambda a, b: tj.fmax(a, b), lambda a, b: torch.fmax(a, b)),
    "fmin": (lambda a, b: tj.fmin(a, b), lambda a, b: torch.fmin(a, b)),
    "lerp_s": (lambda a, b: tj.lerp(a, b, 0.3), lambda a, b: torch.lerp(a, b, 0.3)),
    "lerp_hi": (lambda a, b: a.lerp(b, 0.75), lambda a, b: a.lerp(b, 0.75)),
    "float_power": (lambda a, b: tj.float_power(a, b), lambda a, b: torch.float_power(a, b)),
    "true_divide": (lambda a, b: tj.true_divide(a, b), lambda a, b: torch.true_divide(a, b)),
    "clamp_min": (lambda a, b: tj.clamp_min(a, b), lambda a, b: torch.clamp_min(a, b)),
    "clamp_max": (lambda a, b: a.clamp_max(b), lambda a, b: a.clamp_max(b)),
}


@pytest.mark.parametrize("compiled", [False, True])
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("name", sorted(BINARY))
def test_binary_broadcast_values_and_gradients(name, dtype, compiled):
    rng = np.random.default_rng(3)
    a = (rng.standard_normal((3, 4)) * 2).astype(dtype)
    b = np.abs(rng.standard_normal((4,))).astype(dtype) + 0.1
    a[0, 0] = b[0]                           # a tie for fmax/fmin/clamp
    a[1, 1] = 0.0
    if name == "float_power":
        a = np.abs(a) + 0.5
    tf, torchf = BINARY[name]
    _check_grads(tf, torchf, [a, b], ulps=8, compiled=compiled)


@pytest.mark.parametrize("compiled", [False, True])
@pytest.mark.parametrize("dtype", FLOATS)
def test_binary_edge_values(dtype, compiled):
    e = _edge(dtype)
    a, b = e[:, None], e[None, :]
    for name in ("hypot", "fmax", "fmin", "xlogy"):
        f = getattr(tj, name)
        fn = tj.compile(f) if compiled else f
        with np.errstate(all="ignore"):
            want = getattr(torch, name)(torch.tensor(a), torch.tensor(b)).numpy()
        _same(fn(tj.tensor(a), tj.tensor(b)).numpy(), want, 2 if name in ("hypot", "xlogy") else 0)


def test_hypot_no_overflow_or_underflow():
    for dtype, big, tiny in (("float64", 1e300, 1e-300), ("float32", 1e30, 1e-30)):
        a = np.array([big, tiny, 3.0, -big], dtype)
        b = np.array([big, tiny, 4.0, 0.0], dtype)
        _same(tj.hypot(tj.tensor(a), tj.tensor(b)).numpy(),
              torch.hypot(torch.tensor(a), torch.tensor(b)).numpy(), 2)


@pytest.mark.parametrize("compiled", [False, True])
@pytest.mark.parametrize("dtype", FLOATS)
def test_lerp_tensor_weight_addcmul_addcdiv(dtype, compiled):
    rng = np.random.default_rng(4)
    s, e = rng.standard_normal((2, 3)).astype(dtype), rng.standard_normal((3,)).astype(dtype)
    w = np.array([0.0, 0.5, 1.0], dtype)
    _check_grads(lambda a, b, c: tj.lerp(a, b, c), lambda a, b, c: torch.lerp(a, b, c),
                 [s, e, w], compiled=compiled)
    t2 = np.array([[1.5], [-2.0]], dtype)
    _check_grads(lambda a, b, c: tj.addcmul(a, b, c, value=0.5),
                 lambda a, b, c: torch.addcmul(a, b, c, value=0.5), [s, e, t2], compiled=compiled)
    _check_grads(lambda a, b, c: a.addcdiv(b, c, value=-2),
                 lambda a, b, c: a.addcdiv(b, c, value=-2), [s, e, t2], compiled=compiled)


def test_integer_inputs_and_result_dtypes():
    i = np.array([[-3, 0, 7]], dtype=np.int64)
    for name in ("round", "floor", "ceil", "trunc", "nan_to_num"):
        r = getattr(tj, name)(tj.tensor(i))
        assert r.dtype == tj.int64
        np.testing.assert_array_equal(r.numpy(), getattr(torch, name)(torch.tensor(i)).numpy())
    for name in ("log1p", "expm1", "sinc", "deg2rad", "rad2deg", "logit"):
        r = getattr(tj, name)(tj.tensor(i))
        want = getattr(torch, name)(torch.tensor(i)).numpy()
        assert r.numpy().dtype == want.dtype, name
        _same(r.numpy(), want, 4)
    for name in ("xlogy", "fmax", "fmin", "true_divide", "float_power", "clamp_min"):
        r = getattr(tj, name)(tj.tensor(i), tj.tensor(np.array([2], np.int64)))
        want = getattr(torch, name)(torch.tensor(i), torch.tensor([2])).numpy()
        assert r.numpy().dtype == want.dtype, name
        _same(r.numpy(), want, 2)
    r = tj.addcmul(tj.tensor(i), tj.tensor(i), tj.tensor(i), value=2)
    np.testing.assert_array_equal(r.numpy(), torch.addcmul(*[torch.tensor(i)] * 3, value=2))
    h = tj.heaviside(tj.tensor(np.array([-1.0, 0.0, 2.0, np.nan])), tj.tensor(np.array([0.5])))
    _same(h.numpy(), torch.heaviside(torch.tensor([-1.0, 0.0, 2.0, np.nan], dtype=torch.float64),
                                     torch.tensor([0.5], dtype=torch.float64)).numpy())


ERRORS = {
    "frac_int": lambda m, f, i, b: m.frac(i),
    "frac_bool": lambda m, f, i, b: m.frac(b),
    "floor_bool": lambda m, f, i, b: m.floor(b),
    "round_bool": lambda m, f, i, b: m.round(b),
    "round_decimals_int": lambda m, f, i, b: m.round(i, decimals=1),
    "addcdiv_int": lambda m, f, i, b: m.addcdiv(f, i, i),
    "lerp_dtypes": lambda m, f, i, b: m.lerp(f, f.float(), 0.5),
    "lerp_int": lambda m, f, i, b: m.lerp(i, i, 0.5),
    "lerp_weight_dtype": lambda m, f, i, b: m.lerp(f, f, i),
    "heaviside_dtypes": lambda m, f, i, b: m.heaviside(f, f.float()),
    "hypot_int": lambda m, f, i, b: m.hypot(i, i),
    "aminmax_empty": lambda m, f, i, b: m.aminmax(m.zeros((0, 3))),
    "diag_embed_same_dims": lambda m, f, i, b: m.diag_embed(f, 0, 1, 1),
}


@pytest.mark.parametrize("case", sorted(ERRORS))
def test_errors_as_torch(case):
    """The same exception class as torch, naming the op and the user's line."""
    def args(m, tensor):
        return (m, tensor(np.array([1.0, 2.0])), tensor(np.array([1, 2])),
                tensor(np.array([True, False])))
    with pytest.raises(Exception) as want:
        ERRORS[case](*args(torch, torch.tensor))
    with pytest.raises(want.type, match=case.split("_")[0] + r".*test_math_ops_vs_torch.py"):
        ERRORS[case](*args(tj, tj.tensor))


@pytest.mark.parametrize("compiled", [False, True])
def test_sizes_zero_one_and_noncontiguous(compiled):
    for name in ("round", "log1p", "expm1", "frac", "nan_to_num", "sinc"):
        f = tj.compile(getattr(tj, name)) if compiled else getattr(tj, name)
        for shape in ((0,), (1,), (0, 3), ()):
            x = np.full(shape, 0.75)
            _same(f(tj.tensor(x)).numpy(), getattr(torch, name)(torch.tensor(x)).numpy(), 1)
        x = np.arange(24.0).reshape(4, 6) / 7 - 1
        xt = tj.tensor(x).t()[::2]
        _same(f(xt).numpy(), getattr(torch, name)(torch.tensor(x).t()[::2]).numpy(), 1)


def test_nan_to_num_arguments():
    for dtype in FLOATS:
        x = np.array([np.nan, np.inf, -np.inf, 1.0], dtype)
        for kw in ({}, {"nan": 2.0}, {"posinf": 7.0, "neginf": -9.0}, {"nan": None}):
            _same(tj.nan_to_num(tj.tensor(x), **kw).numpy(),
                  torch.nan_to_num(torch.tensor(x), **kw).numpy())


@pytest.mark.parametrize("compiled", [False, True])
def test_aminmax(compiled):
    x = np.array([[3.0, -1.0, 3.0], [0.5, np.nan, 2.0]])
    x2 = np.array([[3.0, -1.0, 3.0], [0.5, 7.0, 2.0]])
    for arr in (x, x2):
        for kw in ({}, {"dim": 1}, {"dim": 0, "keepdim": True}):
            f = (lambda t: tuple(tj.aminmax(t, **kw)))
            got = (tj.compile(f) if compiled else f)(tj.tensor(arr))
            want = torch.aminmax(torch.tensor(arr), **kw)
            _same(got[0].numpy(), want.min.numpy())
            _same(got[1].numpy(), want.max.numpy())
    r = tj.tensor(x2).aminmax()
    assert float(r.min.numpy()) == -1.0 and float(r.max.numpy()) == 7.0


@pytest.mark.parametrize("compiled", [False, True])
@pytest.mark.parametrize("args", [(0, -2, -1), (1, -2, -1), (-2, -2, -1), (1, 0, 2), (0, -1, 0),
                                  (2, 1, 0)])
def test_diag_embed(args, compiled):
    x = np.random.default_rng(5).standard_normal((2, 3))
    _check_grads(lambda t: tj.diag_embed(t, *args), lambda t: torch.diag_embed(t, *args), [x],
                 ulps=0, compiled=compiled)
    _same(tj.diag_embed(tj.tensor(np.zeros((0,)))).numpy(),
          torch.diag_embed(torch.zeros(0, dtype=torch.float64)).numpy())


def test_logit_eps_and_sinc_at_zero_gradient():
    x = np.array([0.0, 1e-8, 0.3, 0.99999, 1.0])
    _check_grads(lambda t: tj.logit(t, eps=1e-6), lambda t: torch.logit(t, eps=1e-6), [x])
    _check_grads(tj.sinc, torch.sinc, [np.array([0.0, 0.25, -1.0])])


DOUBLE = {"log1p": (1, [np.array([1e-8, 0.3, -0.7, 2.0])]),
          "expm1": (1, [np.array([1e-8, 0.3, -0.7, 2.0])]),
          "sinc": (1, [np.array([0.3, -0.7, 2.2])]),
          "logit": (1, [np.array([0.1, 0.3, 0.8])]),
          "hypot": (2, [np.array([0.3, -0.7, 2.0]), np.array([1.5, 0.7, -0.1])]),
          "xlogy": (2, [np.array([0.3, -0.7, 2.0]), np.array([1.5, 0.7, 0.1])]),
          "lerp": (3, [np.array([0.3, -0.7, 2.0]), np.array([1.5, 0.7, 0.1]),
                       np.array([0.2, 0.5, 0.9])])}


@pytest.mark.parametrize("name", sorted(DOUBLE))
def test_double_backward_and_hessian(name):
    """create_graph=True gradients of the gradient, and tj.hessian, as torch's."""
    n, arrays = DOUBLE[name]
    def tf(m, *xs):
        return getattr(m, name)(*xs)
    ts = [torch.tensor(a, requires_grad=True) for a in arrays]
    gs = torch.autograd.grad(tf(torch, *ts).sum(), ts, create_graph=True)
    want = torch.autograd.grad(sum((g * g).sum() for g in gs), ts)
    xs = [tj.tensor(a, requires_grad=True) for a in arrays]
    gs2 = tj.autograd.grad(tf(tj, *xs).sum(), xs, create_graph=True)
    got = tj.autograd.grad(sum((g * g).sum() for g in gs2), xs)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g.numpy(), w.numpy(), rtol=1e-12, atol=1e-14)
    if n == 1:
        h = tj.hessian(lambda v: tf(tj, v).sum())(tj.tensor(arrays[0]))
        wh = torch.autograd.functional.hessian(lambda v: tf(torch, v).sum(),
                                               torch.tensor(arrays[0]))
        np.testing.assert_allclose(h.numpy(), wh.numpy(), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", ["round", "floor", "log1p", "expm1", "sinc", "logit", "frac",
                                  "nan_to_num", "deg2rad", "hypot", "xlogy"])
def test_float16_as_torch(name):
    """float16 bit-exact: sinc, hypot, log1p, expm1 in float32 and rounded once (torch's
    opmath; sinc(60000) would overflow pi x in float16), the others in float16 as torch;
    logit in float32 too, one rounding (torch's float16 kernel rounds twice: 1 ulp off)."""
    x = np.array([1e-4, 1e-3, 0.3, -0.7, 2.0, 2.5, -3.5, 60000, 0.0, -0.0, 0.9, np.inf],
                 np.float16)
    args = (x, x[::-1].copy()) if name in ("hypot", "xlogy") else (x,)
    with np.errstate(all="ignore"):
        want = getattr(torch, name)(*[torch.tensor(a) for a in args]).numpy()
    ulps = 1 if name == "logit" else 0
    _same(getattr(tj, name)(*[tj.tensor(a) for a in args]).numpy(), want, ulps)
    _same(tj.compile(getattr(tj, name))(*[tj.tensor(a) for a in args]).numpy(), want, ulps)


@pytest.mark.parametrize("name", ["log1p", "expm1"])
def test_log1p_expm1_float32_within_an_ulp_of_torch(name):
    """float32 computed in float64 and rounded once: within 1 ulp of torch (and of the exact
    value, NumPy's float64 rounded) over many random values, eager and compiled alike."""
    x = (np.random.default_rng(7).standard_normal(20000) * 3).astype(np.float32)
    x = np.concatenate([x, np.float32(1e-5) * x])
    with np.errstate(all="ignore"):
        want = getattr(torch, name)(torch.tensor(x)).numpy()
        exact = getattr(np, name)(x.astype(np.float64)).astype(np.float32)
    got = getattr(tj, name)(tj.tensor(x)).numpy()
    _same(got, want, 1)
    _same(got, exact, 1)
    _same(tj.compile(getattr(tj, name))(tj.tensor(x)).numpy(), got)
