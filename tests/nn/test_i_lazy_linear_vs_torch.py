"""nn.LazyLinear against torch's: repr before/after, in_features read from the first input
(batched, batch 1, batch 0, unbatched), becoming nn.Linear, torch's init bounds, dtype that
follows .double() before materialization, load_state_dict materializing (nested too), then
values and gradients equal to torch's eagerly and under tj.compile; a first call inside
tj.compile is refused with a clear error."""
import numpy as np
import pytest
import torch

import tracejit as tj
from tracejit import nn


@pytest.mark.parametrize("shape", [(4, 3), (1, 3), (0, 3), (3,), (2, 5, 3)])
@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_lazy_linear_materializes_and_matches_torch(shape, compiled):
    tm, m = torch.nn.LazyLinear(6).double(), nn.LazyLinear(6).double()
    assert repr(m) == repr(tm)
    assert isinstance(m.weight, nn.UninitializedParameter) and m.has_uninitialized_params()
    x = np.random.default_rng(0).standard_normal(shape)
    tm(torch.tensor(x))
    m(tj.tensor(x))                                  # the first call is eager
    assert type(m) is nn.Linear and type(tm) is torch.nn.Linear
    assert repr(m) == repr(tm) and m.weight.dtype == tj.float64
    bound = 1 / np.sqrt(3)
    assert np.abs(m.weight.detach().numpy()).max() <= bound
    m.load_state_dict({k: v.detach().numpy() for k, v in tm.state_dict().items()})
    tx, jx = torch.tensor(x, requires_grad=True), tj.tensor(x, requires_grad=True)
    tout = tm(tx)
    out = (tj.compile(lambda a: m(a)) if compiled else m)(jx)
    np.testing.assert_allclose(out.detach().numpy(), tout.detach().numpy(), 1e-12, 1e-13)
    tout.sum().backward()
    out.sum().backward()
    np.testing.assert_allclose(jx.grad.numpy(), tx.grad.numpy(), 1e-12, 1e-13)
    for (n, p), (_, tp) in zip(m.named_parameters(), tm.named_parameters()):
        np.testing.assert_allclose(p.grad.numpy(), tp.grad.numpy(), 1e-12, 1e-13)


def test_load_state_dict_materializes_nested_and_no_bias():
    tm = torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.ReLU(),
                             torch.nn.Linear(4, 2, bias=False))
    m = nn.Sequential(nn.LazyLinear(4), nn.ReLU(), nn.LazyLinear(2, bias=False))
    assert m[2].bias is None
    m.load_state_dict({k: v.detach().numpy() for k, v in tm.state_dict().items()})
    assert [type(c).__name__ for c in m] == ["Linear", "ReLU", "Linear"]
    assert repr(m) == repr(tm)
    x = np.random.default_rng(1).standard_normal((3, 5)).astype(np.float32)
    np.testing.assert_allclose(m(tj.tensor(x)).detach().numpy(),
                               tm(torch.tensor(x)).detach().numpy(), 1e-5, 1e-6)


def test_first_call_inside_compile_and_bad_input_are_refused():
    m = nn.LazyLinear(3)
    with pytest.raises(RuntimeError, match=r"LazyLinear: its parameters are created at the "
                       r"first call, which must run eagerly"):
        tj.compile(lambda a: m(a))(tj.randn(2, 4))
    assert m.has_uninitialized_params()
    with pytest.raises(RuntimeError, match=r"LazyLinear: input .* needs a feature dim"):
        m(tj.tensor(1.0))
    m(tj.randn(2, 4))
    with pytest.raises(Exception, match=r"linear: input .* does not match weight"):
        m(tj.randn(2, 5))                           # fixed at 4 now, as torch's
