"""x.view(-1, k) / reshape resolve their shape reading x's element count once (#14: makemore's
`.view(-1, 30)` per step; the count was a product over the shape, taken three times), with
torch's results and errors for -1, zero sizes and bad shapes."""
import numpy as np
import pytest

import tracejit as tj
from tracejit.tracer import shape_ops
from tracejit.tracer.tensor_base import TensorBase

torch = pytest.importorskip("torch")


def test_shape_with_a_hole_reads_the_count_once(monkeypatch):
    x = tj.tensor(np.ones((53, 3, 10), np.float32))
    calls = []
    real = TensorBase.numel

    def counting(self):
        calls.append(1)
        return real(self)
    monkeypatch.setattr(TensorBase, "numel", counting)
    assert shape_ops._resolve_shape(x, (-1, 30)) == (53, 30)
    assert len(calls) == 1


@pytest.mark.parametrize("shape,new", [((53, 3, 10), (-1, 30)), ((53, 3, 10), (53, -1)),
                                       ((6,), (2, -1, 1)), ((1,), (-1,)), ((0, 4), (-1, 2)),
                                       ((0, 4), (0, -1)), ((2, 3), (6,)), ((), (-1,)),
                                       ((1,), ())])
def test_view_shapes_match_torch(shape, new):
    v = np.arange(int(np.prod(shape)), dtype=np.float32).reshape(shape)
    x = tj.tensor(v, requires_grad=True)
    tx = torch.tensor(v, requires_grad=True)
    try:
        want = tx.view(new)
    except RuntimeError:
        with pytest.raises((RuntimeError, ValueError)):
            x.view(*new)
        return
    y = x.view(*new)
    assert y.shape == tuple(want.shape)
    np.testing.assert_array_equal(y.detach().numpy(), want.detach().numpy())
    (y * 2.0).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), np.full(shape, 2.0, np.float32))


@pytest.mark.parametrize("new,msg", [((-1, -1), "only one dimension can be -1"),
                                     ((-2, -1), "cannot reshape"), ((-1, 0), "cannot reshape"),
                                     ((-1, 7), "cannot reshape"), ((5, 5), "cannot reshape")])
def test_bad_shapes_are_clear_errors(new, msg):
    x = tj.tensor(np.ones((4, 6)))
    with pytest.raises(ValueError, match=msg):
        x.reshape(*new)
    with pytest.raises(RuntimeError):
        torch.ones(4, 6).reshape(*new)
