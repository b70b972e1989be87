"""torch.result_type's three priority groups (tensors with dimensions > 0-d tensors > Python
and NumPy scalars) against PyTorch: result dtypes and values of binary ops, eagerly and under
tj.compile, for random (op, dtypes, rank, scalar kind) combinations; NumPy arrays of any rank
are strong (torch hands them to NumPy); bool subtraction and in-place casts raise as in torch."""
from __future__ import annotations

import operator
import random

import numpy as np
import pytest
import torch

import tracejit as tj

DTYPES = ["bool", "i32", "i64", "f16", "bf16", "f32", "f64"]
TJ = {"bool": tj.bool_, "i32": tj.int32, "i64": tj.int64, "f16": tj.float16,
      "bf16": tj.bfloat16, "f32": tj.float32, "f64": tj.float64}
TORCH = {"bool": torch.bool, "i32": torch.int32, "i64": torch.int64, "f16": torch.float16,
         "bf16": torch.bfloat16, "f32": torch.float32, "f64": torch.float64}
NAMES = {v: k for k, v in TORCH.items()}

# (name, tracejit function, torch function, takes scalars)
OPS = [
    ("add", operator.add, operator.add, True),
    ("sub", operator.sub, operator.sub, True),
    ("mul", operator.mul, operator.mul, True),
    ("div", operator.truediv, operator.truediv, True),
    ("pow", operator.pow, operator.pow, True),
    ("lt", operator.lt, operator.lt, True),
    ("eq", operator.eq, operator.eq, True),
    ("maximum", tj.maximum, torch.maximum, False),
    ("minimum", tj.minimum, torch.minimum, False),
    ("where", lambda a, b: tj.where(COND_TJ, a, b), lambda a, b: torch.where(COND_T, a, b), True),
]
COND = np.array([[True, False, True], [False, True, True]])
COND_TJ, COND_T = tj.tensor(COND), torch.tensor(COND)


def _values(rng: np.random.Generator, shape: tuple, d: str) -> np.ndarray:
    """Small positive values (no integer division by zero, no negative integer powers)."""
    if d == "bool":
        return rng.random(shape) < 0.5
    if d in ("i32", "i64"):
        return rng.integers(1, 4, shape).astype(np.int64)
    return np.round(rng.uniform(0.5, 3.0, shape) * 4) / 4       # exact in every float dtype


def _operand(rng: np.random.Generator, kind: str, d: str):
    """(tracejit operand, torch operand) of one kind."""
    if kind in ("dims", "zero"):
        v = _values(rng, (2, 3) if kind == "dims" else (), d)
        return tj.tensor(v, dtype=TJ[d]), torch.tensor(v, dtype=TORCH[d])
    v = _values(rng, (), d).item()
    if kind == "py":
        v = {"bool": bool, "i32": int, "i64": int}.get(d, float)(v)
        return v, v
    s = {"bool": np.bool_, "i32": np.int32, "i64": np.int64, "f16": np.float16,
         "bf16": np.float32, "f32": np.float32, "f64": np.float64}[d](v)
    return s, s                                                   # "np": a NumPy scalar


def _run(fn, *args):
    try:
        return fn(*args), None
    except (TypeError, RuntimeError, ValueError, NotImplementedError) as e:
        return None, e


def _check(name: str, got, want, where: str) -> None:
    assert want is not None and got is not None, where
    assert got.dtype is TJ[NAMES[want.dtype]], f"{where}: {got.dtype} vs torch {want.dtype}"
    w = want.to(torch.float64).numpy() if want.dtype is not torch.bool else want.numpy()
    g = np.asarray(got.numpy()).astype(w.dtype)
    low = want.dtype in (torch.float16, torch.bfloat16)
    np.testing.assert_allclose(g, w, rtol=1e-2 if low else 1e-6, err_msg=where)


def _cases(seed: int, n: int):
    rng = np.random.default_rng(seed)
    pick = random.Random(seed)
    for _ in range(n):
        name, f_tj, f_t, scalars = pick.choice(OPS)
        kinds = ["dims", "zero"] + (["py", "np"] if scalars else [])
        ka = pick.choice(kinds)
        kb = pick.choice(["dims", "zero"] if ka in ("py", "np") else kinds)
        if pick.random() < 0.5:
            ka, kb = kb, ka
        # (torch takes np.bool_ as a float number, bool_tensor + np.bool_(True) is float32;
        # tracejit keeps NumPy's meaning, a bool: not compared here)
        da, db = (pick.choice(DTYPES[1:] if k == "np" else DTYPES) for k in (ka, kb))
        if name == "pow" and da == db == "bool":
            continue        # (bool ** True: torch keeps bool, tracejit gives int64: a known gap)
        a, ta = _operand(rng, ka, da)
        b, tb = _operand(rng, kb, db)
        yield f"{name}({ka} {da}, {kb} {db})", name, f_tj, f_t, (a, b), (ta, tb)


@pytest.mark.parametrize("seed", range(4))
def test_binary_result_dtype_matches_torch_eager(seed):
    for where, name, f_tj, f_t, args, targs in _cases(seed, 150):
        want, terr = _run(f_t, *targs)
        got, err = _run(f_tj, *args)
        if terr is not None:
            assert err is not None, f"{where}: torch raises {terr!r}, tracejit gives {got}"
            continue
        assert err is None, f"{where}: {err!r}"
        _check(name, got, want, where)


@pytest.mark.parametrize("seed", range(2))
def test_binary_result_dtype_matches_torch_compiled(seed):
    for where, name, f_tj, f_t, args, targs in _cases(100 + seed, 80):
        want, terr = _run(f_t, *targs)
        if terr is not None:
            continue                    # (the eager test checks the errors)
        got = tj.compile(lambda a, b: f_tj(a, b))(*args)
        _check(name, got, want, "compiled " + where)


def test_issue_example_half_by_zero_dim_double():
    x = tj.ones((1, 3), dtype=tj.float16) / tj.tensor(2.0, dtype=tj.float64)
    assert x.dtype is tj.float16
    np.testing.assert_array_equal(x.numpy(), np.full((1, 3), 0.5, np.float16))
    y = tj.ones((3,), dtype=tj.int32) + tj.tensor(2.5, dtype=tj.float64)
    assert y.dtype is tj.float64            # a higher category: the 0-d tensor's own dtype
    z = tj.ones((3,), dtype=tj.int32) + tj.tensor(2, dtype=tj.int64)
    assert z.dtype is tj.int32


def test_zero_dim_operands_alone_promote_among_themselves():
    x = tj.tensor(1.5, dtype=tj.float16) + tj.tensor(2.0, dtype=tj.float64)
    assert x.dtype is tj.float64 and x.item() == 3.5
    assert (tj.tensor(2, dtype=tj.int32) * 2.5).dtype is tj.float32


def test_numpy_arrays_are_strong_numpy_scalars_weak():
    # torch: t + 0-d ndarray goes through NumPy (strong); t + np.float64 is a Python number
    t = tj.ones((2,), dtype=tj.float16)
    assert (t + np.array(2.0)).dtype is tj.float64
    assert (t + np.float64(2.0)).dtype is tj.float16
    assert (t + np.float32(2.0)).dtype is tj.float16
    ti = tj.ones((2,), dtype=tj.int32)
    assert (ti + np.int64(2)).dtype is tj.int32
    assert (ti + np.float64(2.5)).dtype is tj.float32


def test_bool_subtraction_raises_like_torch():
    t = tj.ones((2,), dtype=tj.float64)
    for bad in (lambda: t - True, lambda: True - t, lambda: tj.sub(t, True),
                lambda: t - tj.tensor(True), lambda: t.sub_(True)):
        with pytest.raises(TypeError, match=r"sub: subtraction with a bool"):
            bad()
    # NumPy bools are numbers to torch (it hands them to NumPy)
    np.testing.assert_array_equal((t - np.bool_(True)).numpy(), np.zeros(2))
    np.testing.assert_array_equal((t - np.array([True, False])).numpy(), np.array([0.0, 1.0]))


def test_inplace_result_must_cast_to_destination():
    x = tj.ones((2,), dtype=tj.int32)
    with pytest.raises(RuntimeError, match=r"add_: result type f64 can't be cast .* i32"):
        x += tj.tensor(1.5, dtype=tj.float64)
    b = tj.ones((2,), dtype=tj.bool_)
    with pytest.raises(RuntimeError, match=r"add_: result type i64 can't be cast .* bool"):
        b += 1
    h = tj.ones((2,), dtype=tj.float16)
    h += tj.tensor(1.5, dtype=tj.float64)
    assert h.dtype is tj.float16
    np.testing.assert_array_equal(h.numpy(), np.full(2, 2.5, np.float16))
    b *= tj.tensor(True)                         # bool into bool: fine
    b.fill_(0)                                   # fills and copies cast, as in torch
    b.copy_(tj.ones((2,)))
    assert b.dtype is tj.bool_ and b.numpy().all()


@pytest.mark.parametrize("op", ["add_", "sub_", "mul_", "div_"])
@pytest.mark.parametrize("dst", DTYPES)
@pytest.mark.parametrize("src", ["zero", "py"])
def test_inplace_matches_torch(op, dst, src):
    rng = np.random.default_rng(7)
    for d in DTYPES:
        xv = _values(rng, (2, 3), dst)
        x, tx = tj.tensor(xv, dtype=TJ[dst]), torch.tensor(xv, dtype=TORCH[dst])
        y, ty = _operand(rng, src, d)
        want, terr = _run(lambda: getattr(tx, op)(ty))
        got, err = _run(lambda: getattr(x, op)(y))
        where = f"{dst}.{op}({src} {d})"
        if terr is not None:
            assert err is not None, f"{where}: torch raises {terr!r}, tracejit gives {got}"
            continue
        assert err is None, f"{where}: {err!r}"
        _check(op, got, want, where)


def test_compiled_numpy_scalar_arguments_are_weak():
    f = tj.compile(lambda x, s: x * s)
    x = tj.ones((2,), dtype=tj.float16)
    for s in (np.float32(2.5), np.float64(3.0), np.int64(2), np.bool_(True)):
        y = f(x, s)
        assert y.dtype is tj.float16, s
        np.testing.assert_array_equal(y.numpy(), np.full(2, float(s), np.float16))
    assert f(tj.ones((2,), dtype=tj.int32), np.float32(2.5)).dtype is tj.float32
    # a NumPy array read inside (not an argument) is strong, as eagerly
    c = np.array(2.0)
    assert tj.compile(lambda x: x * c)(x).dtype is tj.float64


def test_bool_to_a_bool_tensor_power_raises_like_torch():
    b = tj.tensor([True, False])
    with pytest.raises(NotImplementedError):
        True ** torch.tensor([True, False])
    with pytest.raises(TypeError, match="pow: not implemented for .*bool"):
        True ** b
    np.testing.assert_array_equal((b ** True).numpy().astype(bool), [True, False])
