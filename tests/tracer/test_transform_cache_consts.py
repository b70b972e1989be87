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


def test_entry_dropped_by_another_thread_meanwhile():
    """Two threads that find the same stale entry both drop it: the second must not fail."""
    from tracejit.tracer import transform_cache as tcache

    def f(x):
        return tj.sin(x) * 2.0

    tj.jvp(f, (X,), (ONES,))
    table = tcache._CACHE[f]
    (full, entry), = table.items()

    class DroppedMeanwhile:
        def stale(self):
            table.pop(full, None)           # what the other thread did
            return "stale"

    entry.guards = DroppedMeanwhile()
    np.testing.assert_allclose(tj.jvp(f, (X,), (ONES,))[1].numpy(), 2.0 * np.cos(X))


def test_threads_share_the_cache():
    """Threads calling one function's transforms at more shapes than the cache keeps (so
    they evict each other's entries) all get their own values."""
    import threading

    def f(x):
        return tj.sin(x) * 2.0

    errors = []

    def work(k):
        try:
            for i in range(40):
                x = np.linspace(-1.0, 1.0, 1 + (k * 7 + i) % (tj_max_keys() + 4))
                got = tj.jvp(f, (x,), (np.ones_like(x),))[1].numpy()
                np.testing.assert_allclose(got, 2.0 * np.cos(x))
        except Exception as e:              # noqa: BLE001  (reported below)
            errors.append(e)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]


def tj_max_keys() -> int:
    from tracejit.tracer import transform_cache as tcache
    return tcache.MAX_KEYS


@pytest.mark.parametrize("jac", [tj.jacfwd, tj.jacrev])
def test_argnums_out_of_range_names_the_transform_and_line(jac):
    with pytest.raises(ValueError, match=rf"{jac.__name__}: argnums 3 out of range .*"
                                         rf"test_transform_cache_consts\.py:\d+"):
        jac(lambda x: x.sum(), argnums=3)(X)


def test_in_place_update_of_an_outside_tensor_names_reverse_mode_too():
    w = tj.tensor(np.zeros(3))

    def f(x):
        w.add_(1.0)
        return x * 2.0

    with pytest.raises(RuntimeError, match=r"jacrev_f: .* in place .*jacrev"):
        tj.jacrev(f)(X)


IDX = np.array([0, 1])


def _pick(x):
    return x[IDX] * 2.0


@pytest.mark.parametrize("kind", ["jvp", "jacrev", "vmap"])
def test_global_index_array_rebound_or_updated_traces_again(kind):
    global IDX
    x = np.arange(4.0)
    try:
        for idx, update in (([0, 1], False), ([2, 3], False), ([3, 0], True)):
            if update:
                IDX[:] = idx                # the same array, new values
            else:
                IDX = np.array(idx)
            if kind == "jvp":
                out, tan = tj.jvp(_pick, (x,), (np.ones(4),))
                np.testing.assert_array_equal(out.numpy(), 2.0 * x[idx])
                np.testing.assert_array_equal(tan.numpy(), [2.0, 2.0])
            elif kind == "jacrev":
                want = np.zeros((2, 4))
                want[[0, 1], idx] = 2.0
                np.testing.assert_array_equal(tj.jacrev(_pick)(x).numpy(), want)
            else:
                xs = np.stack([x, x + 10.0])
                np.testing.assert_array_equal(tj.vmap(_pick)(xs).numpy(), 2.0 * xs[:, idx])
    finally:
        IDX = np.array([0, 1])


def test_closure_index_list_or_tuple_rebound_traces_again():
    idx = [0, 1]

    def f(x):
        return x[idx] * 2.0

    x = np.arange(4.0)
    np.testing.assert_array_equal(tj.jvp(f, (x,), (np.ones(4),))[0].numpy(), [0.0, 2.0])
    idx = [3, 2]
    np.testing.assert_array_equal(tj.jvp(f, (x,), (np.ones(4),))[0].numpy(), [6.0, 4.0])
    shape = (2, 2)

    def g(x):
        return x.reshape(shape).sum(0)

    np.testing.assert_array_equal(tj.jvp(g, (x,), (np.ones(4),))[0].numpy(), [2.0, 4.0])
    shape = (2, 2)                          # another tuple, equal: the trace is kept
    np.testing.assert_array_equal(tj.jvp(g, (x,), (np.ones(4),))[0].numpy(), [2.0, 4.0])
    shape = (4, 1)
    np.testing.assert_array_equal(tj.jvp(g, (x,), (np.ones(4),))[0].numpy(), [6.0])


def test_a_list_the_function_appends_to_keeps_the_trace():
    log = []

    def f(x):
        log.append(1)
        return x * 2.0

    for _ in range(3):
        tj.jvp(f, (np.ones(2),), (np.ones(2),))
    assert log == [1]


def test_vmap_unbatched_index_array_argument():
    v = tj.vmap(lambda x, i: x[i], in_axes=(0, None))
    xs = np.arange(12.0).reshape(3, 4)
    idx = np.array([0, 1])
    np.testing.assert_array_equal(v(xs, idx).numpy(), xs[:, [0, 1]])
    np.testing.assert_array_equal(v(xs, np.array([2, 3])).numpy(), xs[:, [2, 3]])
    idx[:] = [3, 3]                         # the same array object, new values
    np.testing.assert_array_equal(v(xs, idx).numpy(), xs[:, [3, 3]])


def test_captured_data_array_is_not_guarded_by_value():
    """An array the graph reads as an input is read afresh by each call: updating it in
    place must not trace again (and must be seen)."""
    w = np.array([1.0, 2.0, 3.0])
    traces = []

    def f(x):
        traces.append(1)
        return x * w

    x = np.ones(3)
    for k in range(3):
        w[:] = [1.0 + k, 2.0, 3.0]
        np.testing.assert_array_equal(tj.jvp(f, (x,), (x,))[0].numpy(), w)
    assert len(traces) == 1


OFFSET = 1.0
W_HELPER = tj.tensor(np.array([1.0, 2.0, 3.0]))


def _helper(x):
    return x * W_HELPER + OFFSET


def _uses_helper(x):
    return tj.sin(_helper(x))


def _other_helper(x):
    return x * 10.0


def test_values_read_by_a_helper_of_the_module_trace_again():
    global OFFSET, W_HELPER, _helper
    keep = (OFFSET, W_HELPER, _helper)
    x = np.array([0.1, 0.2, 0.3])
    try:
        for offset, w in ((1.0, [1.0, 2.0, 3.0]), (2.0, [1.0, 2.0, 3.0]),
                          (2.0, [3.0, 2.0, 1.0])):
            OFFSET, W_HELPER = offset, tj.tensor(np.array(w))
            out, tan = tj.jvp(_uses_helper, (x,), (ONES,))
            np.testing.assert_allclose(out.numpy(), np.sin(x * w + offset))
            np.testing.assert_allclose(tan.numpy(), np.cos(x * w + offset) * w)
        _helper = _other_helper                 # a rebound helper
        np.testing.assert_allclose(tj.jvp(_uses_helper, (x,), (ONES,))[0].numpy(),
                                   np.sin(x * 10.0))
    finally:
        OFFSET, W_HELPER, _helper = keep


@pytest.mark.parametrize("jac", [tj.jacfwd, tj.jacrev])
def test_repeated_argnums_is_an_error(jac):
    # (torch.func raises too; the result had one block for two argnums)
    with pytest.raises(ValueError, match=rf"{jac.__name__}: argnums elements must be unique.*"
                                         rf"test_transform_cache_consts\.py:\d+"):
        jac(lambda x, y: x * y, argnums=(0, 1, 0))(X, X)


@pytest.mark.parametrize("jac", [tj.jacfwd, tj.jacrev])
def test_argnums_order_is_the_blocks_order(jac):
    """argnums=(1, 0) gives d/dy first, as JAX and torch.func (it gave d/dx first)."""
    x, y = np.array([0.5, 1.5]), np.array([1.0, -2.0, 3.0])

    def f(a, b):
        return tj.stack([(a * 2.0).sum() * b.sum(), (b * b).sum() + a[0]])

    dy, dx = jac(f, argnums=(1, 0))(x, y)
    np.testing.assert_allclose(dy.numpy(), [np.full(3, 2.0 * x.sum()), 2.0 * y])
    np.testing.assert_allclose(dx.numpy(), [np.full(2, 2.0 * y.sum()), [1.0, 0.0]])
    (dx1,) = jac(f, argnums=(0,))(x, y)
    np.testing.assert_allclose(dx1.numpy(), dx.numpy())


def test_a_function_naming_helpers_and_tensors_keeps_its_trace():
    traces = []

    def f(x):
        traces.append(1)
        return tj.sin(_helper(x)) + _other_helper(x) * W_HELPER

    x = np.array([0.1, 0.2, 0.3])
    for _ in range(3):
        out = tj.jvp(f, (x,), (ONES,))[0].numpy()
        w = W_HELPER.numpy()
        np.testing.assert_allclose(out, np.sin(x * w + OFFSET) + x * 10.0 * w)
    assert len(traces) == 1


class _Scaled:
    def __call__(self, x):
        return tj.sin(x) * SCALE


class _ScaledModule(tj.nn.Module):
    def forward(self, x):
        return tj.sin(x) * SCALE


@pytest.mark.parametrize("make", [_Scaled, _ScaledModule])
@pytest.mark.parametrize("kind", ["jvp", "vmap"])
def test_callable_objects_see_a_rebound_global(make, kind):
    global SCALE
    f = make()
    try:
        for scale in (2.0, 4.0):
            SCALE = scale
            np.testing.assert_allclose(_run(kind, f), _expected(kind, scale))
    finally:
        SCALE = 2.0


def test_a_large_index_array_updated_in_place_traces_again():
    big = np.zeros(20000, np.int64)         # (kept as a digest, not a copy)

    def f(x):
        return x[big].sum() * 2.0

    x = np.arange(4.0)
    assert tj.jvp(f, (x,), (np.ones(4),))[0].item() == 0.0
    big[:] = 3
    assert tj.jvp(f, (x,), (np.ones(4),))[0].item() == 2.0 * 3.0 * 20000
