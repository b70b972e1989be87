"""Graph.emit_copy: a graph rewrite's copy of an instruction. On operands of its operands'
types it keeps its parameters and result type without inference; on operands of other types
it is a plain emit (inferred again, errors included)."""
import numpy as np
import pytest

from tracejit.ir import Aval, Graph, P, dtypes as dt
from tracejit.ir.interpret import interpret


def _source():
    g = Graph("src")
    x = g.add_input(Aval((3, 4), dt.f32), "x")
    s = g.emit(P.sum, [x], {"axes": (0,)})
    b = g.emit(P.broadcast, [s], {"shape": (3, 4)})
    g.outputs = [g.emit(P.mul, [x, b], {})]
    return g


def test_a_copy_on_operands_of_the_same_types_keeps_type_params_and_location():
    src = _source()
    new = Graph("copy")
    env = {v: new.add_input(v.aval, v.name) for v in src.inputs}
    for ins in src.instrs:
        env[ins.out] = new.emit_copy(ins, [env[v] for v in ins.inputs])
    new.outputs = [env[v] for v in src.outputs]
    for a, b in zip(src.instrs, new.instrs):
        assert (a.prim, a.params, a.out.aval, a.loc) == (b.prim, b.params, b.out.aval, b.loc)
        assert all(v.graph is new for v in b.inputs)
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    np.testing.assert_array_equal(interpret(new, [x])[0], interpret(src, [x])[0])


def test_a_copy_on_operands_of_other_types_is_inferred_again():
    src = _source()
    new = Graph("copy")
    y = new.add_input(Aval((3, 4), dt.f64), "y")
    s = new.emit_copy(src.instrs[0], [y])
    assert s.aval == Aval((4,), dt.f64)
    z = new.add_input(Aval((5,), dt.f32), "z")
    with pytest.raises(Exception, match="broadcast"):
        new.emit_copy(src.instrs[1], [z])
