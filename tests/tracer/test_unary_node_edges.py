"""A one-operand primitive's node (PrimNode's unrolled unary case): its edge to a leaf's
AccumulateGrad or to the producing node, the need pattern, the saved output's version check."""
import numpy as np
import pytest

import tracejit as tj


def test_edges_to_a_leaf_and_to_a_node():
    x = tj.tensor(np.linspace(0.1, 1.0, 6).reshape(2, 3), requires_grad=True)
    y = tj.tanh(x)
    (node, idx), = y.grad_fn.next_functions
    assert node.name() == "AccumulateGrad" and idx == 0 and node.variable is x
    z = tj.exp(y)
    assert z.grad_fn.next_functions == ((y.grad_fn, 0),)
    assert z.grad_fn.need == (True,)
    t = x.T
    assert t.grad_fn.next_functions[0][0] is node      # one AccumulateGrad per leaf
    z.sum().backward()
    want = np.exp(np.tanh(x.detach().numpy())) * (1 - np.tanh(x.detach().numpy()) ** 2)
    np.testing.assert_allclose(x.grad.numpy(), want, rtol=1e-6)


def test_saved_output_changed_in_place_is_an_error():
    x = tj.tensor(np.ones(3), requires_grad=True)
    y = tj.tanh(x)
    with tj.no_grad():
        y.mul_(2.0)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.sum().backward()


def test_no_grad_input_has_no_node():
    c = tj.tensor(np.ones(3))
    assert tj.tanh(c).grad_fn is None and not tj.tanh(c).requires_grad
    x = tj.tensor(np.ones(3), requires_grad=True)
    with tj.no_grad():
        assert tj.tanh(x).grad_fn is None
