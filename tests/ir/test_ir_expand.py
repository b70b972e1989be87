"""ir.core.expand: the one rewrite by which the backends lower composite primitives before
fusion (expand_convs: conv2d and its gradients; expand_arg_reductions: argmax/argmin)."""
from __future__ import annotations

import numpy as np

import tracejit as tj
from tracejit.ir.core import expand
from tracejit.ir.interpret import interpret
from tracejit.ir.prims_conv import expand_convs
from tracejit.ir.prims_select import expand_arg_reductions
from tracejit.ir.primitives import P, bind


def _graph(f, *args):
    return tj.compile(f).lower(*args).graph


def _names(g) -> list[str]:
    return [ins.prim.name for ins in g.instrs]


def test_a_graph_without_a_rule_is_returned_as_it_is():
    g = _graph(lambda x: x * 2 + 1, np.ones(3))
    assert expand(g, {"argmax": lambda args, p: args[0]}) is g
    assert expand_convs(g) is g and expand_arg_reductions(g) is g


def test_rules_replace_their_instructions_at_the_same_location():
    x = np.arange(6.0).reshape(2, 3)
    g = _graph(lambda x: tj.exp(x) * 3, x)
    new = expand(g, {"exp": lambda args, p: bind(P.mul, args[0], args[0])})
    assert "exp" not in _names(new) and "exp" in _names(g)     # g itself is untouched
    exp_loc = next(ins.loc for ins in g.instrs if ins.prim.name == "exp")
    assert any(ins.prim.name == "mul" and ins.loc == exp_loc for ins in new.instrs)
    np.testing.assert_array_equal(interpret(new, [x])[0], x * x * 3)
    np.testing.assert_allclose(interpret(g, [x])[0], np.exp(x) * 3)


def test_backend_expansions_keep_the_values():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 6, 6))
    w = rng.standard_normal((4, 3, 3, 3))
    g = _graph(lambda x, w: tj.nn.functional.conv2d(x, w, padding=1).argmax(1), x, w)
    new = expand_arg_reductions(expand_convs(g))
    assert not {"conv2d", "argmax"} & set(_names(new)), _names(new)
    np.testing.assert_array_equal(interpret(new, [x, w])[0], interpret(g, [x, w])[0])
