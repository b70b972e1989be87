"""x[:, a:b]-style keys (two slices: the unrolled _signature path of eager_views) read, write
through and differentiate as torch's, for every kind of bound the key may hold."""
import numpy as np
import pytest

import tracejit as tj

torch = pytest.importorskip("torch")

KEYS = [(slice(None), slice(None, 3)), (slice(1, None), slice(2, 5)), (slice(None), slice(-3, None)),
        (slice(None, None, 2), slice(1, 6, 2)), (slice(0, 2), slice(4, 1)),
        (slice(np.int64(1), None), slice(None, 3)), (slice(None), slice(None, np.int64(-2)))]


@pytest.mark.parametrize("key", KEYS, ids=str)
def test_two_slice_views_match_torch(key):
    rng = np.random.default_rng(3)
    a = rng.standard_normal((4, 6))
    w = rng.standard_normal(a[key].shape)
    x, xt = tj.tensor(a, requires_grad=True), torch.tensor(a, requires_grad=True)
    for _ in range(2):              # the second call takes the cached plan
        y, yt = (x * 1.0)[key], (xt * 1.0)[key]
        np.testing.assert_array_equal(y.detach().numpy(), yt.detach().numpy())
        (y * tj.tensor(w)).sum().backward()
        (yt * torch.tensor(w)).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), xt.grad.numpy(), rtol=1e-15)


def test_two_slice_view_writes_through():
    a = np.arange(24.0).reshape(4, 6)
    x, xt = tj.tensor(a.copy()), torch.tensor(a.copy())
    v, vt = x[:, 2:4], xt[:, 2:4]
    v.mul_(-1.0), vt.mul_(-1.0)
    np.testing.assert_array_equal(x.numpy(), xt.numpy())
    x.add_(1.0), xt.add_(1.0)
    np.testing.assert_array_equal(v.numpy(), vt.numpy())


@pytest.mark.parametrize("key", [(slice(None), slice(1.0, 3)), (slice(0.5, None), slice(None))],
                         ids=str)
def test_two_slice_bad_bounds_raise_as_before(key):
    x = tj.tensor(np.ones((4, 6)))
    with pytest.raises((TypeError, IndexError)):
        x[key]
