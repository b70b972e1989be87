"""Kept traces of the plain transforms and Python constants (review of #15's trace cache):
a closure variable or global that the function names and that holds a Python number is
guarded by value (a plain tj.jvp is called like eager code, so `scale = 3.0` between calls
must be seen), and vmap's key tells 0.0 from -0.0 in unbatched arguments and keyword
arguments. Each value is checked against NumPy."""
from __future__ import annotations

import numpy as np
import pytest

import tracejit as tj

X = np.array([0.5, -1.5, 2.0])
ONES = np.ones(3)
SCALE = 2.0


def _scaled(x):
    return tj.sin(x) * SCALE


def _run(kind: str, f, x=X):
    if kind == "jvp":
        return tj.jvp(f, (x,), (ONES,))[1].numpy()
    if kind == "linearize":
        return tj.linearize(f, x)[1](ONES).numpy()
    if kind == "jacfwd":
        return np.diag(tj.jacfwd(f)(x).numpy())
    if kind == "jacrev":
        return np.diag(tj.jacrev(f)(x).numpy())
    if kind == "vmap":
        return tj.vmap(f)(x).numpy()
    raise AssertionError(kind)


def _expected(kind: str, scale: float) -> np.ndarray:
    return np.sin(X) * scale if kind == "vmap" else np.cos(X) * scale


KINDS = ["jvp", "linearize", "jacfwd", "jacrev", "vmap"]


@pytest.mark.parametrize("kind", KINDS)
def test_rebound_global_number_traces_again(kind):
    global SCALE
    try:
        for scale in (2.0, 3.0, -0.0, 0.0, 3.0):
            SCALE = scale
            np.testing.assert_allclose(_run(kind, _scaled), _expected(kind, scale))
    finally:
        SCALE = 2.0


@pytest.mark.parametrize("kind", KINDS)
def test_rebound_closure_number_traces_again(kind):
    scale = 2.0

    def f(x):
        return tj.sin(x) * scale

    np.testing.assert_allclose(_run(kind, f), _expected(kind, 2.0))
    scale = 5.0
    np.testing.assert_allclose(_run(kind, f), _expected(kind, 5.0))


def test_same_constant_keeps_the_trace():
    traces = []

    def f(x):
        traces.append(1)
        return tj.sin(x) * SCALE

    for _ in range(3):
        np.testing.assert_allclose(_run("jvp", f), np.cos(X) * SCALE)
    assert len(traces) == 1


def test_hessian_sees_a_rebound_exponent():
    power = 3

    def f(x):
        return (x ** power).sum()

    h = tj.hessian(f)
    np.testing.assert_allclose(h(X).numpy(), np.diag(6 * X))
    power = 4
    np.testing.assert_allclose(h(X).numpy(), np.diag(12 * X ** 2))


def test_vmap_unbatched_signed_zero():
    def f(x, s):
        return 1.0 / (x * s)

    v = tj.vmap(f, in_axes=(0, None))
    with np.errstate(divide="ignore"):
        for s in (0.0, -0.0, 0.0):
            np.testing.assert_array_equal(v(X, s).numpy(), 1.0 / (X * s))


def test_vmap_keyword_signed_zero():
    def f(x, s=1.0):
        return 1.0 / (x * s)

    v = tj.vmap(f)
    with np.errstate(divide="ignore"):
        for s in (0.0, -0.0):
            np.testing.assert_array_equal(v(X, s=s).numpy(), 1.0 / (X * s))
