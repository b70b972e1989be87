"""Double backward (create_graph=True) through a fused composite (mean, softmax), a composite
run op by op (layer_norm with a list shape) and a checkpoint runs the hooks and retain_grad of
their inputs once, as torch: the recomputing node asked autograd.grad for the gradient with
respect to the inputs themselves, so that inner pass ran their hooks too and a hook that
scales its gradient scaled it twice (silently wrong gradients; tracer/grad_handles.py)."""
import numpy as np
import pytest

import tracejit as tj
import tracejit.nn.functional as tjF

torch = pytest.importorskip("torch")
import torch.nn.functional as thF  # noqa: E402
import torch.utils.checkpoint  # noqa: E402

X = np.array([[0.7, -0.2, 0.4, 1.1], [0.3, 0.9, -1.2, 0.5]])
W = np.arange(8.0).reshape(2, 4) / 7


def _checkpoint(lib):
    if lib is tj:
        return tj.checkpoint
    return lambda f, *a: torch.utils.checkpoint.checkpoint(f, *a, use_reentrant=False)


OPS = {
    "mean": lambda lib, F, y: y.mean(1) * 5.0,
    "softmax": lambda lib, F, y: F.softmax(y, -1) * lib.tensor(W),
    "layer_norm, list shape": lambda lib, F, y: F.layer_norm(y, [4]) * lib.tensor(W),
    "checkpoint": lambda lib, F, y: _checkpoint(lib)(lambda t: t.tanh() * lib.tensor(W), y),
}


def _run(lib, F, op, where):
    x = lib.tensor(X, requires_grad=True)
    y = x if where == "leaf" else x * 1.0
    calls = []
    if where == "retain_grad":
        y.retain_grad()
    else:
        y.register_hook(lambda g: calls.append(1) or g * 0.5)
    out = OPS[op](lib, F, y)
    g, = lib.autograd.grad(out.sum() + (y * y).sum(), [x], create_graph=True)
    (g * g).sum().backward()
    res = [g.detach().numpy(), x.grad.numpy(), len(calls)]
    if where == "retain_grad":
        res.append(y.grad.numpy())
    return res


@pytest.mark.parametrize("where", ["intermediate", "leaf", "retain_grad"])
@pytest.mark.parametrize("op", sorted(OPS))
def test_double_backward_runs_input_hooks_once(op, where):
    got, want = _run(tj, tjF, op, where), _run(torch, thF, op, where)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
