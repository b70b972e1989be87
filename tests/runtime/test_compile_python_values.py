"""Python values a compiled function reads from its globals or closure (numbers, strings,
tuples, index arrays) are baked into its trace; a call after one of them changed traces again
instead of silently computing with the old value (torch.compile guards them too). Each case
against the same function run eagerly."""
import warnings

import numpy as np
import pytest

import tracejit as tj
import tracejit.nn as nn

SCALE = 2.0
SHIFT = (1.0, -1.0)
IDX = np.array([0, 2])
MODE = "double"
X = np.arange(4.0)


def scaled(x):
    return x * SCALE


def _helper(x):                 # a helper of this module: its globals are guarded too
    return x + SHIFT[0] - SHIFT[1]


def uses_helper(x):
    return _helper(x) * 2


def indexed(x):
    return x[IDX] * 3


def moded(x):
    return x * 2 if MODE == "double" else x * 3


def _check(cf, fn, x=X):
    np.testing.assert_array_equal(cf(x).numpy(), fn(tj.tensor(x)).numpy())


def test_a_rebound_global_number_traces_again():
    global SCALE
    cf = tj.compile(scaled)
    try:
        _check(cf, scaled)
        SCALE = 3.0
        _check(cf, scaled)                      # was 2x X silently
        assert cf.cache_info().misses == 2
        SCALE = 3.0 + 0.0                        # the same value: the trace still holds
        _check(cf, scaled)
        assert cf.cache_info().misses == 2
        SCALE = 2.0                              # back: the older trace is reused
        _check(cf, scaled)
    finally:
        SCALE = 2.0


def test_zero_and_negative_zero_are_different_values():
    global SCALE
    cf = tj.compile(lambda x: 1.0 / (x * SCALE))
    try:
        SCALE = 0.0
        assert cf(np.ones(1)).numpy()[0] == np.inf
        SCALE = -0.0
        assert cf(np.ones(1)).numpy()[0] == -np.inf
    finally:
        SCALE = 2.0


def test_closure_cells_strings_tuples_and_helpers():
    global SHIFT, MODE
    k = 1.5

    def f(x):
        return x * k
    cf = tj.compile(f)
    _check(cf, f)
    k = 4.0
    _check(cf, f)
    cu, cm = tj.compile(uses_helper), tj.compile(moded)
    try:
        _check(cu, uses_helper)
        _check(cm, moded)
        SHIFT = (2.0, 5.0)
        MODE = "triple"
        _check(cu, uses_helper)
        _check(cm, moded)
    finally:
        SHIFT, MODE = (1.0, -1.0), "double"


def test_an_index_array_changed_in_place_traces_again():
    cf = tj.compile(indexed)
    try:
        _check(cf, indexed)
        IDX[:] = [3, 1]
        _check(cf, indexed)
    finally:
        IDX[:] = [0, 2]


def test_module_forward_and_gradients_see_the_new_value():
    global SCALE

    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(tj.ones(4))

        def forward(self, x):
            return scaled(x * self.w).sum()
    m = M()
    cm = tj.compile(m)
    g = tj.grad(tj.compile(lambda x: scaled(x).sum()))
    try:
        for value in (2.0, 5.0):
            SCALE = value
            m.w.grad = None
            cm(tj.tensor(X)).backward()
            np.testing.assert_array_equal(m.w.grad.numpy(), X * value)
            np.testing.assert_array_equal(g(X).numpy(), np.full(4, value))
    finally:
        SCALE = 2.0


def test_a_steady_loop_traces_once_and_a_counter_warns():
    cf = tj.compile(scaled)
    for _ in range(5):
        cf(X)
    assert cf.cache_info().misses == 1
    step = 0

    def f(x):
        return x * step
    cf = tj.compile(f)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        for step in range(12):
            np.testing.assert_array_equal(cf(X).numpy(), X * step)
    said = [w for w in seen if "traced again 8 times" in str(w.message)]
    assert len(said) == 1 and "'step'" in str(said[0].message)
    assert said[0].filename == __file__


@pytest.mark.parametrize("value", [[1.0], {"a": 1.0}])
def test_containers_contents_stay_constants_as_documented(value):
    # lists and dicts are guarded by identity only (a function may append to a log): their
    # contents are constants of the trace (README, "Captured tensors and arrays")
    def f(x):
        return x * (value[0] if isinstance(value, list) else value["a"])
    cf = tj.compile(f)
    cf(X)
    if isinstance(value, list):
        value[0] = 7.0
    else:
        value["a"] = 7.0
    np.testing.assert_array_equal(cf(X).numpy(), X)


def test_python_and_numpy_random_numbers_are_named_when_traced():
    import random
    from numpy.random import default_rng
    rng = default_rng(0)
    fns = {"np": lambda x: x + np.random.rand(), "random": lambda x: x * random.random(),
           "rng": lambda x: x + rng.normal()}
    for name, fn in fns.items():
        with pytest.warns(UserWarning, match=rf"random numbers \({name}\).*draws them once") \
                as seen:
            tj.compile(fn)(X)
        assert seen[0].filename == __file__
    with warnings.catch_warnings():
        warnings.simplefilter("error")             # tracejit's own random numbers: no warning
        tj.compile(lambda x: x + tj.rand(4))(X)
        tj.compile(indexed)(X)                      # numpy without its random module
