"""Integer and bool semantics that follow PyTorch (checked against the installed torch):
integer ** integer stays an integer (wrapping, negative exponents give 0 except for bases
+-1, a negative Python int exponent is an error), bool + bool and bool * bool are logical
or/and and stay bool, bool - x and -bool are errors, sign/amax/amin/max/min of bools stay
bool, and arange/linspace with an integer dtype truncate their float bounds as torch does.
Eager and compiled (LLVM) results are compared with torch's, values and dtypes."""
from __future__ import annotations

import numpy as np
import pytest

import tracejit as tj
from tracejit.ir.interpret import interpret

torch = pytest.importorskip("torch")

BASES = np.array([2, 3, -1, 0, 1, -2, 5, -1, 0, 3, -3, 7, 0, 1, -1, 2])
EXPS = np.array([3, 2, 2, 0, -5, -3, -1, -3, -1, 100, 2 ** 63 - 1, -2 ** 63, 0, 2 ** 62,
                 2 ** 62 + 1, 63])


def _check(fn, *xs, torch_fn=None):
    """fn on tracejit tensors, eagerly and compiled, against fn (or torch_fn) on torch
    tensors: the same dtype and exactly the same values (floats within an ulp)."""
    want = (torch_fn or fn)(*[torch.tensor(x) for x in xs]).numpy()
    for g in (fn, tj.compile(fn)):
        got = g(*[tj.tensor(x) for x in xs]).numpy()
        assert got.dtype == want.dtype, (got.dtype, want.dtype)
        if want.dtype.kind == "f":         # float pow: within an ulp of torch's
            np.testing.assert_allclose(got, want, rtol=1e-6)
        else:
            np.testing.assert_array_equal(got, want)


# -- pow ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.int64, np.int32])
def test_integer_pow_of_tensors(dtype):
    info = np.iinfo(dtype)
    e = np.clip(EXPS, info.min, info.max).astype(dtype)
    _check(lambda x, y: x ** y, BASES.astype(dtype), e)
    _check(lambda x, y: tj.pow(x, y) if isinstance(x, tj.Tensor) else torch.pow(x, y),
           BASES.astype(dtype), e)


def test_integer_pow_with_python_numbers():
    _check(lambda x: x ** 3, BASES)
    _check(lambda x: x ** 0, BASES)
    _check(lambda y: 2 ** y, EXPS)                      # __rpow__: int64 (2 ** 63 wraps)
    _check(lambda y: (-1) ** y, EXPS)
    _check(lambda x: x ** 2.5, np.abs(BASES))           # a float exponent gives float32
    _check(lambda y: 1.5 ** y, EXPS[:9])
    _check(lambda x, y: x ** y, BASES.astype(np.float32), EXPS[:16] % 7)   # float ** int
    _check(lambda x: x ** 2, np.array([True, False]))   # bool ** int: int64


def test_integer_pow_broadcasts_and_handles_empty_and_scalars():
    _check(lambda x, y: x ** y, BASES.reshape(4, 1, 4), np.array([[0, 1, 2, 3]]).T)
    _check(lambda x, y: x ** y, np.zeros((0, 3), np.int64), np.ones((1, 3), np.int64))
    _check(lambda x, y: x ** y, np.array(5), np.array(3))


def test_negative_python_int_exponent_of_an_integer_tensor_is_an_error():
    with pytest.raises(RuntimeError, match="negative integer powers"):
        torch.tensor([2, 3]) ** -1
    with pytest.raises(ValueError, match=r"pow: Integers to negative integer powers.*i64\[2\]"):
        tj.tensor([2, 3]) ** -1
    with pytest.raises(ValueError, match="negative integer powers"):
        tj.compile(lambda x: x ** -2)(tj.tensor([2, 3]))
    assert (tj.tensor([2.0, 4.0]) ** -1).numpy().tolist() == [0.5, 0.25]


def test_pow_of_two_bool_tensors_is_an_error():
    with pytest.raises(NotImplementedError):
        torch.tensor([True]) ** torch.tensor([True])
    with pytest.raises(TypeError, match="pow: not implemented for two bool tensors"):
        tj.tensor([True]) ** tj.tensor([True])


def test_integer_pow_in_the_interpreter_and_ir():
    f = tj.compile(lambda x, y: x ** y)
    graph = f.lower(BASES, EXPS).graph
    assert "f32" not in graph.as_text()               # no float round trip in the graph
    (got,) = interpret(graph, [BASES, EXPS])
    want = (torch.tensor(BASES) ** torch.tensor(EXPS)).numpy()
    np.testing.assert_array_equal(got, want)


def test_float_pow_keeps_its_gradient():
    x = tj.tensor([1.5, 2.0], requires_grad=True)
    (x ** 3).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), 3 * np.array([1.5, 2.0]) ** 2, rtol=1e-6)


# -- bool arithmetic ----------------------------------------------------------------------------
A = np.array([True, False, True, False])
B = np.array([True, True, False, False])


@pytest.mark.parametrize("op", ["add", "mul"])
def test_bool_add_and_mul_stay_bool(op):
    f = {"add": lambda x, y: x + y, "mul": lambda x, y: x * y}[op]
    _check(f, A, B)
    _check(f, A.reshape(4, 1), B)                        # broadcast
    _check(lambda x: f(x, True), A)
    _check(lambda x: f(True, x), A)                      # __radd__ / __rmul__
    _check(lambda x: f(x, False), A)
    _check(lambda x: f(x, 2), A)                         # an int scalar: int64
    _check(lambda x, y: f(x, y), A, np.array([2, 3, 4, 5]))
    _check(lambda x: f(x, 1.5), A)                       # a float scalar: float32
    _check(f, np.zeros((0, 3), bool), np.ones((1, 3), bool))


def test_bool_add_with_alpha_is_logical_or():
    _check(lambda x, y: x.add(y, alpha=2), A, B)


@pytest.mark.parametrize("expr", ["x - y", "x - 1", "1 - x", "i - x", "x - i", "-x", "abs(x)"])
def test_bool_subtraction_negation_and_abs_are_errors(expr):
    def run(lib, x, y, i):
        return eval(expr, {"abs": lib.abs}, {"x": x, "y": y, "i": i})
    with pytest.raises((RuntimeError, NotImplementedError)):
        run(torch, torch.tensor(A), torch.tensor(B), torch.tensor([1, 2, 3, 4]))
    with pytest.raises(TypeError, match=r"bool tensor.*(~|logical_not)"):
        run(tj, tj.tensor(A), tj.tensor(B), tj.tensor([1, 2, 3, 4]))


def test_sign_and_square_of_bools():
    _check(lambda x: x.sign(), A)
    _check(lambda x: x.square(), A)                      # torch: int64
    s = tj.tensor(A)
    out = s.sign()
    out[0] = False                                       # a new tensor, not a view
    assert bool(s.numpy()[0])


@pytest.mark.parametrize("name", ["amax", "amin", "max", "min"])
def test_max_and_min_of_bools_stay_bool(name):
    m = np.array([[True, False, False], [False, False, False]])
    _check(lambda x: getattr(x, name)(), m)
    _check(lambda x: getattr(x, name)(), np.array([True]))
    if name in ("amax", "amin"):
        _check(lambda x: getattr(x, name)(1), m)
        _check(lambda x: getattr(x, name)(0, keepdim=True), m)
    else:
        _check(lambda x: getattr(x, name)(1)[0], m)


# -- arange and linspace ------------------------------------------------------------------------
ARANGE = [(3.1,), (0.5, 3.9), (-2.5, 3.1, 1.5), (5.7, -2.2, -1.5), (-3.7, 2), (1.2, 7.9, 2.9),
          (0, 5, 1.7), (0.2, 0.5), (-0.5, 0.7), (0, 3, 0.4), (0.3, 0.3), (-7, 7, 3.5),
          (0, 10 ** 10, 3 * 10 ** 9), (10, 0, -3)]


@pytest.mark.parametrize("dtype", ["int64", "int32", "float32", "float64", None])
def test_arange_matches_torch(dtype):
    for args in ARANGE:
        kt = {} if dtype is None else {"dtype": getattr(torch, dtype)}
        kj = {} if dtype is None else {"dtype": getattr(tj, dtype)}
        try:
            want = torch.arange(*args, **kt).numpy()
        except (RuntimeError, ValueError):
            with pytest.raises(ValueError, match="arange: step must be nonzero"):
                tj.arange(*args, **kj)
            continue
        got = tj.arange(*args, **kj).numpy()
        assert got.dtype == want.dtype and got.shape == want.shape, args
        np.testing.assert_allclose(got, want, rtol=1e-6, err_msg=str(args))


def test_arange_rejects_what_torch_rejects():
    for args in [(3, 0), (0.5, 0.2), (0, 7, -2.9), (0, -3, 0.5)]:
        with pytest.raises(RuntimeError, match="inconsistent with step sign"):
            torch.arange(*args)
        with pytest.raises(ValueError, match="arange: upper bound and lower bound"):
            tj.arange(*args)
    with pytest.raises(ValueError, match="arange: unsupported range"):
        tj.arange(float("inf"))
    with pytest.raises(ValueError, match="step must be nonzero"):
        tj.arange(0, 3, 0)


LINSPACE = [(4.3, 50, 50), (0, 10, 7), (-3.7, 5.2, 9), (5.9, -5.9, 4), (0, 1, 5), (4.3, 50, 1),
            (4.3, 50, 0), (-10, 10, 2), (1, 2, 3), (0, -7, 11), (0.5, 100.5, 33)]


@pytest.mark.parametrize("dtype", ["int64", "int32", "float32", "float64"])
def test_linspace_matches_torch(dtype):
    for args in LINSPACE:
        want = torch.linspace(*args, dtype=getattr(torch, dtype)).numpy()
        got = tj.linspace(*args, dtype=getattr(tj, dtype)).numpy()
        assert got.dtype == want.dtype and got.shape == want.shape, args
        if dtype.startswith("int"):
            np.testing.assert_array_equal(got, want, err_msg=str(args))
        else:
            np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6, err_msg=str(args))
