"""A view that reads all of its base unchanged (x[:], x[...], an identity permute, reshape to
the same shape, expand to the same shape, a squeeze without unit axes, a full narrow) keeps a
gradient path to its base after an in-place update of the base (`with no_grad(): x.mul_(2)`,
an optimizer step, `x.detach().zero_()`). Recomputing such a view from its base gave the base
itself, whose history (a leaf: none) replaced the view's: the view became a leaf of its own
and the base's gradient through it was lost, silently."""
import numpy as np
import pytest

import tracejit as tj

torch = pytest.importorskip("torch")

VIEWS = {
    "x[:]": lambda x: x[:],
    "x[...]": lambda x: x[...],
    "identity permute": lambda x: x.permute(0, 1),
    "same-shape reshape": lambda x: x.reshape(2, 3),
    "same-shape view": lambda x: x.view(2, 3),
    "same-shape expand": lambda x: x.expand(2, 3),
    "squeeze without unit axes": lambda x: x.squeeze(),
    "full narrow": lambda x: x.narrow(0, 0, 2),
    "x[:, :]": lambda x: x[:, :],
}
UPDATES = {
    "no_grad mul_": lambda lib, x: _no_grad(lib, lambda: x.mul_(2.0)),
    "detach().zero_()": lambda lib, x: x.detach().zero_(),
    "data.add_": lambda lib, x: x.data.add_(1.0),
}


def _no_grad(lib, fn):
    with lib.no_grad():
        fn()


@pytest.mark.parametrize("update", sorted(UPDATES))
@pytest.mark.parametrize("view", sorted(VIEWS))
def test_identity_view_keeps_its_gradient_path_after_the_base_changes(view, update):
    a = np.arange(6.0).reshape(2, 3)
    w = np.linspace(-1.0, 1.0, 6).reshape(2, 3)
    got = []
    for lib in (tj, torch):
        x = lib.tensor(a, requires_grad=True)
        v = VIEWS[view](x)
        UPDATES[update](lib, x)
        assert v.grad_fn is not None
        (v * lib.tensor(w) * v).sum().backward()
        got.append((v.detach().numpy().copy(), x.grad.numpy().copy()))
    np.testing.assert_allclose(got[0][0], got[1][0])
    np.testing.assert_allclose(got[0][1], got[1][1])
