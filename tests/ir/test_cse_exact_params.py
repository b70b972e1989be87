"""CSE merges two instructions only if their parameters mean the same thing: it keys them by
ir/exact_params.py's exact forms, the rule the disk cache and the kernel keys use. Plain
equality (the old key) would merge 0.0 with -0.0, True with 1, 1 with 1.0 and such values
inside tuples; the registry's normalization keeps today's primitives' parameters to ints, bools,
dtypes and arrays, so these are checked on the key itself and, end to end, on compiled
functions whose results differ only through such values."""
import numpy as np
import pytest
import torch

import tracejit as tj
from tracejit.ir import Aval, Graph, P, dtypes as dt
from tracejit.ir.interpret import interpret
from tracejit.ir.passes import _param_key, cse

DIFFERENT = [(0.0, -0.0), (True, 1), (1, 1.0), (False, 0), ((0.0, 1), (-0.0, 1)),
             ((True,), (1,)), (np.float64(0.0), np.float64(-0.0)),
             (np.array([0.0]), np.array([-0.0])), (np.array([1], np.int32), np.array([1])),
             (dt.f32, dt.f64), ([1, 2], (1, 2))]


@pytest.mark.parametrize("a, b", DIFFERENT, ids=repr)
def test_param_keys_tell_apart_values_plain_equality_confuses(a, b):
    assert _param_key({"p": a}) != _param_key({"p": b})
    assert _param_key({"p": a, "q": 1}) != _param_key({"p": b, "q": 1})


def test_param_keys_agree_for_equal_values():
    nan = float("nan")
    assert _param_key({"p": nan}) == _param_key({"p": float("nan")})   # same bits
    assert _param_key({"p": np.array([nan, 0.0])}) == _param_key({"p": np.array([nan, 0.0])})
    assert _param_key({"a": (1, 2), "b": True}) == _param_key({"b": True, "a": (1, 2)})
    assert _param_key({}) == ()


def test_param_without_exact_form_is_never_merged():
    assert _param_key({"p": object()}) is None
    g = Graph("t")
    x = g.add_input(Aval((2,), dt.f64), "x")
    a, b = g.emit(P.exp, [x], {}), g.emit(P.exp, [x], {})
    for v in (a, b):
        v.producer.params = {"odd": object()}      # (what no registered primitive makes)
    g.outputs = [a, b]
    cse(g)
    assert len(g.instrs) == 2


def test_cse_keeps_constants_of_signed_zeros_apart():
    g = Graph("t")
    x = g.add_input(Aval((), dt.f64), "x")
    c0 = g.emit(P.constant, [], {"value": np.array(0.0)})
    c1 = g.emit(P.constant, [], {"value": np.array(-0.0)})
    g.outputs = [g.emit(P.mul, [x, c0], {}), g.emit(P.mul, [x, c1], {})]
    cse(g)
    pos, neg = interpret(g, [np.array(2.0)])
    assert not np.signbit(pos) and np.signbit(neg)


def test_compiled_results_differing_only_through_signed_zero_and_bool_params():
    @tj.compile
    def f(x):
        return (x * 0.0, x * -0.0, tj.clamp(x, min=0.0), tj.clamp(x, min=-0.0),
                tj.full_like(x, True), tj.full_like(x, 1), x + float("nan"))

    x = np.array([-1.0, -0.0, 0.0, 2.0])
    got = [o.numpy() for o in f(tj.tensor(x))]
    t = torch.tensor(x)
    want = [t * 0.0, t * -0.0, torch.clamp(t, min=0.0), torch.clamp(t, min=-0.0),
            torch.full_like(t, True), torch.full_like(t, 1), t + float("nan")]
    for g_, w in zip(got, want):
        w = w.numpy()
        assert g_.dtype == w.dtype
        np.testing.assert_array_equal(g_, w)
        np.testing.assert_array_equal(np.signbit(g_), np.signbit(w))
