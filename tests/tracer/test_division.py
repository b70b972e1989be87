"""`//`, `%`, floor_divide, remainder and fmod: Python's sign rule as PyTorch (and NumPy) apply
it, for integers and floats, eager and compiled, with PyTorch's gradients; integer division by
zero and int_min // -1 never trap."""
from __future__ import annotations

import numpy as np
import pytest

import tracejit as tj

torch = pytest.importorskip("torch")

OPS = {"floor_divide": (np.floor_divide, torch.floor_divide),
       "remainder": (np.remainder, torch.remainder),
       "fmod": (np.fmod, torch.fmod)}


def _float_pairs(dtype):
    rng = np.random.default_rng(0)
    a = np.concatenate([rng.standard_normal(300) * 10, rng.integers(-9, 9, 40),
                        [0.0, -0.0, 5.0, -5.0, 1e-30, -1e-30, 7.5, -7.5, 3.0, -3.0, 0.0]])
    b = np.concatenate([rng.standard_normal(300), rng.integers(1, 4, 40) * rng.choice([-1, 1], 40),
                        [3.0, 3.0, -np.inf, np.inf, 7.0, -7.0, 2.5, 2.5, -0.5, 0.5, -2.0]])
    return a.astype(dtype), b.astype(dtype)


def _int_pairs(dtype):
    rng = np.random.default_rng(1)
    lo = np.iinfo(dtype).min
    a = np.concatenate([rng.integers(-50, 50, 200), [7, -7, 7, -7, 0, 6, -6, lo, lo, lo + 1]])
    b = np.concatenate([rng.integers(1, 9, 200) * rng.choice([-1, 1], 200),
                        [2, 2, -2, -2, 5, 3, -3, 1, 2, -1]])
    return a.astype(dtype), b.astype(dtype)


def _bits(x: np.ndarray) -> np.ndarray:
    return x.view(np.uint8)


@pytest.mark.parametrize("name", list(OPS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int32, np.int64])
def test_matches_torch_eager_and_compiled(name, dtype):
    a, b = (_float_pairs if np.dtype(dtype).kind == "f" else _int_pairs)(dtype)
    want = OPS[name][1](torch.tensor(a), torch.tensor(b)).numpy()
    eager = getattr(tj, name)(tj.tensor(a), tj.tensor(b)).numpy()
    compiled = tj.compile(getattr(tj, name))(a, b).numpy()
    assert eager.dtype == compiled.dtype == want.dtype
    np.testing.assert_array_equal(eager, want)
    np.testing.assert_array_equal(compiled, want)
    # and NumPy's (Python's) bits, signed zeros included: a zero remainder has the sign of b,
    # where torch keeps fmod's (the sign of a)
    with np.errstate(all="ignore"):
        ref = OPS[name][0](a, b)
    np.testing.assert_array_equal(_bits(eager), _bits(ref))
    np.testing.assert_array_equal(_bits(compiled), _bits(ref))


def test_operators_and_reflected_operators():
    a = np.array([7, -7, 7, -7, 0], np.int64)
    b = np.array([2, 2, -2, -2, 3], np.int64)
    x, y = tj.tensor(a), tj.tensor(b)
    assert ((x // y).numpy() == a // b).all() and ((x % y).numpy() == a % b).all()
    assert ((x // 3).numpy() == a // 3).all() and ((x % -3).numpy() == a % -3).all()
    assert ((7 // y).numpy() == 7 // b).all() and ((-7 % y).numpy() == -7 % b).all()
    assert (x.floor_divide(y).numpy() == a // b).all() and (x.remainder(y).numpy() == a % b).all()
    assert (x.fmod(y).numpy() == np.fmod(a, b)).all()
    f = tj.tensor(np.array([7.5, -7.5], np.float32))
    np.testing.assert_array_equal((f // 2).numpy(), np.array([3.0, -4.0], np.float32))
    np.testing.assert_array_equal((f % 2).numpy(), np.array([1.5, 0.5], np.float32))
    np.testing.assert_array_equal((5.0 % f).numpy(), np.float32(5.0) % np.array([7.5, -7.5],
                                                                               np.float32))
    # an int tensor with a float scalar promotes to float32, as torch
    got = tj.tensor(a) // 2.5
    assert got.dtype is tj.float32
    np.testing.assert_array_equal(got.numpy(), (torch.tensor(a) // 2.5).numpy())
    g = tj.compile(lambda u, v: (u // v, u % v, 9 // v, 9 % v))(a, b)
    for got, want in zip(g, (a // b, a % b, 9 // b, 9 % b)):
        assert (got.numpy() == want).all()


@pytest.mark.parametrize("dtype", [np.int32, np.int64])
def test_integer_division_by_zero_raises_eagerly_and_never_traps(dtype):
    """Eagerly torch's RuntimeError (ZeroDivisionError) for //, %, fmod and div(trunc);
    compiled code cannot raise and gives NumPy's 0. The hardware would trap (SIGFPE) on a
    division by 0 and on int_min / -1 (which wraps)."""
    lo = np.iinfo(dtype).min
    a = np.array([5, -5, 0, lo, lo, 7], dtype)
    b = np.array([0, 0, 0, 0, -1, -1], dtype)
    want = {"floor_divide": [0, 0, 0, 0, lo, -7], "remainder": [0] * 6, "fmod": [0] * 6}
    for name in OPS:
        compiled = tj.compile(getattr(tj, name))(a, b).numpy()
        assert compiled.tolist() == want[name], name
        with pytest.raises(RuntimeError, match="ZeroDivisionError"):
            getattr(tj, name)(tj.tensor(a), tj.tensor(b))
        with pytest.raises(RuntimeError, match="ZeroDivisionError"):
            getattr(tj, name)(tj.tensor(a), 0)
        eager = getattr(tj, name)(tj.tensor(a[4:]), tj.tensor(b[4:])).numpy()
        assert eager.tolist() == want[name][4:], name
    with pytest.raises(RuntimeError, match="ZeroDivisionError"):
        tj.div(tj.tensor(a), tj.tensor(b), rounding_mode="trunc")


def test_float_division_by_zero_follows_ieee():
    a = np.array([1.0, -1.0, 0.0], np.float32)
    b = np.zeros(3, np.float32)
    for name in OPS:
        want = OPS[name][1](torch.tensor(a), torch.tensor(b)).numpy()
        np.testing.assert_array_equal(getattr(tj, name)(tj.tensor(a), tj.tensor(b)).numpy(), want)
        np.testing.assert_array_equal(tj.compile(getattr(tj, name))(a, b).numpy(), want)


def test_gradients_match_torch():
    rng = np.random.default_rng(2)
    a = (rng.standard_normal((4, 5)) * 5).astype(np.float32)
    b = (rng.uniform(0.5, 2.0, (4, 5)) * rng.choice([-1, 1], (4, 5))).astype(np.float32)
    for name in ("remainder", "fmod"):
        at = torch.tensor(a, requires_grad=True)
        bt = torch.tensor(b, requires_grad=True)
        (getattr(torch, name)(at, bt) * torch.tensor(b)).sum().backward()
        aj, bj = tj.tensor(a, requires_grad=True), tj.tensor(b, requires_grad=True)
        (getattr(tj, name)(aj, bj) * b).sum().backward()
        np.testing.assert_allclose(aj.grad.numpy(), at.grad.numpy(), rtol=1e-6)
        np.testing.assert_allclose(bj.grad.numpy(), bt.grad.numpy(), rtol=1e-5)
        ga, gb = tj.grad(tj.compile(lambda u, v: (getattr(tj, name)(u, v) * b).sum()),
                         argnums=(0, 1))(a, b)
        np.testing.assert_allclose(ga.numpy(), at.grad.numpy(), rtol=1e-6)
        np.testing.assert_allclose(gb.numpy(), bt.grad.numpy(), rtol=1e-5)
    # float64 central differences, away from the jumps
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    assert tj.autograd.gradcheck(lambda u, v: tj.remainder(u, v) * 1.5,
                                 (tj.tensor(a64, requires_grad=True),
                                  tj.tensor(b64, requires_grad=True)))
    assert tj.autograd.gradcheck(tj.fmod, (tj.tensor(a64, requires_grad=True),
                                           tj.tensor(b64, requires_grad=True)))
    # floor division is piecewise constant: a zero gradient (torch has none at all)
    aj = tj.tensor(a, requires_grad=True)
    (aj // 2.0).sum().backward()
    assert (aj.grad.numpy() == 0).all()
    assert (tj.grad(tj.compile(lambda u: (u // 2.0).sum()))(a).numpy() == 0).all()


def test_float16_and_bool_operands():
    a = np.array([7.5, -7.5, 3.0], np.float16)
    got = tj.compile(lambda u: (u // 2, u % 2))(a)
    np.testing.assert_array_equal(got[0].numpy(), np.floor_divide(a, np.float16(2)))
    np.testing.assert_array_equal(got[1].numpy(), np.remainder(a, np.float16(2)))
    t = tj.tensor(np.array([True, False]))
    assert (t // 1).dtype is tj.int64 and (t % 2).numpy().tolist() == [1, 0]
