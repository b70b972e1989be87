"""Numerical semantics that must agree in eager mode, in the reference interpreter and in
generated LLVM code: NaN propagation, sign, float-to-int casts, pow's gradient at a zero base,
linspace's precision, and the one accumulation rule for sums (float32 accumulates in float64 on
every axis and rounds once). CUDA is covered in tests/codegen/test_numerics_backends.py."""
import numpy as np
import pytest

import tracejit as tj

MODES = ("eager", "interpreter", "llvm")
NAN, INF = float("nan"), float("inf")


def run(mode, fn, *args):
    """fn on NumPy arrays in one mode; the results as NumPy arrays (a tuple)."""
    if mode == "eager":
        out = fn(*[tj.tensor(a) for a in args])
    else:
        out = tj.compile(fn, backend=mode)(*args)
    out = out if isinstance(out, tuple) else (out,)
    return tuple(np.asarray(o.numpy()) for o in out)


def grads(mode, fn, *args):
    """d(sum(fn(args)))/d(args) in one mode, as NumPy arrays."""
    loss = lambda *a: fn(*a).sum()            # noqa: E731
    argnums = tuple(range(len(args)))
    if mode == "eager":
        ts = [tj.tensor(a, requires_grad=True) for a in args]
        loss(*ts).backward()
        return [t.grad.numpy() for t in ts]
    return [g.numpy() for g in tj.grad(tj.compile(loss, backend=mode), argnums=argnums)(*args)]


def same(got, want):
    """Equal values and dtype, NaN equal to NaN, and the sign of zero ignored."""
    got, want = np.asarray(got), np.asarray(want)
    assert got.dtype == want.dtype and got.shape == want.shape, (got.dtype, want.dtype)
    np.testing.assert_array_equal(got, want)


# -- NaN propagates (NumPy's rule) ------------------------------------------------------------
X = np.array([[NAN, -1.0, 0.0, 2.0, 0.5], [3.0, NAN, -2.0, 1.0, INF]], np.float32)
Y = np.array([[0.0, NAN, 1.0, 1.0, 0.5], [NAN, 0.0, -3.0, 4.0, 1.0]], np.float32)


@pytest.mark.parametrize("mode", MODES)
def test_nan_wins_in_relu_maximum_minimum_and_clip(mode):
    got = run(mode, lambda a, b: (tj.relu(a), tj.maximum(a, b), tj.minimum(a, b),
                                  tj.clip(a, 0.0, 1.5), tj.clip(a, b, 1.0), tj.clip(a, NAN, 1.0),
                                  tj.clip(a, max=b)), X, Y)
    want = (np.maximum(X, 0), np.maximum(X, Y), np.minimum(X, Y), np.clip(X, 0.0, 1.5),
            np.clip(X, Y, 1.0), np.full_like(X, NAN), np.minimum(X, Y))
    for g, w in zip(got, want):
        same(g, w)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("axes", [0, 1, (0, 1)])
def test_nan_wins_in_max_and_min_reductions(mode, axes):
    got = run(mode, lambda a: (tj.amax(a, axes), tj.amin(a, axes)), X)
    same(got[0], np.max(X, axis=axes))
    same(got[1], np.min(X, axis=axes))


def test_relu_keeps_nan_without_torch():
    # the reason for the change, in one line: relu used to read where(x > 0, x, 0)
    assert np.isnan(tj.relu(tj.tensor([NAN])).numpy()[0])


@pytest.mark.parametrize("mode", MODES)
def test_gradients_at_nan_follow_pytorch(mode):
    torch = pytest.importorskip("torch")
    a, b = (torch.tensor(v, requires_grad=True) for v in (X, Y))
    (torch.relu(a) + torch.maximum(a, b) + 2 * torch.minimum(a, b)
     + 3 * torch.clamp(a, 0.0, 1.5)).sum().backward()
    got = grads(mode, lambda p, q: tj.relu(p) + tj.maximum(p, q) + 2 * tj.minimum(p, q)
                + 3 * tj.clip(p, 0.0, 1.5), X, Y)
    same(got[0], a.grad.numpy())
    same(got[1], b.grad.numpy())


# -- sign and abs -----------------------------------------------------------------------------
S = np.array([NAN, -0.0, 0.0, 2.5, -INF, INF, -1e-40], np.float32)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sign_of_nan_and_zero_is_plus_zero(mode, dtype):
    x = S.astype(dtype)
    (s,) = run(mode, tj.sign, x)
    same(s, np.array([0, 0, 0, 1, -1, 1, -1], dtype))
    assert not np.signbit(s[:3]).any()          # +0.0, as torch.sign
    (g,) = grads(mode, tj.abs, x)
    same(g, np.array([0, 0, 0, 1, -1, 1, -1], dtype))


def test_sign_and_abs_gradient_match_pytorch():
    torch = pytest.importorskip("torch")
    t = torch.tensor(S, requires_grad=True)
    torch.abs(t).sum().backward()
    x = tj.tensor(S, requires_grad=True)
    tj.abs(x).sum().backward()
    same(x.grad.numpy(), t.grad.numpy())
    same(tj.sign(tj.tensor(S)).numpy(), torch.sign(torch.tensor(S)).numpy())


@pytest.mark.parametrize("mode", MODES)
def test_sign_of_integers(mode):
    (s,) = run(mode, tj.sign, np.array([-5, 0, 7], np.int64))
    same(s, np.array([-1, 0, 1], np.int64))


# -- float to int casts: one saturating rule ----------------------------------------------------
EDGES = [NAN, INF, -INF, 1e20, -1e20, 2.0 ** 63, -(2.0 ** 63), 2.0 ** 31, -(2.0 ** 31),
         2.0 ** 31 - 1, -(2.0 ** 31) - 1, 3.7, -3.7, -0.5, 0.0, 65504.0]


def _saturated(values, to):
    """The documented rule: NaN -> 0, truncate toward zero, clamp to the type's range."""
    info = np.iinfo(to)
    out = []
    for v in map(float, values):
        if v != v:
            out.append(0)
        elif v >= info.max + 1:
            out.append(info.max)
        elif v < info.min:
            out.append(info.min)
        else:
            out.append(int(v))            # Python's int() truncates toward zero
    return np.array(out, to)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("src", [np.float64, np.float32, np.float16, tj.bfloat16.np],
                         ids=["f64", "f32", "f16", "bf16"])
def test_float_to_int_casts_saturate_alike_everywhere(mode, src):
    with np.errstate(over="ignore"):            # 1e20 is inf in 16 bits: that is fine
        x = np.array(EDGES, np.float64).astype(src)
    wide = x.astype(np.float64)
    got = run(mode, lambda a: (tj.cast(a, tj.int64), tj.cast(a, tj.int32)), x)
    same(got[0], _saturated(wide, np.int64))
    same(got[1], _saturated(wide, np.int32))


def test_long_of_infinity_is_the_largest_int64_eagerly():
    assert tj.tensor([INF]).long().item() == 2 ** 63 - 1      # was INT64_MIN eagerly


# -- pow's gradient at a zero base ------------------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
def test_pow_gradient_at_zero_base_matches_pytorch(mode):
    torch = pytest.importorskip("torch")
    exps = [-2.0, -1.5, -1.0, 0.0, 0.5, 1.0, 2.0, 3.0]
    base = np.array([0.0] * len(exps) + [-0.0] * len(exps) + [2.0, -2.0, NAN], np.float32)
    expo = np.array(exps * 2 + [0.0, 0.0, 0.0], np.float32)
    tb, te = (torch.tensor(v, requires_grad=True) for v in (base, expo))
    (tb ** te).sum().backward()
    got = grads(mode, lambda b, e: b ** e, base, expo)
    same(got[0], tb.grad.numpy())
    same(got[1], te.grad.numpy())


def test_pow_exponent_gradient_at_zero_base_negative_exponent_is_minus_inf():
    e = tj.tensor(-2.0, requires_grad=True)
    (tj.tensor(0.0) ** e).backward()
    assert e.grad.item() == -INF


def test_pow_second_derivative_stays_finite_where_masked():
    # d2/dy2 0**y at y = 1: the masked branch must not leak log(0) into the Hessian
    h = tj.hessian(lambda e: (tj.tensor(np.zeros(2)) ** e).sum())(np.array([1.0, 2.0]))
    same(h.numpy(), np.zeros((2, 2)))


# -- linspace computes in float64 -----------------------------------------------------------
def test_linspace_with_float32_tensor_ends_computes_in_float64():
    start = tj.tensor(0.1)                           # float32 0-d
    got = tj.linspace(start, 1.0, 7, dtype=tj.float64).numpy()
    want = np.linspace(float(np.float32(0.1)), 1.0, 7)
    assert got.dtype == np.float64
    np.testing.assert_array_equal(got, want)
    torch = pytest.importorskip("torch")
    t = torch.linspace(torch.tensor(0.1), 1.0, 7, dtype=torch.float64).numpy()
    np.testing.assert_allclose(got, t, rtol=1e-15, atol=0)


def test_linspace_defaults_and_ints():
    same(tj.linspace(0, 1, 5).numpy(), np.linspace(0, 1, 5).astype(np.float32))
    same(tj.linspace(0, 10, 5, dtype=tj.int64).numpy(), np.array([0, 2, 5, 7, 10]))
