"""A fused composite's node built without __init__ (tracer/fused.py `fused_node`) and a node's
own output saved without one (backward_nodes.py `saved_output`): no SavedTensor per input, no
version counter made for an output nothing checks, and the version errors, hooks and double
backward that the saved inputs and outputs carry, in both tiers, against torch."""
import gc

import numpy as np
import pytest

import tracejit as tj
import tracejit.nn.functional as F
from tracejit.tracer import backward_nodes, fused

torch = pytest.importorskip("torch")


def _count(cls) -> int:
    return sum(1 for o in gc.get_objects() if type(o) is cls)


def test_no_saved_tensor_per_input_and_no_output_counter(tier):
    """50 fused gelus keep their inputs (gelu's backward reads its input) without a
    SavedTensor object each, and make no version counter for an output no residual shares."""
    xv = np.random.default_rng(0).standard_normal((3, 4))
    x = tj.tensor(xv, requires_grad=True)
    h = x * 1.0
    F.gelu(h)                                  # (the plan built, compiled in that tier)
    gc.collect()
    before = _count(backward_nodes.SavedTensor)
    ys = [F.gelu(h) for _ in range(50)]
    assert _count(backward_nodes.SavedTensor) == before
    assert all(isinstance(y.grad_fn, fused.FusedNode) for y in ys)
    assert all(y._vc is None for y in ys)      # the output's counter: not made
    sum(y.sum() for y in ys).backward()
    tx = torch.tensor(xv, requires_grad=True)
    torch.nn.functional.gelu(tx * 1.0).sum().mul(50).backward()
    np.testing.assert_allclose(x.grad.numpy(), tx.grad.numpy(), rtol=1e-10)


def test_input_changed_before_the_call_then_again(tier):
    """An input whose counter is not 0 at the call: its version then is the one expected;
    a change after the call is an error naming the node (the versions kept on the node)."""
    for _ in range(2):
        xv = np.linspace(-2, 2, 12).reshape(3, 4)
        x = tj.tensor(xv, requires_grad=True)
        h = x * 1.0
        h.add_(1.0)                            # version 1 at the call
        y = F.gelu(h)
        z = F.gelu(h)
        y.sum().backward()                     # no change since: fine
        tx = torch.tensor(xv, requires_grad=True)
        torch.nn.functional.gelu(tx * 1.0 + 1.0).sum().backward()
        np.testing.assert_allclose(x.grad.numpy(), tx.grad.numpy(), rtol=1e-10)
        h.mul_(2.0)
        with pytest.raises(RuntimeError, match=r"is at version 2; expected version 1"):
            z.sum().backward()


def test_output_changed_in_place_after_the_call(tier):
    """softmax's and log_softmax's outputs changed in place after the call (their counters
    made then, not at the call): the gradient through the change is torch's at the values
    the call read (the residuals do not share the output's memory, so nothing is checked)."""
    wv = np.arange(6.0)
    for name in ("softmax", "log_softmax"):
        for _ in range(2):
            xv = np.linspace(-1, 1, 6)
            x = tj.tensor(xv, requires_grad=True)
            y = getattr(F, name)(x * 1.0, -1)
            assert y._vc is None
            y.mul_(2.0)
            (y * tj.tensor(wv)).sum().backward()
            tx = torch.tensor(xv, requires_grad=True)
            (getattr(torch, name)(tx * 1.0, -1) * 2.0 * torch.tensor(wv)).sum().backward()
            np.testing.assert_allclose(x.grad.numpy(), tx.grad.numpy(), rtol=1e-12)


def test_double_backward_checks_the_inputs_it_recomputes_on(tier):
    """create_graph recomputes the composite on its inputs: changed in place, an error; not
    changed, the second derivative is torch's."""
    xv = np.linspace(-1.5, 1.5, 8)
    x = tj.tensor(xv, requires_grad=True)
    h = x * 1.0
    y = F.gelu(h)
    (g,) = tj.autograd.grad(y.sum(), h, create_graph=True)
    g.sum().backward()
    tx = torch.tensor(xv, requires_grad=True)
    th = tx * 1.0
    (tg,) = torch.autograd.grad(torch.nn.functional.gelu(th).sum(), th, create_graph=True)
    tg.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), tx.grad.numpy(), rtol=1e-10)
    h2 = x * 1.0
    y2 = F.gelu(h2)
    h2.mul_(2.0)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        tj.autograd.grad(y2.sum(), x, create_graph=True)


def test_saved_output_of_a_prim_node_without_init():
    """exp's node keeps its output (saved_output): the same version check and unpacking."""
    x = tj.tensor(np.linspace(0, 1, 5), requires_grad=True)
    y = tj.exp(x)
    so = y.grad_fn.saved_out
    assert type(so) is backward_nodes.SavedOutput and so.array is y._data
    (g,) = tj.autograd.grad(y.sum(), x, create_graph=True)
    np.testing.assert_allclose(g.detach().numpy(), np.exp(np.linspace(0, 1, 5)))
    y.add_(1.0)
    with pytest.raises(RuntimeError, match=r"is at version 1; expected version 0"):
        y.sum().backward()
