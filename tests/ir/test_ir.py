"""The IR: text round trip, verifier, passes and interpreter."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import tracejit as tj
from tracejit.ir import Aval, Graph, P, bind, const_like, dtypes as dt
from tracejit.ir.interpret import interpret
from tracejit.ir.parser import ParseError, parse_graph
from tracejit.ir.passes import cse, dce, fold_constants, optimize, simplify
from tracejit.ir.printer import print_graph
from tracejit.ir.verify import VerifyError, verify
from tracejit.tracer.trace import trace
from cases import CASES, float_positions, make_inputs
from randgraph import build, inputs, programs


def _graph(fn, xs):
    return trace(fn, xs, {}).graph


def _roundtrip(g: Graph) -> Graph:
    text = print_graph(g)
    g2 = verify(parse_graph(text))
    assert print_graph(g2) == text
    return g2


@pytest.mark.parametrize("name", sorted(CASES))
def test_roundtrip_every_case_forward_and_gradient(name):
    fn, _, specs = CASES[name]
    xs = make_inputs(specs, np.float32)
    traced = trace(fn, xs, {})
    g = traced.graph
    g2 = _roundtrip(g)
    ins = xs + [c._data for c in traced.captures]      # NumPy arrays a case reads are inputs
    for a, b in zip(interpret(g, ins), interpret(g2, ins)):
        np.testing.assert_array_equal(a, b)
    pos = tuple(float_positions(specs))
    if name != "cast":
        gg = tj.grad(tj.compile(lambda *a: fn(*a).sum()), argnums=pos).lower(*xs).graph
        _roundtrip(gg)


def test_text_form_matches_design():
    g = Graph("loss")
    x = g.add_input(Aval((512, 1024), dt.f32), "x")
    w = g.add_input(Aval((1024, 256), dt.f32), "w")
    b = g.add_input(Aval((256,), dt.f32), "b")
    h = bind(P.add, bind(P.matmul, x, w), bind(P.broadcast, b, shape=(512, 256)))
    g.outputs = [bind(P.sum, bind(P.tanh, h), axes=(0, 1))]
    text = print_graph(g, with_locs=False)
    assert text.splitlines()[0] == \
        "graph @loss(%x: f32[512,1024], %w: f32[1024,256], %b: f32[256]) -> (f32[]) {"
    assert "%1 = broadcast %b {shape=[512,256]}" in text
    assert "%4 = sum %3 {axes=[0,1]}" in text and text.endswith("  return %4\n}")


def test_constants_roundtrip_exactly():
    g = Graph("c")
    x = g.add_input(Aval((), dt.f32), "x")
    vals = [np.array(0.1, np.float32), np.array([np.inf, -np.inf, np.nan, -0.0], np.float64),
            np.arange(40, dtype=np.float32).reshape(5, 8) / 7, np.array([True, False]),
            np.array([[1, -2]], np.int32)]
    g.outputs = [const_like(x, v) for v in vals]
    g2 = _roundtrip(g)
    for a, b in zip(vals, interpret(g2, [np.float32(1)])):
        np.testing.assert_array_equal(a, b)
        assert a.dtype == b.dtype


def test_parse_errors():
    with pytest.raises(ParseError):
        parse_graph("nonsense")
    with pytest.raises(ParseError, match="undefined value %q"):
        parse_graph("graph @f(%x: f32[2]) -> (f32[2]) {\n  %0 = exp %q : f32[2]\n  return %0\n}")


def test_verifier_catches_bad_graphs():
    g = parse_graph("graph @f(%x: f32[2]) -> (f32[3]) {\n  %0 = exp %x : f32[3]\n  return %0\n}")
    with pytest.raises(VerifyError, match="exp: result typed f32\\[3\\], inference says f32\\[2\\]"):
        verify(g)
    g = Graph("f")
    x = g.add_input(Aval((2,), dt.f32), "x")
    y = bind(P.exp, x)
    g.outputs = [y]
    other = Graph("g")
    o = other.add_input(Aval((2,), dt.f32), "o")
    g.instrs[0].inputs = [o]
    with pytest.raises(VerifyError, match="before its definition|another graph"):
        verify(g)


def test_instructions_carry_user_location():
    g = _graph(lambda a: tj.exp(a) * 2, [np.ones(3, np.float32)])
    assert all(ins.loc.startswith("test_ir.py:") for ins in g.instrs)


def test_primitive_shape_errors_name_op():
    g = Graph("f")
    x = g.add_input(Aval((2, 3), dt.f32), "x")
    y = g.add_input(Aval((3,), dt.f32), "y")
    with pytest.raises(ValueError, match=r"add: operand shapes differ: f32\[2,3\], f32\[3\] "
                                         r"\(at test_ir\.py:\d+\)"):
        bind(P.add, x, y)
    with pytest.raises(TypeError, match=r"exp: needs a floating-point operand"):
        bind(P.exp, g.add_input(Aval((2,), dt.i32), "i"))
    with pytest.raises(ValueError, match=r"transpose: \[0, 0\] is not a permutation"):
        bind(P.transpose, x, perm=(0, 0))


def test_passes_individually():
    def f(x):
        a = x * 1.0 + 0.0                  # simplify: x
        b = x.T.T.reshape(6).reshape(2, 3)  # simplify: x
        c = tj.exp(x) + tj.exp(x)           # cse: one exp
        d = tj.tensor(np.float32(2.0)) * 3.0   # fold: constant 6
        unused = tj.sin(x)                  # noqa: F841 dce
        return a + b + c * d
    xs = [np.arange(6, dtype=np.float32).reshape(2, 3)]
    g = _graph(f, xs)
    want = interpret(g, xs)
    n0 = len(g.instrs)
    for p in (fold_constants, simplify, cse, dce):
        p(g)
        verify(g)
        np.testing.assert_allclose(interpret(g, xs)[0], want[0], rtol=1e-6)
    names = [i.prim.name for i in g.instrs]
    assert names.count("exp") == 1 and "sin" not in names and "transpose" not in names
    assert len(g.instrs) < n0 / 2


@settings(max_examples=60, deadline=None)
@given(programs, st.integers(0, 2**16))
def test_passes_preserve_results_on_random_graphs(prog, seed):
    xs = inputs(seed)
    g = _graph(build(prog), xs)
    before = interpret(g, xs)
    g2 = verify(optimize(_roundtrip(g)))
    after = interpret(g2, xs)
    for a, b in zip(before, after):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


@settings(max_examples=40, deadline=None)
@given(programs, st.integers(0, 2**16))
def test_eager_and_transform_agree_on_random_graphs(prog, seed):
    f = build(prog)
    xs = inputs(seed)
    loss = lambda x, y, z: f(x, y, z)[1].sum()          # noqa: E731
    ts = [tj.tensor(a, requires_grad=True) for a in xs]
    eager = tj.autograd.grad(loss(*ts), ts, allow_unused=True)
    comp = tj.grad(tj.compile(loss), argnums=(0, 1, 2))(*xs)
    for e, c, x in zip(eager, comp, xs):
        np.testing.assert_allclose(c.numpy(), e.numpy() if e is not None else np.zeros_like(x),
                                   rtol=1e-9, atol=1e-9)
