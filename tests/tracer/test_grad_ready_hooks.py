"""register_post_accumulate_grad_hook and the engine's queue_callback (what DDP builds on)."""
import pytest

import tracejit as tj
from tracejit.tracer.autograd import queue_callback


def test_post_accumulate_hook_sees_the_accumulated_grad():
    w = tj.tensor([1.0, 2.0], requires_grad=True)
    seen = []
    h = w.register_post_accumulate_grad_hook(lambda t: seen.append(t.grad.numpy().tolist()))
    (w * w).sum().backward()
    (w * 3).sum().backward()
    assert seen == [[2.0, 4.0], [5.0, 7.0]]
    h.remove()
    (w * 3).sum().backward()
    assert len(seen) == 2


def test_post_accumulate_hook_only_on_leaves_that_require_grad():
    w = tj.tensor([1.0], requires_grad=True)
    with pytest.raises(RuntimeError, match="non-leaf"):
        (w * 2).register_post_accumulate_grad_hook(lambda t: None)
    with pytest.raises(RuntimeError, match="non-leaf"):
        tj.tensor([1.0]).register_post_accumulate_grad_hook(lambda t: None)


def test_queue_callback_runs_after_every_gradient_is_accumulated():
    a = tj.tensor([1.0], requires_grad=True)
    b = tj.tensor([2.0], requires_grad=True)
    order = []

    def hook(t):
        order.append("a" if t is a else "b")
        if len(order) == 1:
            queue_callback(lambda: order.append(("end", a.grad.item(), b.grad.item())))
    a.register_post_accumulate_grad_hook(hook)
    b.register_post_accumulate_grad_hook(hook)
    (a * b).sum().backward()
    assert sorted(order[:2]) == ["a", "b"] and order[2] == ("end", 2.0, 1.0)


def test_queue_callback_outside_backward_is_an_error():
    with pytest.raises(RuntimeError, match="only be called while backward"):
        queue_callback(lambda: None)
