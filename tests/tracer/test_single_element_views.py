"""A tensor of one element can be viewed as any shape of one element, whatever chain of views
made it (torch: always a view). tracejit's layout probe refused some chains (through
detach() or unbind) with 'view size is not compatible'."""
import numpy as np
import pytest

import tracejit as tj

torch = pytest.importorskip("torch")

CHAINS = {
    "unbind then detach": lambda x: x.unbind(0)[1].detach(),
    "select": lambda x: x.select(0, 1),
    "slice then transpose": lambda x: x[1:].view(1, 1).t(),
    "detach then select": lambda x: x.detach()[1],
}


@pytest.mark.parametrize("shape", [(1,), (1, 1), ()])
@pytest.mark.parametrize("chain", sorted(CHAINS))
def test_one_element_views_as_any_one_element_shape(chain, shape):
    got = []
    for lib in (tj, torch):
        x = lib.tensor(np.array([1.0, 2.0]))
        v = CHAINS[chain](x).view(shape)
        v.add_(10.0)                    # a view: writes through to x
        got.append((x.numpy().copy(), v.numpy().copy(), tuple(v.shape)))
    np.testing.assert_array_equal(got[0][0], got[1][0])
    np.testing.assert_array_equal(got[0][1], got[1][1])
    assert got[0][2] == got[1][2]
