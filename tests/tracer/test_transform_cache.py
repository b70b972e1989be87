"""The plain (uncompiled) transforms keep their traces (#15): tj.jvp, tj.linearize,
tj.jacfwd, tj.jacrev, tj.hessian and tj.vmap trace a function once per signature, and trace
again exactly when tj.compile would (a rebound closure variable or global, a changed value
read into Python, a rebound module parameter, another shape or dtype). Values against closed
forms; traces counted by the function's own Python side effect (which, as under tj.compile
and jax.jit, runs when it is traced)."""
from __future__ import annotations

import numpy as np
import pytest

import tracejit as tj

R = np.random.default_rng(5)
X = R.standard_normal(4)
T = R.standard_normal(4)


class Counted:
    """f(x) = sin(x) * w + c, counting its traces."""

    def __init__(self, w) -> None:
        self.w, self.calls = w, 0

    def __call__(self, x):
        self.calls += 1
        return tj.sin(x) * self.w


def _value(w, x=X):
    return np.sin(x) * w


def _runs(kind: str, f, x):
    """One call of transform `kind` of f at x: a NumPy result to compare."""
    t = T.reshape(np.shape(x)).astype(np.asarray(x).dtype)
    if kind == "jvp":
        out = tj.jvp(f, (x,), (t,))[1]
    elif kind == "linearize":
        out = tj.linearize(f, x)[1](t)
    elif kind == "jacfwd":
        out = tj.jacfwd(f)(x)
    elif kind == "jacrev":
        out = tj.jacrev(f)(x)
    else:
        out = tj.vmap(f)(np.stack([x, 2 * x]))
    return out.detach().numpy()


def _want(kind: str, w, x):
    if kind in ("jvp", "linearize"):
        return np.cos(x) * w * T
    if kind in ("jacfwd", "jacrev"):
        return np.diag(np.cos(x) * w)
    return np.stack([_value(w, x), _value(w, 2 * x)])


KINDS = ["jvp", "linearize", "jacfwd", "jacrev", "vmap"]


@pytest.mark.parametrize("kind", KINDS)
def test_traced_once_per_signature(kind):
    w = tj.tensor(R.standard_normal(4))
    f = Counted(w)
    for k in range(3):
        x = X + k                       # new values, the same signature
        np.testing.assert_allclose(_runs(kind, f, x), _want(kind, w.numpy(), x), rtol=1e-12)
    assert f.calls == 1
    # another shape or dtype is another signature
    _runs(kind, f, X.astype(np.float32))
    _runs(kind, f, X.reshape(1, 4))
    assert f.calls == 3


def test_hessian_kept_by_its_transform_object():
    calls = []

    def f(x):
        calls.append(1)
        return (tj.sin(x) * x).sum()
    h = tj.hessian(f)
    for k in range(3):
        x = X + k
        want = np.diag(2 * np.cos(x) - x * np.sin(x))
        np.testing.assert_allclose(h(x).numpy(), want, rtol=1e-12)
    assert len(calls) == 1


@pytest.mark.parametrize("kind", KINDS)
def test_in_place_updates_of_captures_are_read_without_tracing_again(kind):
    w = tj.tensor(R.standard_normal(4))
    f = Counted(w)
    _runs(kind, f, X)
    w.mul_(3.0)
    np.testing.assert_allclose(_runs(kind, f, X), _want(kind, w.numpy(), X), rtol=1e-12)
    assert f.calls == 1


@pytest.mark.parametrize("kind", KINDS)
def test_rebound_closure_variable_traces_again(kind):
    w = tj.tensor(R.standard_normal(4))

    def f(x):
        return tj.sin(x) * w
    _runs(kind, f, X)
    w = tj.tensor(R.standard_normal(4))         # noqa: F841 (read by f through its cell)
    np.testing.assert_allclose(_runs(kind, f, X), _want(kind, w.numpy(), X), rtol=1e-12)


W_GLOBAL = tj.tensor(R.standard_normal(4))


def _global_f(x):
    return tj.sin(x) * W_GLOBAL


@pytest.mark.parametrize("kind", KINDS)
def test_rebound_global_traces_again(kind):
    global W_GLOBAL
    _runs(kind, _global_f, X)
    old = W_GLOBAL
    W_GLOBAL = tj.tensor(R.standard_normal(4))
    try:
        np.testing.assert_allclose(_runs(kind, _global_f, X), _want(kind, W_GLOBAL.numpy(), X),
                                   rtol=1e-12)
    finally:
        W_GLOBAL = old


@pytest.mark.parametrize("kind", KINDS)
def test_value_read_into_python_is_a_guard(kind):
    flag = tj.tensor(1.0)
    w = tj.tensor(R.standard_normal(4))

    def f(x):
        return tj.sin(x) * w if flag.item() > 0 else tj.sin(x) * w * 0.0
    _runs(kind, f, X)
    flag.fill_(-1.0)
    np.testing.assert_allclose(_runs(kind, f, X), _want(kind, 0.0 * w.numpy(), X), atol=1e-15)


@pytest.mark.parametrize("kind", KINDS)
def test_rebound_module_parameter_traces_again(kind):
    lin = tj.nn.Linear(4, 4, bias=False).double()

    def f(x):
        return tj.sin(lin(x))
    _runs(kind, f, X)
    new = R.standard_normal((4, 4))
    lin.weight = tj.nn.Parameter(tj.tensor(new))
    if kind == "jvp":
        want = np.cos(new @ X) * (new @ T)
        np.testing.assert_allclose(_runs(kind, f, X), want, rtol=1e-12)
    elif kind == "jacfwd":
        np.testing.assert_allclose(_runs(kind, f, X), np.cos(new @ X)[:, None] * new,
                                   rtol=1e-12)


def test_vmap_reads_this_calls_unbatched_arguments():
    calls = []

    def f(w, x, scale):
        calls.append(1)
        return (w @ x) * scale
    xs = R.standard_normal((5, 3))
    for k in range(3):
        w = R.standard_normal((2, 3))               # a new array each call, same signature
        wt = tj.tensor(R.standard_normal((2, 3)))   # a new tensor each call
        got = tj.vmap(f, in_axes=(None, 0, None))(w, xs, 2.0)
        np.testing.assert_allclose(got.numpy(), xs @ w.T * 2.0, rtol=1e-12)
        got = tj.vmap(f, in_axes=(None, 0, None))(wt, xs, 2.0)
        np.testing.assert_allclose(got.numpy(), xs @ wt.numpy().T * 2.0, rtol=1e-12)
    assert len(calls) == 2          # (an array and a tensor: two signatures)
    # a Python number that is not mapped is a constant of the trace: another value traces again
    got = tj.vmap(f, in_axes=(None, 0, None))(wt, xs, 3.0)
    np.testing.assert_allclose(got.numpy(), xs @ wt.numpy().T * 3.0, rtol=1e-12)
    assert len(calls) == 3


def test_vmap_writes_back_into_this_calls_arguments():
    def f(x, acc):
        x.add_(1.0)
        return x * 2
    for k in range(3):
        xs = np.arange(6.0).reshape(3, 2) + k
        out = tj.vmap(f, in_axes=(0, None))(xs, 1.0)
        np.testing.assert_array_equal(xs, np.arange(6.0).reshape(3, 2) + k + 1)
        np.testing.assert_array_equal(out.numpy(), 2 * xs)


def test_methods_of_two_instances_are_kept_apart():
    a, b = Counted(tj.tensor(np.full(4, 2.0))), Counted(tj.tensor(np.full(4, 5.0)))

    class Holder:
        def __init__(self, c):
            self.c = c

        def f(self, x):
            return self.c(x)
    ha, hb = Holder(a), Holder(b)
    for _ in range(2):
        np.testing.assert_allclose(tj.jvp(ha.f, (X,), (T,))[1].numpy(), np.cos(X) * 2 * T)
        np.testing.assert_allclose(tj.jvp(hb.f, (X,), (T,))[1].numpy(), np.cos(X) * 5 * T)
    assert a.calls == 1 and b.calls == 1


def test_random_numbers_are_fresh_on_every_call():
    def f(x):
        return x * tj.rand(4, dtype=tj.float64)
    tj.manual_seed(0)
    first = [tj.jvp(f, (X,), (T,))[1].numpy() for _ in range(2)]
    assert not np.array_equal(first[0], first[1])
    tj.manual_seed(0)
    again = [tj.jvp(f, (X,), (T,))[1].numpy() for _ in range(2)]
    np.testing.assert_array_equal(first, again)


def test_gradients_through_a_kept_trace_and_inside_compile():
    w = tj.tensor(R.standard_normal(4))
    f = Counted(w)

    def g(x):
        return tj.jvp(f, (x,), (T,))[1].sum()      # sum(cos(x) w T)
    for k in range(2):
        x = X + k
        got = tj.grad(g)(x).numpy()
        np.testing.assert_allclose(got, -np.sin(x) * w.numpy() * T, rtol=1e-12)
        got = tj.compile(tj.grad(g))(x).numpy()
        np.testing.assert_allclose(got, -np.sin(x) * w.numpy() * T, rtol=1e-12)


def test_clear_cache_drops_kept_traces():
    f = Counted(tj.tensor(np.ones(4)))
    tj.jvp(f, (X,), (T,))
    tj.clear_cache()
    tj.jvp(f, (X,), (T,))
    assert f.calls == 2


@pytest.mark.parametrize("kind", ["jvp", "vmap"])
def test_captured_tensor_of_another_shape_traces_again(kind):
    w = tj.tensor(np.full(4, 2.0))

    def f(x):
        return tj.sin(x) * w
    _runs(kind, f, X)
    w.data = tj.tensor(np.full((2, 4), 3.0))
    np.testing.assert_allclose(_runs(kind, f, X), _want(kind, np.full((2, 4), 3.0), X)
                               if kind == "jvp" else
                               np.stack([_value(np.full((2, 4), 3.0), X),
                                         _value(np.full((2, 4), 3.0), 2 * X)]), rtol=1e-12)


def test_vmap_unbatched_argument_that_a_closure_also_reads():
    """The same tensor as an unbatched argument and through a closure: a later call with
    another argument reads the new argument there and the closure's tensor here."""
    w = tj.tensor(np.array([1.0, 2.0, 3.0]))

    def f(v, x):
        return x * v + w
    xs = np.arange(6.0).reshape(2, 3)
    got = tj.vmap(f, in_axes=(None, 0))(w, xs)
    np.testing.assert_allclose(got.numpy(), xs * w.numpy() + w.numpy())
    v = tj.tensor(np.array([5.0, 6.0, 7.0]))
    got = tj.vmap(f, in_axes=(None, 0))(v, xs)
    np.testing.assert_allclose(got.numpy(), xs * v.numpy() + w.numpy())
    a, b = tj.tensor(np.ones(3)), tj.tensor(np.full(3, 2.0))
    g = lambda p, q, x: x * p + q                            # noqa: E731
    np.testing.assert_allclose(tj.vmap(g, in_axes=(None, None, 0))(a, a, xs).numpy(), xs + 1)
    np.testing.assert_allclose(tj.vmap(g, in_axes=(None, None, 0))(a, b, xs).numpy(), xs + 2)
