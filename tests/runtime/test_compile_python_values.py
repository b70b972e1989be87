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
def test_containers_contents_read_by_constant_key_are_guarded(value):
    # a list or dict is guarded by identity (a function may append to a log), and the items it
    # reads by a constant index or key by value: value[0] = 7.0 traces again
    def f(x):
        return x * (value[0] if isinstance(value, list) else value["a"])
    cf = tj.compile(f)
    cf(X)
    if isinstance(value, list):
        value[0] = 7.0
    else:
        value["a"] = 7.0
    _check(cf, f)
    assert cf.cache_info().misses == 2


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


# --- values read through global or closure objects: cfg.lr, CFG["scale"], SCALES[0] ---

class Cfg:
    eps = 1e-3                      # a class-level constant

    def __init__(self, lr, **more):
        self.lr = lr
        self.__dict__.update(more)


CFG = Cfg(2.0, sub=Cfg(0.5))
TABLE = {"scale": 3.0, "names": ("a", "b")}
SCALES = [1.5, -2.0]


def through_objects(x):
    return x * CFG.lr + CFG.sub.lr + TABLE["scale"] * SCALES[-1] + Cfg.eps


def test_an_attribute_of_a_global_object_changed_traces_again():
    cf = tj.compile(through_objects)
    try:
        _check(cf, through_objects)
        for change in (lambda: setattr(CFG, "lr", 3.0), lambda: setattr(CFG.sub, "lr", 4.0),
                       lambda: TABLE.update(scale=-1.0), lambda: SCALES.__setitem__(1, 8.0),
                       lambda: setattr(Cfg, "eps", 0.25)):
            misses = cf.cache_info().misses
            change()
            _check(cf, through_objects)             # each was baked in silently before
            assert cf.cache_info().misses == misses + 1
        for _ in range(3):                         # unchanged: the trace is reused
            _check(cf, through_objects)
        assert cf.cache_info().misses == 6
    finally:
        CFG.lr, CFG.sub.lr, TABLE["scale"], SCALES[1], Cfg.eps = 2.0, 0.5, 3.0, -2.0, 1e-3


def test_nested_attributes_and_items_of_a_closure_object():
    import argparse
    args = argparse.Namespace(model=argparse.Namespace(eps=0.5, sizes=(2, 3)),
                              opts={"t": 2.0})

    def f(x):
        return x / args.opts["t"] + args.model.eps * args.model.sizes[1]
    cf = tj.compile(f)
    _check(cf, f)
    args.model.eps = 7.0
    _check(cf, f)
    args.model.sizes = (1, 5)
    _check(cf, f)
    args.opts["t"] = 4.0
    _check(cf, f)
    args.model = argparse.Namespace(eps=1.0, sizes=(0, 1))     # an intermediate rebound
    _check(cf, f)
    assert cf.cache_info().misses == 5


def test_a_method_call_is_not_a_guarded_value_and_its_receiver_is():
    class Opts:
        def __init__(self):
            self.name, self.lr = "double", 2.0

        def factor(self):
            return 3.0

    opts = Opts()

    def f(x):
        k = 2.0 if opts.name.upper() == "DOUBLE" else 1.0       # guards opts.name
        return x * k * opts.factor() + opts.lr                   # opts.factor: not a value
    cf = tj.compile(f)
    _check(cf, f)
    _check(cf, f)
    assert cf.cache_info().misses == 1
    opts.name = "single"
    _check(cf, f)
    opts.lr = -1.0
    _check(cf, f)
    assert cf.cache_info().misses == 3


def test_a_property_is_never_run_by_a_guard_and_one_that_raises_is_fine():
    class C:
        calls = 0

        def __init__(self):
            self.scale = 2.0

        @property
        def broken(self):
            C.calls += 1
            raise RuntimeError("no")

        @property
        def double(self):
            C.calls += 1
            return self.scale * 2

    c = C()

    def f(x):
        try:
            extra = c.broken
        except RuntimeError:
            extra = 1.0
        return x * c.scale + extra + c.double
    cf = tj.compile(f)
    _check(cf, f)
    seen = C.calls
    for _ in range(5):
        cf(X)
    assert C.calls == seen              # cached calls run no user code
    c.scale = 5.0                       # the plain attribute is guarded
    _check(cf, f)
    assert cf.cache_info().misses == 2


def test_a_steady_loop_over_object_values_traces_once_then_a_change_retraces():
    cfg = Cfg(0.5, steps=(1, 2))

    def f(x):
        for s in cfg.steps:
            x = x * cfg.lr + s
        return x
    cf = tj.compile(f)
    for _ in range(6):
        _check(cf, f)
    assert cf.cache_info().misses == 1
    cfg.steps = (1, 2, 3)
    _check(cf, f)
    assert cf.cache_info().misses == 2


def test_gradients_and_plain_transforms_see_the_new_attribute():
    cfg = Cfg(2.0)
    loss = lambda x: (x * x * cfg.lr).sum()       # noqa: E731
    g_compiled = tj.grad(tj.compile(loss))
    g_plain = tj.grad(loss)                        # the plain transforms' cache
    for lr in (2.0, 5.0, -1.0):
        cfg.lr = lr
        np.testing.assert_array_equal(g_compiled(X).numpy(), 2 * X * lr)
        np.testing.assert_array_equal(g_plain(X).numpy(), 2 * X * lr)


def test_a_namedtuple_field_and_a_counter_attribute_are_named_when_it_retraces():
    from collections import namedtuple
    P = namedtuple("P", "lr step")
    state = [P(2.0, 0)]
    p = state[0]

    def f(x):
        return x * p.lr + p.step
    cf = tj.compile(f)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        for step in range(10):
            p = P(2.0, step)
            np.testing.assert_array_equal(cf(X).numpy(), X * 2.0 + step)
    said = [w for w in seen if "traced again 8 times" in str(w.message)]
    assert len(said) == 1 and "'p.step'" in str(said[0].message), [str(w.message) for w in seen]


def test_a_settings_module_attribute_is_guarded_and_paths_are_bounded():
    import types
    from tracejit.tracer.const_chains import MAX_CHAINS
    from tracejit.tracer.const_guards import const_bindings
    settings = types.ModuleType("settings")        # `import settings; settings.SCALE`
    settings.SCALE = 2.0

    def f(x):
        return x * settings.SCALE
    cf = tj.compile(f)
    _check(cf, f)
    settings.SCALE = -3.0
    _check(cf, f)
    wide = types.SimpleNamespace(**{f"a{i}": float(i) for i in range(MAX_CHAINS + 6)})
    src = "def g(x):\n    return x + " + " + ".join(f"wide.a{i}" for i in range(MAX_CHAINS + 6))
    scope = {"wide": wide}
    exec(src, scope)
    paths = [name for _, name, _, _ in const_bindings(scope["g"]) if name.startswith("wide.")]
    assert len(paths) == MAX_CHAINS


factor = 0          # a global named like the method below: `for factor in ...` at top level


class _Opt:
    def factor(self):
        return 3.0


OPT = _Opt()


def calls_a_method(x):
    return x * OPT.factor()


def test_a_global_named_like_an_attribute_is_not_guarded():
    # an attribute name is no read of the global of that name: a module-level training loop
    # `for step in ...` calling `opt.step()` traced again every step
    global factor
    cf = tj.compile(calls_a_method)
    try:
        for factor in range(10):
            _check(cf, calls_a_method)
        assert cf.cache_info().misses == 1
    finally:
        factor = 0


def test_a_compiled_modules_config_object_is_guarded():
    import types

    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.config = types.SimpleNamespace(eps=0.5, sizes=(1, 2))
            self.w = nn.Parameter(tj.ones(4))
            self.scale = 2.0                  # the module's own attribute: module_guards.py

        def forward(self, x):
            return (x * self.w * self.scale + self.config.eps * self.config.sizes[1]).sum()
    m = M()
    cm = tj.compile(m)
    for change in (None, lambda: setattr(m.config, "eps", 3.0),
                   lambda: setattr(m.config, "sizes", (4, 5)), lambda: setattr(m, "scale", -1.0),
                   lambda: setattr(m, "config", types.SimpleNamespace(eps=1.0, sizes=(0, 7)))):
        if change is not None:
            change()
        m.w.grad = None
        out = cm(tj.tensor(X))
        out.backward()
        assert out.item() == (X * m.scale + m.config.eps * m.config.sizes[1]).sum()
        np.testing.assert_array_equal(m.w.grad.numpy(), X * m.scale)
