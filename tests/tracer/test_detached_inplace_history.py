"""An in-place op with an operand that requires grad on `x.detach()` (or `x.data`) gives that
tensor the op's history, as torch's (its detach() is no autograd view of x): tracejit kept
it without history, so the operand's gradient through it was dropped, silently. The base x
keeps its own history, and a later in-place change of x leaves the detached tensor's history
alone."""
import numpy as np
import pytest

import tracejit as tj

torch = pytest.importorskip("torch")

OPS = {
    "add_": lambda d, b: d.add_(b),
    "copy_": lambda d, b: d.copy_(b),
    "mul_ (no grad on d)": lambda d, b: d.sub_(b * 2.0),
    "setitem": lambda d, b: d.__setitem__(slice(0, 2), b[:2]),
}


@pytest.mark.parametrize("alias", ["detach", "data"])
@pytest.mark.parametrize("op", sorted(OPS))
def test_in_place_on_a_detached_alias_records_the_operand(op, alias):
    got = []
    for lib in (tj, torch):
        x = lib.tensor(np.array([1.0, 2.0, 3.0]), requires_grad=True)
        b = lib.tensor(np.array([0.5, -1.0, 2.0]), requires_grad=True)
        d = x.detach() if alias == "detach" else x.data
        OPS[op](d, b)
        assert d.requires_grad
        with lib.no_grad():
            x.mul_(2.0)             # the base changes again: d's history stays
        loss = (d * lib.tensor([1.0, 2.0, 3.0])).sum() + (x * x).sum()
        loss.backward()
        got.append((d.detach().numpy().copy(), x.detach().numpy().copy(), b.grad.numpy(),
                    x.grad.numpy()))
    for a, c in zip(*got):
        np.testing.assert_allclose(a, c)
