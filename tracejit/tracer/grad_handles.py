"""Handles for differentiating a recomputed function with respect to its inputs inside a
backward pass (a fused composite or a composite under create_graph, a checkpoint under
create_graph).

Such a node runs the function again on its inputs and asks autograd.grad for the gradient
with respect to them. Asked with respect to the user's tensors themselves, that inner pass
ran their hooks and filled their retain_grad `.grad`, and the outer pass did it again when
it reached them: a hook that scales its gradient scaled it twice (double backward through
`y.mean()`, softmax, layer_norm, checkpoint with a hook on y gave wrong gradients, silently).
A handle has the input's value and an identity node onto it (AliasNode): the inner pass stops
there, and what it records (create_graph) still reaches the input."""
from __future__ import annotations

from .backward_nodes import AliasNode
from .tensor_base import TensorBase as Tensor


def handle(t: Tensor) -> Tensor:
    """t's value, requiring grad, whose gradient flows on to t (if t requires grad) through an
    identity node with no hooks of its own; in-place checks still see t's version."""
    h = Tensor(t._data)
    if t._requires_grad:
        h.grad_fn = AliasNode([t])
    h._requires_grad = True
    h._version = t._version
    return h


def follow_retained(t: Tensor, old_fn, old_idx: int) -> None:
    """t's history changed from (old_fn, old_idx) to its grad_fn now (an in-place op, or a
    view following its base): a retain_grad on t moves along, as torch's, whose `.grad` is
    then the gradient of t's latest version (it stayed with the old node: the gradient of the
    value before the in-place op, silently)."""
    if not t._retains_grad or old_fn is None or old_fn is t.grad_fn or not old_fn.retained:
        return
    ref = old_fn.retained.get(old_idx)
    if ref is None or ref() is not t:
        return
    del old_fn.retained[old_idx]
    node = t.grad_fn
    if node is not None:
        if node.retained is None:
            node.retained = {}
        node.retained[t._out_idx] = ref
