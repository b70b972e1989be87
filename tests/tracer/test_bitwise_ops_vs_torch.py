"""`&`, `|`, `^`, `~` and logical_xor against torch: logical on bools (tensors and Python
bools), an error naming the op on integers (bitwise there, not supported yet: a logical answer
would be silently wrong) and on floats (torch refuses them too). Eagerly and compiled."""
import numpy as np
import pytest

import tracejit as tj

torch = pytest.importorskip("torch")

M = np.array([[True, False, True], [False, False, True]])
N = np.array([True, False, False])
OPS = {"and": lambda a, b: a & b, "or": lambda a, b: a | b, "xor": lambda a, b: a ^ b,
       "rand": lambda a, b: True & a, "rxor": lambda a, b: False ^ b, "not": lambda a, b: ~a,
       "method": lambda a, b: a.bitwise_xor(b)}


@pytest.mark.parametrize("compiled", [False, True])
@pytest.mark.parametrize("op", sorted(OPS))
def test_bool_operands_are_logical(op, compiled):
    f = OPS[op]
    fn = tj.compile(f) if compiled else f
    got = fn(tj.tensor(M), tj.tensor(N))
    want = f(torch.tensor(M), torch.tensor(N))
    assert got.dtype == tj.bool_
    np.testing.assert_array_equal(got.numpy(), want.numpy())


@pytest.mark.parametrize("compiled", [False, True])
def test_logical_xor_of_any_dtypes(compiled):
    a, b = np.array([0, 3, -1, 0]), np.array([0.0, 0.0, 2.5, np.nan])
    fn = tj.compile(tj.logical_xor) if compiled else tj.logical_xor
    np.testing.assert_array_equal(fn(tj.tensor(a), tj.tensor(b)).numpy(),
                                  torch.logical_xor(torch.tensor(a), torch.tensor(b)).numpy())
    np.testing.assert_array_equal(tj.tensor(a).logical_xor(tj.tensor(a)).numpy(),
                                  np.zeros(4, bool))


@pytest.mark.parametrize("op", sorted(OPS))
def test_integer_operands_raise_instead_of_a_logical_answer(op):
    a, b = tj.tensor(np.array([6, 5])), tj.tensor(np.array([3, 1]))
    with pytest.raises(NotImplementedError, match=r"bitwise_\w+ \(.\): on integer operands.*"
                                                  r"i64\[2\].*test_bitwise_ops_vs_torch.py"):
        OPS[op](a, b)
    with pytest.raises(NotImplementedError, match="bitwise"):
        tj.compile(OPS[op])(np.array([6, 5]), np.array([3, 1]))


def test_float_operands_raise_as_in_torch():
    x = tj.tensor(np.array([1.5]))
    with pytest.raises(TypeError, match=r"bitwise_or \(\|\).*floating-point.*f64\[1\]"):
        x | x
    with pytest.raises(NotImplementedError):
        torch.tensor([1.5]) | torch.tensor([1.5])
