"""The argmax, argmin and iota primitives: shape rules and errors, the text form, and the
expansion the backends lower them by (max/min, comparisons, where, iota), which must agree
with the NumPy implementation the interpreter and eager mode run, NaNs and ties included."""
from __future__ import annotations

import numpy as np
import pytest

import tracejit as tj
from tracejit.ir import Aval, Graph, P, bind, dtypes as dt
from tracejit.ir.interpret import interpret
from tracejit.ir.parser import parse_graph
from tracejit.ir.printer import print_graph
from tracejit.ir.prims_select import expand_arg_reductions
from tracejit.ir.verify import verify


def _arg_graph(shape, dtype: dt.DType) -> Graph:
    """Every argmax/argmin of an input over each of its axes, plus an iota."""
    g = Graph("args")
    x = g.add_input(Aval(shape, dtype), "x")
    outs = []
    for axis in range(len(shape)):
        outs += [bind(P.argmax, x, axis=axis), bind(P.argmin, x, axis=axis)]
    outs.append(bind(P.iota, x, axis=len(shape) - 1))
    g.outputs = outs
    return g


def _data(shape, dtype):
    rng = np.random.default_rng(0)
    if dtype.is_float:
        x = rng.integers(-3, 4, shape).astype(dtype.np)      # many ties
        flat = x.reshape(-1)
        flat[rng.choice(flat.size, max(1, flat.size // 7), replace=False)] = np.nan
        flat[:2] = [np.inf, -np.inf]
        return x
    return rng.integers(-3, 4, shape).astype(dtype.np)


@pytest.mark.parametrize("dtype", [dt.f32, dt.f64, dt.f16, dt.bf16, dt.i32, dt.i64],
                         ids=lambda d: d.name)
@pytest.mark.parametrize("shape", [(7,), (5, 9), (3, 1, 6)], ids=str)
def test_expansion_agrees_with_numpy(shape, dtype):
    g = _arg_graph(shape, dtype)
    x = _data(shape, dtype)
    want = interpret(g, [x])
    expanded = expand_arg_reductions(g)
    assert not any(i.prim.name in ("argmax", "argmin") for i in expanded.instrs)
    for w, e in zip(want, interpret(verify(expanded), [x])):
        assert w.dtype == e.dtype == np.int64 and (w == e).all()
    a = x.astype(np.float32) if dtype in (dt.f16, dt.bf16) else x
    assert (want[0] == np.argmax(a, axis=0)).all() and (want[1] == np.argmin(a, axis=0)).all()
    assert (want[-1] == np.broadcast_to(np.arange(shape[-1]), shape)).all()
    # and the compiled code (the LLVM backend lowers the expansion)
    got = tj.compile(lambda v: tuple(tj.argmax(v, a) for a in range(len(shape))) +
                     tuple(tj.argmin(v, a) for a in range(len(shape))))(x)
    for k, axis in enumerate(list(range(len(shape))) * 2):
        fn = np.argmax if k < len(shape) else np.argmin
        assert (got[k].numpy() == fn(a, axis=axis)).all(), (k, axis)


def test_text_round_trip_and_no_expansion_without_arg_reductions():
    g = _arg_graph((4, 5), dt.f32)
    text = print_graph(g)
    assert "argmax %x {axis=0}" in text and "iota %x {axis=1}" in text
    assert print_graph(verify(parse_graph(text))) == text
    plain = Graph("plain")
    plain.outputs = [bind(P.exp, plain.add_input(Aval((3,), dt.f32), "x"))]
    assert expand_arg_reductions(plain) is plain


def test_shape_rules_and_errors():
    g = Graph("bad")
    x = g.add_input(Aval((3, 0), dt.f32), "x")
    assert bind(P.argmax, x, axis=0).aval == Aval((0,), dt.i64)
    with pytest.raises(IndexError, match=r"argmin: cannot reduce over the empty axis 1"):
        bind(P.argmin, x, axis=1)
    with pytest.raises(ValueError, match="argmax: invalid axis 2"):
        bind(P.argmax, x, axis=2)
    with pytest.raises(TypeError, match="argmax: does not take bool operands"):
        bind(P.argmax, np.zeros(3, bool), axis=0)
    with pytest.raises(ValueError, match="iota: invalid axis 1"):
        bind(P.iota, np.zeros(3), axis=1)
