"""Eager basic indexing with a repeated key (an LSTM's gate slices): the key's NumPy form, the
slice primitive's params and inference and torch's node name are derived once per (shape,
dtype, key) and cached; values, gradients, names and views stay torch's."""
import numpy as np
import pytest

import tracejit as tj
from tracejit.tracer import eager_views

torch = pytest.importorskip("torch")

KEYS = [(slice(None), slice(None, 8)), (slice(None), slice(8, 16)), slice(None), (slice(None),),
        slice(1, None, 2), 1, (1,), -1, (-1, slice(2, None)), (slice(None), 3),
        (slice(None, None, 3), slice(-5, -1)), (0, 1), ()]


def _count(monkeypatch, name):
    calls = [0]
    orig = getattr(eager_views, name)

    def counted(*a, **k):
        calls[0] += 1
        return orig(*a, **k)
    monkeypatch.setattr(eager_views, name, counted)
    return calls


def test_a_repeated_key_is_derived_once(monkeypatch):
    x = tj.tensor(np.ones((4, 32), np.float32), requires_grad=True) * 2
    x[:, 8:16]                                   # the first call derives and caches
    keys = _count(monkeypatch, "numpy_key")
    params = _count(monkeypatch, "_slice_params")
    for _ in range(3):
        y = x[:, 8:16]
        assert y.grad_fn.name() == "SliceBackward0"
    assert keys[0] == 0 and params[0] == 0


def _uncached(monkeypatch):
    """x[key] as it was made before the cache (the derivation at every call)."""
    monkeypatch.setattr(eager_views, "cached_index", lambda *a, **k: None)


def _names(x, keys):
    return [x[k].grad_fn.name() for k in keys]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(4, 32), (6, 33), (1, 20)])
def test_cached_keys_match_torch(shape, dtype, monkeypatch):
    rng = np.random.default_rng(0)
    a = rng.standard_normal(shape).astype(dtype)
    keys = []
    for rep in range(2):                          # the second round reads the cache
        x = tj.tensor(a, requires_grad=True)
        xt = torch.tensor(a, requires_grad=True)
        for key in KEYS:
            try:
                yt = xt[key]
            except IndexError:
                with pytest.raises(IndexError):
                    x[key]
                continue
            keys.append(key)
            y = x[key]
            np.testing.assert_array_equal(y.detach().numpy(), yt.detach().numpy())
            w = rng.standard_normal(yt.shape).astype(dtype)
            (y * tj.tensor(w)).sum().backward()
            (yt * torch.tensor(w)).sum().backward()
        np.testing.assert_allclose(x.grad.numpy(), xt.grad.numpy(), rtol=1e-6)
    cached = _names(x, keys)
    _uncached(monkeypatch)
    assert cached == _names(x, keys)


def test_keys_that_compare_equal_are_told_apart(monkeypatch):
    """True == 1 and slice bounds of other types must not hit an int key's plan; x[:] and
    x[:,] are named differently (as torch names them)."""
    a = np.arange(12.0).reshape(3, 4)
    x = tj.tensor(a, requires_grad=True)
    xt = torch.tensor(a, requires_grad=True)
    keys = [1, (1,), slice(1, 3), slice(True, 3), slice(np.int64(1), 3), slice(None),
            (slice(None),)]
    for key in keys:
        y, yt = x[key], xt[key]
        np.testing.assert_array_equal(y.detach().numpy(), yt.detach().numpy())
    for key in (True, (True,)):         # a bool key is not the int 1: a new axis, as torch's
        y, yt = x[key], xt[key]
        assert tuple(y.shape) == tuple(yt.shape) == (1, 3, 4)
        np.testing.assert_array_equal(y.detach().numpy(), yt.detach().numpy())
    cached = _names(x, keys)
    _uncached(monkeypatch)
    assert cached == _names(x, keys)


def test_views_of_cached_keys_write_through_and_keep_versions():
    base = tj.tensor(np.zeros((2, 8), np.float32))
    for _ in range(2):
        v = base[:, 2:4]
        v.add_(1.0)
    np.testing.assert_array_equal(base.numpy()[:, 2:4], 2.0)
    w = tj.tensor(np.ones((2, 8), np.float32), requires_grad=True)
    g = w * 3
    s = g[:, :4]
    (s * s).sum()
    loss = (s * s).sum()
    g.mul_(2)                                     # changes what s's product saved
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


def test_no_grad_and_non_float():
    x = tj.tensor(np.arange(10, dtype=np.int64))
    for _ in range(2):
        np.testing.assert_array_equal(x[2:5].numpy(), [2, 3, 4])
    w = tj.tensor(np.ones((3, 4)), requires_grad=True)
    wt = torch.ones(3, 4, requires_grad=True)
    with tj.no_grad(), torch.no_grad():
        for _ in range(2):
            y, yt = w[:, 1:], wt[:, 1:]
            assert y.grad_fn is None and yt.grad_fn is None
            assert y.requires_grad == yt.requires_grad
